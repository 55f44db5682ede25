"""Site files: the example parses into the site model, and every class of mistake is
reported at once with its line and field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.model.site import Priority, SourceKind
from host.model.site_file import SiteFileError, TapRole, load_site_file, parse_site_file

DEMO = Path(__file__).resolve().parent.parent / "sites" / "demo.toml"

BASE = """\
[site]
name = "t"
voltage_v = 400
frequency_hz = 50

[[sources]]
id = "ups-1"
kind = "ups"
capacity_kw = 60
phase_deg = 0

[[sources]]
id = "ups-2"
kind = "ups"
capacity_kw = 60
phase_deg = 120

[[racks]]
id = "r1"
priority = "critical"
rated_kw = 10

[[racks]]
id = "r2"
priority = "normal"
rated_kw = 10

[[taps]]
id = "t1"
unique_id = "00000000000000a1"
address = 1
bus = "seg-1"
board = "sim"
role = "rack"
rack = "r1"
inputs = ["ups-1", "ups-2"]

[[taps]]
id = "t2"
unique_id = "00000000000000a2"
address = 2
bus = "seg-1"
board = "sim"
role = "rack"
rack = "r2"
inputs = ["ups-2", "ups-1"]
impedance_ohm = [0.02, 0.03]

[[taps]]
id = "m1"
address = 9
bus = "seg-1"
board = "sim"
role = "monitor"
monitors = "ups-1"
"""


def line(text: str, marker: str, occurrence: int = 0) -> int:
    """The 1-based line of the n-th line containing marker."""
    found = [n for n, text_line in enumerate(text.splitlines(), start=1) if marker in text_line]
    return found[occurrence]


def at(text: str, marker: str, occurrence: int = 0, offset: int = 0) -> str:
    """`site.toml:N` for the line of marker (offset: a table header is the line above its id)."""
    return f"site.toml:{line(text, marker, occurrence) + offset}"


def problems(text: str) -> tuple[str, ...]:
    with pytest.raises(SiteFileError) as caught:
        parse_site_file(text, "site.toml")
    return caught.value.problems


def edit(*pairs: tuple[str, str]) -> str:
    text = BASE
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def test_the_demo_site_parses_into_the_model() -> None:
    parsed = load_site_file(DEMO)
    site = parsed.site
    assert parsed.name == site.name == "demo"
    assert (parsed.voltage_v, parsed.frequency_hz) == (400, 50)
    assert [s.id for s in site.sources] == ["ups-1", "gen-1", "bat-1"]
    assert site.source("bat-1").kind == SourceKind.BATTERY and site.source("bat-1").energy_kwh == 20
    assert parsed.phase_deg == {"ups-1": 0.0, "gen-1": 120.0, "bat-1": 0.0}
    assert [t.n_inputs for t in site.taps] == [3, 2, 3, 2]
    assert site.rack("r1").priority == Priority.CRITICAL and site.tap_of("r1").id == "tap-r1"
    assert site.reachable("r3") == ("gen-1", "ups-1", "bat-1")
    assert len(site.feeds) == 10
    rack_taps = [t for t in parsed.taps if t.role == TapRole.RACK]
    monitors = [t for t in parsed.taps if t.role == TapRole.MONITOR]
    assert len(rack_taps) == 4 and {t.bus for t in parsed.taps} == {"seg-1"}
    assert {t.board for t in parsed.taps} == {"sim"}
    assert [(m.id, m.monitors, m.inputs) for m in monitors] == [("mon-ups-1", "ups-1", ())]
    r1 = parsed.tap("tap-r1")
    assert r1.unique_id == bytes.fromhex("e661385200000001") and r1.address == 1
    assert r1.alternates == {1: (3, 2), 2: (1, 3), 3: (1,)}
    r4 = parsed.tap("tap-r4")
    assert r4.unique_id is None and r4.impedance_ohm == (None, None)
    assert [f.impedance_ohm for f in site.feeds_of("r4")] == [0.0, 0.0]  # unknown: the model gets 0


def test_the_base_of_these_tests_is_valid() -> None:
    parsed = parse_site_file(BASE, "site.toml")
    assert [t.id for t in parsed.taps] == ["t1", "t2", "m1"]


def test_unknown_source_rack_and_board_are_named_with_line_and_path() -> None:
    text = edit(('inputs = ["ups-1", "ups-2"]', 'inputs = ["ups-1", "ups-9"]'),
                ('rack = "r2"', 'rack = "r3"'),
                ('board = "sim"\nrole = "monitor"', 'board = "nosuch"\nrole = "monitor"'),
                ('monitors = "ups-1"', 'monitors = "gen-7"'))
    found = problems(text)
    assert found == (
        at(text, 'id = "r2"', offset=-1) + ": racks[1]: rack 'r2' has no tap (no [[taps]] has rack = 'r2')",
        at(text, 'ups-9') + ": taps[0].inputs[1]: unknown source 'ups-9' "
        "(did you mean 'ups-2'? known: ups-1, ups-2)",
        at(text, 'rack = "r3"') + ": taps[1].rack: unknown rack 'r3' (known: r1, r2)",
        at(text, 'nosuch') + ": taps[2].board: unknown board 'nosuch' "
        "(known: rp2040-ads131m06, sim)",
        at(text, 'gen-7') + ": taps[2].monitors: unknown source 'gen-7' (known: ups-1, ups-2)",
    )


def test_duplicate_ids_addresses_and_unique_ids() -> None:
    text = edit(('id = "ups-2"', 'id = "ups-1"'),
                ('id = "r2"', 'id = "r1"'),
                ('id = "m1"', 'id = "t1"'),
                ('address = 2', 'address = 1'),
                ('unique_id = "00000000000000a2"', 'unique_id = "00000000000000A1"'))
    found = problems(text)
    assert at(text, 'id = "ups-1"', 1) + ": sources[1].id: 'ups-1' is used twice (first at sources[0])" \
        in found
    assert at(text, 'id = "r1"', 1) + ": racks[1].id: 'r1' is used twice (first at racks[0])" in found
    assert at(text, 'id = "t1"', 1) + ": taps[2].id: 't1' is used twice (first at taps[0])" in found
    assert (at(text, 'address = 1', 1) + ": taps[1].address: address 1 on bus 'seg-1' is already used "
            "by taps[0]") in found
    assert (at(text, '00000000000000A1') + ": taps[1].unique_id: unique id 00000000000000a1 is already "
            "used by taps[0]") in found


def test_the_same_address_on_another_bus_segment_is_fine() -> None:
    parsed = parse_site_file(edit(('address = 2\nbus = "seg-1"', 'address = 1\nbus = "seg-2"')))
    assert {(t.bus, t.address) for t in parsed.taps if t.id in ("t1", "t2")} == {("seg-1", 1), ("seg-2", 1)}


def test_an_input_listed_twice_on_one_tap() -> None:
    text = edit(('inputs = ["ups-2", "ups-1"]', 'inputs = ["ups-2", "ups-2"]'))
    assert problems(text) == (
        at(text, 'inputs = ["ups-2"') + ": taps[1].inputs[1]: source 'ups-2' is already input 1",)


def test_a_rack_without_a_tap_and_a_rack_with_two() -> None:
    text = edit(('rack = "r2"', 'rack = "r1"'))
    assert problems(text) == (
        at(text, 'id = "r2"', offset=-1) + ": racks[1]: rack 'r2' has no tap (no [[taps]] has rack = 'r2')",
        at(text, 'rack = "r1"', 1) + ": taps[1].rack: rack 'r1' already has a tap (taps[0]): "
        "a rack has exactly one tap",
    )


@pytest.mark.parametrize("address", [0, 248, 255, -1])
def test_an_address_out_of_range(address: int) -> None:
    text = edit(("address = 9", f"address = {address}"))
    assert problems(text) == (
        at(text, f'address = {address}') + f": taps[2].address: must be 1 to 247 (got {address})",)


@pytest.mark.parametrize("unique_id", ["00000000000000a", "00000000000000a10", "00000000000000g1", "0x000000000000a1"])
def test_a_malformed_unique_id(unique_id: str) -> None:
    text = edit(('"00000000000000a1"', f'"{unique_id}"'))
    (problem,) = problems(text)
    assert problem.startswith(at(text, unique_id) + ": taps[0].unique_id: must be 16 hex digits")


def test_a_monitor_tap_with_inputs_and_a_rack_tap_that_monitors() -> None:
    text = edit(('monitors = "ups-1"', 'monitors = "ups-1"\ninputs = ["ups-1", "ups-2"]\nrack = "r2"'),
                ('impedance_ohm = [0.02, 0.03]', 'impedance_ohm = [0.02, 0.03]\nmonitors = "ups-2"'))
    found = problems(text)
    assert found == (
        at(text, 'monitors = "ups-2"') + ": taps[1].monitors: is for monitor taps only (role is 'rack')",
        at(text, 'inputs', 2) + ": taps[2].inputs: a monitor tap has no inputs and feeds no rack: remove it",
        at(text, 'rack = "r2"', 1) + ": taps[2].rack: a monitor tap has no inputs and feeds no rack: "
        "remove it",
    )


def test_many_problems_at_once_in_file_order() -> None:
    text = edit(('frequency_hz = 50', 'frequency_hz = 55'),
                ('capacity_kw = 60', 'capacity_kw = -5'),
                ('rated_kw = 10', 'rated_kw = 10\ncolour = "red"'),
                ('inputs = ["ups-1", "ups-2"]', 'inputs = ["ups-1"]'),
                ('impedance_ohm = [0.02, 0.03]', 'impedance_ohm = [0.02]'),
                ('role = "monitor"', 'role = "monitr"'))
    found = problems(text)
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == sorted(lines) and len(found) == 6
    assert found[0] == at(text, 'frequency_hz') + ": site.frequency_hz: must be one of 50, 60 (got 55)"
    assert found[1] == at(text, 'capacity_kw = -5') + ": sources[0].capacity_kw: must be > 0 (got -5)"
    assert found[2] == at(text, 'colour') + ": racks[0].colour: unknown field (known: group, id, priority, " \
        "rated_kw)"
    assert found[3] == at(text, 'inputs = ["ups-1"]') + ": taps[0].inputs: a tap has 2 to 4 inputs (got 1)"
    assert found[4] == (at(text, 'impedance_ohm') + ": taps[1].impedance_ohm: must have one value per input "
                        "(2, got 1)")
    assert found[5] == at(text, 'monitr') + ": taps[2].role: must be one of rack, monitor (got 'monitr')"


def test_required_fields_and_bad_alternates() -> None:
    text = edit(('phase_deg = 120\n', ''),
                ('address = 1\nbus = "seg-1"\n', 'address = 1\n'),
                ('impedance_ohm = [0.02, 0.03]', 'alternates = { ups-2 = ["ups-2"], ups-3 = ["ups-1"] }'))
    found = problems(text)
    assert at(text, 'id = "ups-2"', offset=-1) + ": sources[1].phase_deg: is required" in found
    assert at(text, 'id = "t1"', offset=-1) + ": taps[0].bus: is required" in found
    where = at(text, "alternates")
    assert where + ": taps[1].alternates.ups-2: 'ups-2' is not another input of this tap (inputs: ups-2, ups-1)" \
        in found
    assert where + ": taps[1].alternates.ups-3: 'ups-3' is not an input of this tap (inputs: ups-2, ups-1)" in found
    assert len(found) == 4


def test_alternates_become_input_numbers() -> None:
    parsed = parse_site_file(edit(('impedance_ohm = [0.02, 0.03]', 'alternates = { ups-1 = ["ups-2"] }')))
    assert parsed.tap("t2").alternates == {2: (1,)}


def test_a_board_built_for_another_frequency() -> None:
    text = edit(("frequency_hz = 50", "frequency_hz = 60"))
    found = problems(text)
    assert len(found) == 3
    assert found[0] == (at(text, 'board = "sim"') + ": taps[0].board: board 'sim' is built for 50 Hz, "
                        "the site is 60 Hz")


def test_a_board_refused_by_its_own_validation() -> None:
    text = edit(('board = "sim"', 'board = "rp2040-ads131m06"'))
    (problem,) = problems(text)
    assert problem.startswith(at(text, "rp2040") + ": taps[0].board: board 'rp2040-ads131m06' is refused by its own "
                              "validation: ")
    assert "fuse_a" in problem  # the board's own findings are passed on


def test_toml_syntax_errors_and_missing_sections() -> None:
    assert problems("[site\nname = 1") [0].startswith("site.toml: TOML syntax:")
    found = problems('[site]\nname = "x"\nvoltage_v = 400\nfrequency_hz = 50\n[[rakcs]]\nid = "r"\n')
    assert found == (
        "site.toml: sources: at least one [[sources]] is required",
        "site.toml: taps: at least one [[taps]] is required",
        "site.toml:5: rakcs: unknown field (did you mean 'racks'?)",
    )
