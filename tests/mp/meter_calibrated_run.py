# Runs on MicroPython: tests/mp/meter_run.py's stream through a Meter calibrated as
# firmware/tap.py calibrates it (SPEC.md, SET_CALIBRATION): per channel a gain in ppm of
# the nominal scale and an offset in counts added to each window's RMS, set between blocks.
# argv: config JSON file (meter_run.py's, plus "gain_ppm" and "rms_offset": one per input,
# then the current's), samples file. Prints the last window's readings and the bytes
# Meter.process allocated in steady state.
import gc
import json
import sys
from array import array

from firmware.measure import Meter, scale_for

with open(sys.argv[1]) as f:
    cfg = json.loads(f.read())
n = cfg["block"]
k_in = cfg["inputs"]
gains = cfg["gain_ppm"]
offsets = cfg["rms_offset"]
vm, vk = scale_for(cfg["mV_per_count"])
im, ik = scale_for(cfg["mA_per_count"])
pm, pk = scale_for(cfg["W_per_count2"])
meter = Meter(cfg["fs"], cfg["nominal_hz"], [(cfg["offset"], vm, vk)] * k_in, (cfg["offset"], im, ik), pm, pk,
              cfg["hysteresis"])
mA_per_count = cfg["mA_per_count"] * gains[k_in] / 1e6
meter.out_m, meter.out_k = scale_for(mA_per_count)
meter.out_rms_offset = offsets[k_in]
for k in range(k_in):
    mV_per_count = cfg["mV_per_count"] * gains[k] / 1e6
    ch = meter.inputs[k]
    ch.m, ch.k = scale_for(mV_per_count)
    ch.rms_offset = offsets[k]
    ch.pm, ch.pk = scale_for(mV_per_count * mA_per_count / 1e6)
meter.active = cfg["active"]
volts = [array("h", bytearray(2 * n)) for _ in range(k_in)]
amps = array("h", bytearray(2 * n))
allocated = 0
measured_blocks = 0
block = 0
with open(sys.argv[2], "rb") as f:
    while True:
        got = 0
        for v in volts:
            got += f.readinto(v)
        got += f.readinto(amps)
        if got < 2 * n * (k_in + 1):
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
print(json.dumps({"voltage_mV": [ch.voltage_mV for ch in meter.inputs], "current_mA": meter.current_mA,
                  "power_W": meter.power_W, "apparent_VA": meter.apparent_VA,
                  "windows": [ch.windows for ch in meter.inputs], "output_windows": meter.output_windows,
                  "blocks": measured_blocks, "allocated": allocated}))
