"""The firmware as it goes onto a board: compiled by mpy-cross, and type-checked against the
reference board's MicroPython stubs."""
