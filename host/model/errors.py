"""One exception tree for the whole host: every error raised on purpose is an `IbtError`,
in one of a few branches that say what kind of thing went wrong. The CLI turns any of
them into one line, `ibt: <what> (<likely cause>)`, and the branch's exit code.

Modules keep their own precise classes (`TapTimeout`, `SiteFileError`, ...) as
subclasses of a branch, so a caller catches as narrowly or as widely as it needs.
"""

from __future__ import annotations

# The exit codes of `ibt`, documented in `ibt --help` and the README. 2 is click's, for
# usage errors only.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIGURATION = 3
EXIT_LINK = 4
EXIT_NO_ANSWER = 5
EXIT_REFUSED = 6
EXIT_FENCED = 7
EXIT_OPERATOR = 8
EXIT_NOT_CONFIRMED = 9

EXIT_CODES = {
    0: "done",
    EXIT_ERROR: "an error of no more specific kind (the virtual rig, the firmware build)",
    EXIT_USAGE: "usage: an option or argument click cannot parse",
    EXIT_CONFIGURATION: "a site, scenario, board or inventory file, or an option's value, that cannot be used",
    EXIT_LINK: "a serial port, bus or frame problem",
    EXIT_NO_ANSWER: "a tap did not answer",
    EXIT_REFUSED: "a tap or a check refused the command; it changed nothing",
    EXIT_FENCED: "another controller owns the site (a higher epoch): this one sends nothing more",
    EXIT_OPERATOR: "an unknown tap, rack or source, or a request that cannot be carried out as asked",
    EXIT_NOT_CONFIRMED: "it ran, but not everywhere or its effect is not confirmed: read `ibt status`",
}


class IbtError(Exception):
    """The root of every error the host raises on purpose."""

    exit_code = EXIT_ERROR
    cause = ""  # the likely cause, for the CLI's one line; an instance may set its own


class ConfigurationError(IbtError):
    """A file or value the site is described by that cannot be used as it is."""

    exit_code = EXIT_CONFIGURATION
    cause = "fix the file or value named"


class LinkError(IbtError):
    """The way to the taps: a serial port, a bus, a frame that breaks the protocol."""

    exit_code = EXIT_LINK
    cause = "check the port names, the adapter and the bus wiring"


class NoAnswer(IbtError):
    """A tap did not answer in time; a command's outcome is unknown until STATUS says."""

    exit_code = EXIT_NO_ANSWER
    cause = "is the tap powered, at that address and on this bus?"


class RefusalError(IbtError):
    """A tap, or a check before anything was sent, refused a command: nothing changed."""

    exit_code = EXIT_REFUSED


class FencingError(RefusalError):
    """Another controller raised the taps' epoch: this one must move no relay."""

    exit_code = EXIT_FENCED
    cause = "another controller owns the site"


class OperatorError(IbtError):
    """What an operator asked for cannot be carried out as asked (an unknown tap, say)."""

    exit_code = EXIT_OPERATOR
