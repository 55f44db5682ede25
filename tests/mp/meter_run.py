# Runs on MicroPython: feeds a recorded block stream through firmware.measure.Meter.
# argv: config JSON file, samples file (int16 LE; per block, each input's n samples
# then the output current's). Prints a JSON line per closed window, and at the end
# the bytes allocated by Meter.process in steady state.
import gc
import json
import sys
from array import array

from firmware.measure import Meter, scale_for

with open(sys.argv[1]) as f:
    cfg = json.loads(f.read())
n = cfg["block"]
vm, vk = scale_for(cfg["mV_per_count"])
im, ik = scale_for(cfg["mA_per_count"])
pm, pk = scale_for(cfg["W_per_count2"])
inputs = [(cfg["offset"], vm, vk) for _ in range(cfg["inputs"])]
meter = Meter(cfg["fs"], cfg["nominal_hz"], inputs, (cfg["offset"], im, ik), pm, pk, cfg["hysteresis"])
meter.active = cfg["active"]
volts = [array("h", bytearray(2 * n)) for _ in range(cfg["inputs"])]
amps = array("h", bytearray(2 * n))
seen_in = [0] * cfg["inputs"]
seen_out = 0
allocated = 0
measured_blocks = 0
block = 0
with open(sys.argv[2], "rb") as f:
    while True:
        got = 0
        for v in volts:
            got += f.readinto(v)
        got += f.readinto(amps)
        if got < 2 * n * (cfg["inputs"] + 1):
            break
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        meter.process(volts, amps, n)
        after = gc.mem_alloc()
        gc.enable()
        if block >= cfg["warmup_blocks"]:
            allocated += after - before
            measured_blocks += 1
        block += 1
        for k in range(cfg["inputs"]):
            ch = meter.inputs[k]
            if ch.windows != seen_in[k]:
                seen_in[k] = ch.windows
                print(json.dumps({"input": k + 1, "window": ch.windows, "voltage_mV": ch.voltage_mV,
                                  "frequency_cHz": ch.frequency_cHz, "thd_dpct": ch.thd_dpct,
                                  "phase_cdeg": meter.phase_cdeg(k + 1)}))
        if meter.output_windows != seen_out:
            seen_out = meter.output_windows
            print(json.dumps({"output": seen_out, "current_mA": meter.current_mA, "power_W": meter.power_W,
                              "apparent_VA": meter.apparent_VA, "power_factor_milli": meter.power_factor_milli}))
print(json.dumps({"blocks": measured_blocks, "allocated": allocated}))
