# Runs on MicroPython: one tap of the virtual rig (host/sim/rig/virtual_rig.py), the tap application on
# the sim board until the rig stops it.
# argv: plant port, bus A port, bus B port, flash directory, board JSON file, unique id hex.
# The rig stops a tap by hanging up its plant link: the next exchange fails and the tap
# ends at a block boundary, never halfway through writing its flash. Bus A closing ends it
# too. An MCU reset (the watchdog, or the host's RESET) restarts the firmware on the same
# hardware. At the end it prints one JSON line: resets, the active input, the free heap.
import binascii
import gc
import json
import sys

from firmware.hal_sim import SimHal, SimReset
from firmware.tap import Tap


def _run(hal, board, flash):
    resets = 0
    gc.collect()  # start the application on a tidy heap, as a board does after boot
    tap = Tap(hal, board, flash)
    while not hal.uarts[0].closed:
        try:
            tap.step()
        except SimReset:
            resets += 1
            del tap  # RAM is gone; flash, coils and the plant are not
            gc.collect()
            tap = Tap(hal, board, flash)
        except OSError:
            break  # the plant hung up: the rig is stopping
    return resets, tap.relays.active


def main():
    with open(sys.argv[5]) as f:
        board = json.loads(f.read())
    hal = SimHal("127.0.0.1", int(sys.argv[1]), board["n_inputs"], board["block"],
                 (int(sys.argv[2]), int(sys.argv[3])), binascii.unhexlify(sys.argv[6]), board.get("n_aux", 0),
                 board.get("watchdog_ms", 0))
    resets, active = _run(hal, board, sys.argv[4])
    hal.close()
    gc.collect()
    print(json.dumps({"resets": resets, "watchdog_resets": hal.watchdog_resets, "active": active,
                      "heap_free_bytes": gc.mem_free()}))


if __name__ == "__main__":
    main()
