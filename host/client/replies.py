"""A tap's answers as typed objects: every field of the catalogue layout as an attribute,
and the few that need a name or a shape of their own."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from host.wire import messages


@dataclass(frozen=True)
class Reply:
    """A tap's answer: to which request, from which address, with its decoded fields.

    Every field of the catalogue layout reads as an attribute (`reply.host_silent_s`) or
    an item; the subclasses below type the fields callers decide on. `cached` says the
    tap answered from its duplicate cache: the command ran once, earlier.
    """

    request: str
    src: int
    fields: Mapping[str, Any]
    cached: bool = False

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("fields")  # absent while copy/pickle rebuild the object
        if fields is not None and name in fields:
            return fields[name]
        raise AttributeError(f"{type(self).__name__} of {self.__dict__.get('request')} has no field {name!r}")

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


class _IntField:
    """A reply field read as an int (`epoch = _IntField()` reads fields["epoch"])."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, reply: None, owner: type) -> _IntField: ...
    @overload
    def __get__(self, reply: Reply, owner: type) -> int: ...
    def __get__(self, reply: Reply | None, owner: type) -> int | _IntField:
        return self if reply is None else int(reply.fields[self.name])


class _Named(Reply):
    """What IDENTIFY and DISCOVER both report about the board."""

    @property
    def unique_id(self) -> bytes:
        return bytes(self.fields["unique_id"])

    @property
    def board(self) -> str:
        return _ascii(self.fields["board"])


class Identity(_Named):
    address = _IntField()
    epoch = _IntField()
    auth_counter = _IntField()
    n_inputs = _IntField()

    @property
    def firmware(self) -> str:
        return "{firmware_major}.{firmware_minor}.{firmware_patch}".format(**self.fields)


class _RelayState(Reply):
    """What STATUS and TELEMETRY both report about the relays."""

    active_input = _IntField()
    relays_closed = _IntField()
    protection = _IntField()
    alarms = _IntField()


class Status(_RelayState):
    epoch = _IntField()
    auth_counter = _IntField()


class Telemetry(_RelayState):
    @property
    def inputs(self) -> list[dict[str, int]]:
        return list(self.fields["inputs"])


def _limit_names() -> tuple[str, ...]:
    layout = messages.BY_NAME["SET_LIMITS"].request
    if layout is None:
        raise TypeError("SET_LIMITS has no request layout in the catalogue")
    return tuple(str(name) for name in layout.names)


LIMIT_NAMES = _limit_names()  # SET_LIMITS's fields, in order: also the head of READ_SETTINGS's answer


class Settings(Reply):
    """READ_SETTINGS: the limits in force and every channel's calibration."""

    @property
    def limits(self) -> dict[str, int]:
        """The nine limits, by SET_LIMITS's field names."""
        return {name: int(self.fields[name]) for name in LIMIT_NAMES}

    @property
    def channels(self) -> list[dict[str, int]]:
        """Per channel: kind, index, gain_ppm, offset_counts, state (inputs 1..n, then the current)."""
        return [{k: int(v) for k, v in c.items()} for c in self.fields["channels"]]

    def channel(self, kind: int, index: int) -> dict[str, int]:
        """One channel's calibration; KeyError if the tap has no such channel."""
        for c in self.channels:
            if c["kind"] == kind and c["index"] == index:
                return c
        raise KeyError(f"no channel of kind {kind} index {index}")


class Ranking(Reply):
    """READ_ALTERNATES: where the tap goes by itself when `for_input` is active and lost."""

    for_input = _IntField()

    @property
    def alternates(self) -> list[int]:
        """The ranked inputs, best first, without the zeros that end the list."""
        return [int(self.fields[f"alternate_{i}"]) for i in (1, 2, 3) if self.fields[f"alternate_{i}"]]


class Discovered(_Named):
    slot = _IntField()


R = TypeVar("R", bound=Reply)


RESULT_TYPES: dict[str, type[Reply]] = {
    "IDENTIFY": Identity,
    "STATUS": Status,
    "TELEMETRY": Telemetry,
    "READ_SETTINGS": Settings,
    "READ_ALTERNATES": Ranking,
    "DISCOVER": Discovered,
}


def _ascii(raw: bytes) -> str:
    return bytes(raw).rstrip(b"\0").decode("ascii", "replace")


def typed(reply: Reply, kind: type[R]) -> R:
    """The reply as `kind` (it already is one, unless the catalogue and RESULT_TYPES disagree)."""
    if not isinstance(reply, kind):
        raise TypeError(f"{reply.request} answered as {type(reply).__name__}, not {kind.__name__}")
    return reply
