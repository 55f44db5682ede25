# The reference board's entry point: the tap application on the RP2040 for ever.
# MicroPython boots /main.py, which must be source (a .mpy is not run at boot); `ibt
# flash` has to write one holding just:
#     from firmware import main_rp2040
#     main_rp2040.main()
# The flash holds, at its root, board.json (the board's parameters and its "hal" pins,
# see hal_rp2040.py) and the records config.json and key.json (firmware/store.py).
#
# An exception out of the loop ends main.py: the watchdog, started by the first
# completed block, then resets the board; the relays hold through it (relays.py adopts
# them). One raised before the first block (a board.json without its "hal" entry, an
# ADC that does not answer) leaves the board at the REPL with the message, rather than
# in a reset loop.
import gc
import json

from firmware.hal_rp2040 import Rp2040Hal
from firmware.tap import Tap

BOARD_FILE = "/board.json"
FLASH_DIR = ""  # store.Record joins directory + "/" + name: the records at the root, where ibt flash puts them


def load_board(path=BOARD_FILE):
    with open(path) as f:
        board = json.loads(f.read())
    if "hal" not in board:
        raise ValueError("%s has no \"hal\" entry: the board's pins (hal_rp2040.py); flash it again" % path)
    return board


def main():
    board = load_board()
    hal = Rp2040Hal(board)
    gc.collect()  # the Tap's long-lived objects on a tidy heap: fragmentation at start was seen on the unix port
    tap = Tap(hal, board, FLASH_DIR)
    gc.collect()
    while True:
        tap.step()


if __name__ == "__main__":
    main()
