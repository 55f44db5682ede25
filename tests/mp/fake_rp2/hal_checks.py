# Runs on MicroPython's unix port with the fake machine/rp2 of this directory first on
# MICROPYPATH (tests/test_hal_rp2040.py): firmware/hal_rp2040.py's logic, one scenario
# per run (argv[1]; argv[2] a board JSON file), one JSON line out.
import json
import struct
import sys

import machine
import rp2


def load(path):
    with open(path) as f:
        return json.loads(f.read())


def word(code):
    """A 24-bit ADC word as the PIO and DMA leave it in RAM: left-aligned, signed 32 bits."""
    return struct.unpack("<i", struct.pack("<I", (code << 8) & 0xFFFFFFFF))[0]


def make(board):
    from firmware.hal_rp2040 import Rp2040Hal

    machine.CS_PIN.append(board["hal"]["adc"]["cs_pin"])
    return Rp2040Hal(board)


def fill_slot(hal, slot, codes_by_channel, status=0x0500):
    """Frames of one slot: the status word, then each channel's codes, one per sample."""
    base = slot * hal.block * 8
    for j in range(hal.block):
        hal.raw[base + 8 * j] = word(status << 8)
        for ch in range(6):
            hal.raw[base + 8 * j + 1 + ch] = word(codes_by_channel.get(ch, [0] * hal.block)[j])


def slot_address(hal, slot):
    return hal._ring + slot * hal.block * 8 * 4


def setup(board):
    hal = make(board)
    chip = machine.SPIS[board["hal"]["adc"]["spi"]].chip
    data, control = rp2.CHANNELS[0], rp2.CHANNELS[1]
    table = [control.read - 4 + 4 * i for i in range(hal.slots)]
    sm = rp2.MACHINES[0]
    return {
        "regs": {"%02x" % k: v for k, v in chip.regs.items()}, "commands": chip.commands,
        "slots": hal.slots, "block": hal.block,
        "data": {"read": data.read, "write": data._write, "count": data.count, "ctrl": data.ctrl,
                 "running": data.running, "channel": data.channel},
        "control": {"read": control.read, "write": control.write, "count": control.count, "ctrl": control.ctrl,
                    "channel": control.channel},
        "table_aligned": (control.read - 4) % (4 * hal.slots) == 0,
        "table": [struct.unpack("<I", bytes(uctypes_at(a, 4)))[0] for a in table],
        "slot_addresses": [slot_address(hal, s) for s in range(hal.slots)],
        "sm": {"id": sm.id, "program": sm.program, "kw": {k: getattr(v, "id", v) for k, v in sm.kw.items()},
               "running": sm.running},
        "spi_released": ("spi_deinit", board["hal"]["adc"]["spi"]) in machine.LOG,
        "mosi_low": machine.PINS[19]["level"] == 0 and machine.PINS[19]["mode"] == machine.Pin.OUT,
    }


def uctypes_at(address, n):
    import uctypes

    return uctypes.bytearray_at(address, n)


def conversion(board):
    hal = make(board)
    data = rp2.CHANNELS[0]
    full = {0: [0x800000, 0x000000, 0x7FFFFF, 0xFFFFFF], 1: [0x000400, 0x0003FF, 0xFFFC00, 0xFFFBFF],
            4: [0x7FFFFF, 0x800000, 0x000000, 0x400000]}
    fill_slot(hal, 0, full)
    data.script = [slot_address(hal, 1)]
    hal.exchange()
    return {"volts": [list(v) for v in hal.volts], "amps": list(hal.amps), "bad_frames": hal.bad_frames}


def handover(board):
    hal = make(board)
    data = rp2.CHANNELS[0]
    n = hal.slots
    out = {"slots": n, "taken": [], "waited": [], "overruns": []}
    for s in range(n):
        fill_slot(hal, s, {0: [s << 10] * hal.block})  # counts = s
    # the DMA is three slots in: three blocks are handed over in order, none waits
    data.script = [slot_address(hal, 3)] * 3
    for _ in range(3):
        hal.exchange()
        out["taken"].append(hal.volts[0][0])
    # now the loop has caught up: the next exchange spins until the DMA leaves slot 3
    data.script = [slot_address(hal, 3) + 8, slot_address(hal, 3) + 64, slot_address(hal, 4)]
    hal.exchange()
    out["taken"].append(hal.volts[0][0])
    out["waited"].append(len(data.script) == 0)
    # around the ring's end: the DMA at the end of the last slot means slot 0 is next to fill
    data.script = []
    data._write = slot_address(hal, n - 1)
    while hal._next != n - 1:
        hal.exchange()
    data._write = hal._ring + n * hal.block * 32
    hal.exchange()
    out["taken"].append(hal.volts[0][0])
    out["next_after_wrap"] = hal._next
    # the loop a ring behind: the newest full slot is handed over and the loss counted
    data._write = slot_address(hal, (hal._next - 2) % n)
    hal.exchange()
    out["overruns"].append(hal.overruns)
    out["taken_after_overrun"] = hal.volts[0][0]
    out["expected_after_overrun"] = (hal._next - 1) % n
    out["bad_frames"] = hal.bad_frames
    return out


def bad_frame(board):
    hal = make(board)
    fill_slot(hal, 0, {}, status=0x0000)  # WLENGTH bits 00: not a status word
    rp2.CHANNELS[0].script = [slot_address(hal, 1)]
    hal.exchange()
    return {"bad_frames": hal.bad_frames}


def uart(board):
    hal = make(board)
    del machine.LOG[:]
    bus = hal.uarts[1]
    de = board["hal"]["uarts"][1]["de_pin"]
    idle = bus.readinto(bytearray(8))
    machine.UARTS[board["hal"]["uarts"][1]["id"]].rx.extend(b"abc")
    buf = bytearray(8)
    got = bus.readinto(buf)
    bus.write(bytearray(b"hello, bus"), 5)
    return {"idle": idle, "got": got, "data": bytes(buf[:got]).decode(), "de": de,
            "log": [[e[0], e[1], e[2] if not isinstance(e[2], bytes) else e[2].decode()] for e in machine.LOG]}


def relays(board):
    hal_desc = board["hal"]
    machine.set_level(hal_desc["relays"][1]["coil_pin"], 1)  # a soft reboot: coil 2 still driven
    machine.PINS[hal_desc["relays"][1]["coil_pin"]]["mode"] = machine.Pin.OUT
    hal = make(board)
    out = {"coil_after_boot": [hal.coil(1), hal.coil(2)]}
    hal.drive(1, True)
    hal.drive(2, False)
    out["coil_pins"] = [machine.PINS[r["coil_pin"]]["level"] for r in hal_desc["relays"]]
    out["coil"] = [hal.coil(1), hal.coil(2)]
    fb = [r["feedback_pin"] for r in hal_desc["relays"]]
    machine.set_level(fb[0], 0)
    machine.set_level(fb[1], 1)
    out["feedback_low_high"] = [hal.feedback(1), hal.feedback(2)]
    machine.set_level(fb[0], 1)
    machine.set_level(fb[1], 0)
    out["feedback_high_low"] = [hal.feedback(1), hal.feedback(2)]
    out["feedback_pulls"] = [machine.PINS[p]["pull"] for p in fb]
    return out


def no_feedback(board):
    del board["hal"]["relays"][0]["feedback_pin"]
    try:
        make(board)
    except ValueError as exc:
        return {"refused": str(exc)}
    return {"refused": None}


def misc(board):
    hal = make(board)
    machine.ADC_VALUE[0] = 14022  # 0.706 V on 3.3 V: 27.0 C
    t27 = hal.temperature_dC()
    out = {"t27": t27, "uid": list(hal.unique_id()), "wdt_before_feed": len(machine.WDTS)}
    hal.wdt_feed()
    hal.wdt_feed()
    out["wdt"] = [(w.timeout, w.fed) for w in machine.WDTS]
    try:
        hal.reset()
        out["reset"] = False
    except machine.ResetCalled:
        out["reset"] = True
    return out


def tap_steps(board):
    import gc

    from firmware.tap import Tap

    for r in board["hal"]["relays"]:
        machine.set_level(r["feedback_pin"], 1 - r["feedback_closed_level"])  # both contacts open
    hal = make(board)
    rp2.CHANNELS[0].step_bytes = hal.block * 8 * 4  # the DMA one slot further at every look
    gc.collect()
    tap = Tap(hal, board, sys.argv[3])
    for _ in range(50):
        tap.step()
    gc.collect()
    return {"blocks": hal.blocks, "uptime_ms": tap.uptime.ms, "active": tap.relays.active,
            "relay_state": tap.relays.state, "fed": [w.fed for w in machine.WDTS], "ring_bytes": len(hal.raw) * 4,
            "heap_free": gc.mem_free()}


def main_board_file(board):
    from firmware import main_rp2040

    try:
        main_rp2040.load_board(sys.argv[2])
    except ValueError as exc:
        return {"refused": str(exc)}
    return {"refused": None}


SCENARIOS = {"setup": setup, "conversion": conversion, "handover": handover, "bad_frame": bad_frame, "uart": uart,
             "relays": relays, "no_feedback": no_feedback, "misc": misc, "tap_steps": tap_steps,
             "main_board_file": main_board_file}

print(json.dumps(SCENARIOS[sys.argv[1]](load(sys.argv[2]))))
