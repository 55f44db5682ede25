"""Every `IbtError` as one line, `ibt: <what> (<likely cause>)`, with its branch's exit code
(host/model/errors.py), and the exit codes as `ibt --help` lists them."""

from __future__ import annotations

import click

from host.model.errors import EXIT_CODES, IbtError


def one_line(exc: IbtError) -> str:
    text = str(exc).strip()
    what = text.splitlines()[0] if text else type(exc).__name__
    return f"{what} ({exc.cause})" if exc.cause and exc.cause not in what else what


class IbtCommandError(click.ClickException):
    """An IbtError as click shows it: one line and the error's own exit code."""

    def __init__(self, exc: IbtError) -> None:
        super().__init__(one_line(exc))
        self.exit_code = exc.exit_code  # type: ignore[misc]  # click reads it per instance


class IbtGroup(click.Group):
    """A command group whose commands' IbtErrors become IbtCommandErrors, whichever command."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except IbtError as exc:
            raise IbtCommandError(exc) from None


EXIT_CODES_HELP = "Exit codes:\n\n\b\n" + "\n".join(f"{code}  {meaning}" for code, meaning in EXIT_CODES.items())
