# Runs on MicroPython: the uptime counter across the 2**30 ms wrap, 12.4 days after boot.
# argv: milliseconds to run. Prints one JSON line: seconds and wrapping milliseconds at the
# start and the end, and a gap measured across the wrap.
import json
import sys

from firmware.uptime import WRAP, Uptime, since

up = Uptime()
up.s = WRAP // 1000  # as the counter stands 12.4 days after boot
up.ms = WRAP - 499
up._into_s = 500
start_s, start_ms = up.s, up.ms
for _ in range(int(sys.argv[1])):
    up.tick(1)  # one 1 ms ADC block
print(json.dumps({"start_s": start_s, "start_ms": start_ms, "s": up.s, "ms": up.ms,
                  "gap_ms": since(up.ms, start_ms), "before_ms": since(up.ms, 700)}))
