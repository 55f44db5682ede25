"""Each source's risk alarm, with hysteresis: raised when its fault risk goes above
`raise_at`, cleared only once it has stayed below `clear_at` for a release time drawn at
random between `release_s` and twice that, so that a risk hovering at a threshold does
not flip the plan back and forth, and many sources do not all release in one instant
(the reason the Thunderbolt clock keeps two thresholds and randomises its release).

An alarmed source is emptied ahead of its predicted failure and flagged for
maintenance by the controller; the alarm, like the flag, is kept in the store.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class RiskAlarms:
    raise_at: float
    clear_at: float
    release_s: float = 3600.0
    seed: int = 0
    raised: dict[str, float] = field(default_factory=dict)  # source -> time raised
    _below_since: dict[str, float] = field(default_factory=dict)
    _release: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.clear_at < self.raise_at <= 1.0:
            raise ValueError(f"risk alarms need 0 <= clear ({self.clear_at}) < raise ({self.raise_at}) <= 1")
        self._rng = random.Random(self.seed)

    def update(self, time_s: float, risk: Mapping[str, float]) -> tuple[list[str], list[str]]:
        """Take the risks of one tick; the sources whose alarm (raised, cleared) now."""
        raised, cleared = [], []
        for source, value in risk.items():
            if source not in self.raised:
                if value > self.raise_at:
                    self.raised[source] = time_s
                    self._below_since.pop(source, None)
                    raised.append(source)
                continue
            if value >= self.clear_at:
                self._below_since.pop(source, None)
                continue
            since = self._below_since.setdefault(source, time_s)
            hold = self._release.setdefault(source, self.release_s * (1.0 + self._rng.random()))
            if time_s - since >= hold:
                del self.raised[source]
                self._below_since.pop(source, None)
                self._release.pop(source, None)
                cleared.append(source)
        return raised, cleared

    def restore(self, raised: Iterable[str], time_s: float) -> None:
        """After a restart: the alarms the store says were raised."""
        for source in raised:
            self.raised.setdefault(source, time_s)
