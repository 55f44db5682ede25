"""What can go wrong with one request to one tap: a refusal (signed or not), fencing by
another controller, no answer, an answer that breaks the protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from host.model.errors import FencingError, IbtError, LinkError, NoAnswer, RefusalError
from host.wire import messages
from protocol import catalog


class TapError(IbtError):
    """Something went wrong with one request to one tap; `address` and `request` say which."""

    def __init__(self, message: str, address: int, request: str) -> None:
        super().__init__(message)
        self.address = address
        self.request = request


# Unsigned refusals of a signed command that a resend of the same bytes cannot change
# (SPEC.md, "Authentication"): the client stops retrying and reports them as unverified.
FINAL_UNSIGNED_REFUSALS = frozenset({catalog.E_BAD_TAG, catalog.E_AUTH_REQUIRED, catalog.E_BAD_LENGTH})


class TapRefused(TapError, RefusalError):
    """The tap answered NAK. `verified` is False when the refusal of a signed command came
    unsigned: then it does not prove that nothing happened. `retried` is True when the
    refusal answered a resend: a REPLAY then means an earlier copy may have run (the tap
    reset and lost its duplicate cache), so read STATUS before concluding."""

    def __init__(
        self, address: int, request: str, fields: Mapping[str, Any], *, verified: bool = True, retried: bool = False
    ) -> None:
        self.code = int(fields["error"])
        self.detail = int(fields["detail"])
        self.name = messages.ERROR_NAMES.get(self.code, str(self.code))
        self.text = messages.describe_nak(dict(fields))
        self.verified = verified
        self.retried = retried
        note = "" if verified else " (unsigned: not proof that nothing ran)"
        super().__init__(f"tap {address}: {self.text}{note}", address, request)

    @property
    def outcome_unknown(self) -> bool:
        """Whether the command may have run all the same: read STATUS to know."""
        return not self.verified or (self.retried and self.code == catalog.E_REPLAY)


class FencedOut(TapRefused, FencingError):
    """STALE_EPOCH: another controller owns the site; this client signs nothing more."""


class TapTimeout(TapError, NoAnswer):
    """No acceptable answer after every attempt; a command's outcome is unknown until STATUS says."""


class TapProtocolError(TapError, LinkError):
    """An answer that fits the request but breaks the protocol (wrong layout, wrong ACK)."""
