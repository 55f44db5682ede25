"""The keys and counters a client signs with: where it finds a tap's key and its next
counter, and commits the counters a tap accepted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from host.model.errors import OperatorError


class TapKeys(Protocol):
    """Where each tap's key and command counter live; the inventory implements it durably.

    `credentials` returns the tap's key and the next counter to use; `commit` records that
    a counter has been used (it must never be offered again, even after a host restart,
    and a lower value than one already committed changes nothing); `replace_key` records
    the key a tap acknowledged with SET_KEY.
    """

    def credentials(self, address: int) -> tuple[bytes, int]: ...

    def commit(self, address: int, counter: int) -> None: ...

    def replace_key(self, address: int, key: bytes) -> None: ...


class NoKey(OperatorError, KeyError):
    """The key store holds no key for that address."""


class MemoryKeys:
    """`TapKeys` in memory, for tests and tools; counters are lost with the process."""

    def __init__(self, keys: Mapping[int, bytes], last_counters: Mapping[int, int] | None = None) -> None:
        self.keys = dict(keys)
        self.last = {address: 0 for address in self.keys} | dict(last_counters or {})

    def credentials(self, address: int) -> tuple[bytes, int]:
        if address not in self.keys:
            raise NoKey(f"no key for tap {address}")
        return self.keys[address], self.last.get(address, 0) + 1

    def commit(self, address: int, counter: int) -> None:
        self.last[address] = max(self.last.get(address, 0), counter)

    def replace_key(self, address: int, key: bytes) -> None:
        self.keys[address] = key
