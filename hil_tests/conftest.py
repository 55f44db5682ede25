"""`--rig virtual` (default) or `--rig serial:PORT_A[,PORT_B]`: which rig the
hardware-in-the-loop tests run on (hil_tests/rig.py). A virtual rig is started per test,
with the site the test asks for; a serial rig is the bench as it is."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hil_tests.rig import Rig, SerialRig, start_virtual
from host.model.site import Site


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rig", "hardware-in-the-loop rig")
    group.addoption("--rig", default="virtual", help="virtual (default) or serial:PORT_A[,PORT_B]")
    group.addoption("--rig-db", default="ibt.db", help="a serial rig's inventory (keys, addresses, wiring)")
    group.addoption("--rig-bus", default=None, help="a serial rig's bus segment in the inventory")
    group.addoption("--rig-baud", default=115200, type=int, help="a serial rig's baud rate")


@pytest.fixture
def make_rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """make_rig(site) starts the rig for a test: on the virtual rig, `site` (a Site or
    (taps, sources)) is what gets built; a serial rig is what is on the bench, and a test
    whose site it cannot match should check `rig.taps` and skip."""
    started: list[Rig] = []
    spec = str(request.config.getoption("--rig"))

    def make(site: Site | tuple[int, int] = (3, 2)) -> Rig:
        if spec == "virtual":
            rig: Rig = start_virtual(site, tmp_path / f"rig-{len(started)}")
        elif spec.startswith("serial:"):
            ports = [p for p in spec.removeprefix("serial:").split(",") if p]
            rig = SerialRig(ports, Path(request.config.getoption("--rig-db")), request.config.getoption("--rig-bus"),
                            int(request.config.getoption("--rig-baud")))
        else:
            raise pytest.UsageError(f"--rig must be virtual or serial:PORT_A[,PORT_B] (got {spec!r})")
        started.append(rig)
        return rig

    yield make
    for rig in started:
        rig.close()
