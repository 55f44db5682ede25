"""The command journal every signed command goes through (host/ops/journal.py)."""

from __future__ import annotations

import pytest

from host.client.replies import Reply
from host.client.tap_errors import FencedOut, TapRefused, TapTimeout
from host.ops.journal import MemoryJournal, journalled
from host.store.records import CommandState
from protocol import catalog


def _nak(code: int, *, verified: bool = True, retried: bool = False) -> TapRefused:
    fields = {"request_type": catalog.T_SWITCH, "error": code, "detail": 0}
    return TapRefused(5, "SWITCH", fields, verified=verified, retried=retried)


class Ack:
    cached = False


class Sender:
    """Answers each send with the next of `answers`: an exception is raised, else returned."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.sent = 0

    def __call__(self) -> Reply:
        self.sent += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[return-value]


def test_an_acknowledged_command_is_journalled_before_and_after_it_is_sent() -> None:
    journal = MemoryJournal()
    reply = Ack()
    send = Sender(reply)
    assert journalled(journal, "tap-1", "SWITCH", {"target_input": 2}, send) is reply
    (entry,) = journal.entries
    assert (entry.tap, entry.message, entry.fields, entry.state) == ("tap-1", "SWITCH", {"target_input": 2},
                                                                      CommandState.ACKNOWLEDGED)


def test_a_replay_to_the_first_copy_is_sent_once_more_under_the_same_entry() -> None:
    journal = MemoryJournal()
    send = Sender(_nak(catalog.E_REPLAY), Ack())
    journalled(journal, "tap-1", "SWITCH", {}, send)
    assert send.sent == 2 and [e.state for e in journal.entries] == [CommandState.ACKNOWLEDGED]


def test_a_replay_to_a_resend_is_not_sent_again_its_outcome_is_unknown() -> None:
    journal = MemoryJournal()
    send = Sender(_nak(catalog.E_REPLAY, retried=True), Ack())
    with pytest.raises(TapRefused):
        journalled(journal, "tap-1", "SWITCH", {}, send)
    assert send.sent == 1 and journal.entries[0].state == CommandState.UNKNOWN


@pytest.mark.parametrize(("answer", "state"), [
    (_nak(catalog.E_BUSY), CommandState.REFUSED),
    (_nak(catalog.E_BUSY, verified=False), CommandState.UNKNOWN),
    (TapTimeout("no answer", 5, "SWITCH"), CommandState.UNKNOWN),
    (FencedOut(5, "SWITCH", {"request_type": catalog.T_SWITCH, "error": catalog.E_STALE_EPOCH, "detail": 9}),
     CommandState.REFUSED),
])
def test_a_refusal_or_silence_is_journalled_then_raised(answer: BaseException, state: CommandState) -> None:
    journal = MemoryJournal()
    with pytest.raises(type(answer)):
        journalled(journal, "tap-1", "SWITCH", {}, Sender(answer))
    assert journal.entries[0].state == state


def test_a_known_outcome_is_final() -> None:
    journal = MemoryJournal()
    journalled(journal, "tap-1", "SWITCH", {}, Sender(Ack()))
    with pytest.raises(ValueError, match="cannot go from acknowledged to unknown"):
        journal.update_command(1, CommandState.UNKNOWN)
