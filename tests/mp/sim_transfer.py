# Runs on MicroPython: the sim board's HAL in lockstep with a plant on the host, the
# meter measuring every block and the relay state machine moving the rack on request.
# argv: plant port, config JSON file. Prints one JSON line at the end.
import json
import sys

from firmware import relays as rm
from firmware.hal_sim import SimHal
from firmware.measure import Meter, scale_for


def block_is_zero(amps, n, threshold):
    for j in range(n):
        a = amps[j]
        if a > threshold or a < -threshold:
            return False
    return True


def main():
    with open(sys.argv[2]) as f:
        cfg = json.loads(f.read())
    n_in = cfg["inputs"]
    block = cfg["block"]
    hal = SimHal("127.0.0.1", int(sys.argv[1]), n_in, block)
    vm, vk = scale_for(cfg["mV_per_count"])
    im, ik = scale_for(cfg["mA_per_count"])
    pm, pk = scale_for(cfg["W_per_count2"])
    meter = Meter(cfg["fs"], 50, [(0, vm, vk)] * n_in, (0, im, ik), pm, pk, 200)
    matrix = rm.RelayMatrix(hal, n_in, hal.ticks_diff, cfg["operate_us"], cfg["release_us"], cfg["bounce_us"],
                            hal.ticks_us())
    requested_at = None
    confirmed_at = None
    for step in range(cfg["steps"]):
        hal.exchange()
        now = hal.ticks_us()
        meter.active = matrix.active
        meter.process(hal.volts, hal.amps, block)
        if step == cfg["request_at_step"]:
            requested_at = now
            result = matrix.request(cfg["target"], cfg["fallback"], now)
        matrix.step(now, block_is_zero(hal.amps, block, cfg["zero_counts"]))
        if requested_at is not None and confirmed_at is None and matrix.state == rm.IDLE:
            confirmed_at = now
    hal.close()
    print(json.dumps({
        "active": matrix.active, "state": matrix.state, "request_result": result,
        "transfer_us": None if confirmed_at is None else hal.ticks_diff(confirmed_at, requested_at),
        "inputs": [[ch.voltage_mV, ch.frequency_cHz, ch.thd_dpct] for ch in meter.inputs],
        "current_mA": meter.current_mA, "power_W": meter.power_W, "closes": matrix.closes,
    }))


main()
