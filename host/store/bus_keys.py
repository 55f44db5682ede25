"""The inventory's keys and counters as one bus segment's client sees them (a `KeyStore`:
addresses are per segment)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from host.store.inventory import Inventory


@dataclass(frozen=True)
class BusKeyStore:
    """The inventory's keys seen from one bus segment (a `KeyStore`)."""

    inventory: Inventory
    bus: str | None

    def key_for(self, address: int) -> tuple[bytes, int]:
        return self.inventory.key_for(address, self.bus)

    def commit_counter(self, address: int, counter: int) -> None:
        self.inventory.commit_counter(address, counter, self.bus)

    def take_counter(self, address: int) -> tuple[bytes, int]:
        return self.inventory.take_counter(address, self.bus)

    # The same, under the names host/client/tap_client.py's TapKeys uses: there `commit` also
    # serves to catch up with a counter the tap reports, so a lower value is ignored.

    def credentials(self, address: int) -> tuple[bytes, int]:
        return self.key_for(address)

    def commit(self, address: int, counter: int) -> None:
        self.inventory.catch_up_counter(address, counter, self.bus)

    def replace_key(self, address: int, key: bytes) -> None:
        self.inventory.set_key(self.inventory.tap(address, self.bus).id, key)
