# Runs on MicroPython: the tap application on the sim board until the host closes bus A.
# argv: plant port, bus A port, bus B port, flash directory, board JSON file, unique id
# hex, and optionally a step at which the firmware hangs (only the ADC's DMA goes on)
# until the watchdog resets it. An MCU reset restarts the firmware on the same hardware.
import binascii
import gc
import json
import sys

from firmware.hal_sim import SimHal, SimReset
from firmware.tap import Tap


def main():
    with open(sys.argv[5]) as f:
        board = json.loads(f.read())
    hal = SimHal("127.0.0.1", int(sys.argv[1]), board["n_inputs"], board["block"],
                 (int(sys.argv[2]), int(sys.argv[3])), binascii.unhexlify(sys.argv[6]), board.get("n_aux", 0),
                 board.get("watchdog_ms", 0))
    hang_at = int(sys.argv[7]) if len(sys.argv) > 7 else -1
    steps = 0
    resets = 0
    gc.collect()
    before = gc.mem_alloc()
    tap = Tap(hal, board, sys.argv[4])
    gc.collect()
    heap_used = gc.mem_alloc() - before
    while not hal.uarts[0].closed:
        try:
            steps += 1
            if steps == hang_at:
                while True:
                    hal.exchange()  # a hung main loop: nothing feeds the watchdog
            tap.step()
        except SimReset:
            resets += 1
            tap = None  # RAM is gone; flash, coils and the plant are not
            gc.collect()
            tap = Tap(hal, board, sys.argv[4])
    hal.close()
    print(json.dumps({"resets": resets, "watchdog_resets": hal.watchdog_resets, "active": tap.relays.active,
                      "tap_heap_bytes": heap_used,
                      "heap_free_bytes": gc.mem_free()}))


main()
