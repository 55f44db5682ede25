# Runs on MicroPython: the sim board in lockstep with a plant, with measurement,
# loss detection, protection and the relays wired as on a tap. argv: plant port,
# config JSON file. Prints one JSON line at the end.
import gc
import json
import sys

from firmware import relays as rm
from firmware.hal_sim import SimHal
from firmware.loss import LossDetector
from firmware.measure import Meter, scale_for
from firmware.overload import Overload
from firmware.protection import Protection, Settings


def main():
    with open(sys.argv[2]) as f:
        cfg = json.loads(f.read())
    n_in = cfg["inputs"]
    block = cfg["block"]
    fs = cfg["fs"]
    hal = SimHal("127.0.0.1", int(sys.argv[1]), n_in, block)
    vm, vk = scale_for(cfg["mV_per_count"])
    im, ik = scale_for(cfg["mA_per_count"])
    pm, pk = scale_for(cfg["W_per_count2"])
    meter = Meter(fs, 50, [(0, vm, vk)] * n_in, (0, im, ik), pm, pk, 200)
    relays = rm.RelayMatrix(hal, n_in, hal.ticks_diff, cfg["operate_us"], cfg["release_us"], cfg["bounce_us"],
                            hal.ticks_us())
    detectors = [LossDetector(fs, 50, cfg["loss_threshold_counts"], cfg["loss_persist"], fs // 50)
                 for _ in range(n_in)]
    settings = Settings()
    for key in cfg["settings"]:
        setattr(settings, key, cfg["settings"][key])
    protection = Protection(meter, relays, Overload(), detectors, settings, cfg["counts_per_amp_q8"],
                            cfg["breaking_mA"], fs, hal.ticks_diff)
    for k in range(1, n_in + 1):
        protection.set_alternates(k, cfg["rankings"][k - 1])
    protection.preferred = cfg["preferred"]
    protection.host_present = cfg["host_present"]
    for key in cfg["board_settings"]:
        setattr(settings, key, cfg["board_settings"][key])
    log = []
    last_state = protection.state
    allocated = 0
    measured = 0
    for step in range(cfg["steps"]):
        hal.exchange()
        now = hal.ticks_us()
        meter.active = relays.active
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        meter.process(hal.volts, hal.amps, block)
        protection.process(hal.volts, hal.amps, block, now)
        relays.step(now, rm.current_is_zero(hal.amps, block, cfg["zero_counts"]))
        spent = gc.mem_alloc() - before
        gc.enable()
        if step >= 100:  # after start-up
            allocated += spent
            measured += 1
        if protection.state != last_state:
            log.append([step, "protection", protection.state])
            last_state = protection.state
    hal.close()
    print(json.dumps({
        "active": relays.active, "relay_state": relays.state, "protection": protection.state,
        "transfers": protection.transfers, "trips": protection.trips, "blocked": protection.blocked_transfers,
        "last_loss_sample": protection.last_loss_sample, "log": log,
        "allocated": allocated, "measured_blocks": measured,
    }))


main()
