# Runs on MicroPython: cases (JSON lines, file in argv) through firmware.overload.
# A case is settings plus a list of [current_mA, dt, periods] phases; prints after
# how many periods the element operated (or null) and the bytes feed() allocated.
import gc
import json
import sys

from firmware.overload import Overload


def run(element, case):
    element.configure(case["curve"], case["pickup_mA"], case["tms_milli"])
    period = 0
    operated_at = None
    allocated = 0
    for current, dt, count in case["phases"]:
        for _ in range(count):
            period += 1
            gc.collect()
            gc.disable()
            before = gc.mem_alloc()
            operated = element.feed(current, dt)
            allocated += gc.mem_alloc() - before
            gc.enable()
            if operated and operated_at is None:
                operated_at = period
    return {"operated_at": operated_at, "allocated": allocated}


def main():
    element = Overload()
    with open(sys.argv[1]) as f:
        for line in f:
            print(json.dumps(run(element, json.loads(line))))


main()
