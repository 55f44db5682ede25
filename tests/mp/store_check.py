# Runs on MicroPython: persistence and event-log scenarios in the directory in argv.
import json
import sys

from firmware import store
from firmware.events import EventLog

DEFAULTS = {"address": 254, "epoch": 0, "counter_reserved": 0, "alternates": [0, 0, 0]}


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read()


def main():
    d = sys.argv[1]
    out = {}
    r = store.Record(d, "config.json", DEFAULTS)
    out["missing"] = [r.status, dict(r.data)]
    r.data["address"] = 17
    r.data["alternates"] = [2, 3, 0]
    r.save()
    r2 = store.Record(d, "config.json", DEFAULTS)
    out["saved"] = [r2.status, dict(r2.data)]
    good = read(d + "/config.json")
    r2.data["address"] = 18
    r2.save()
    newer = read(d + "/config.json")
    # a write in flight: the new copy complete, the record itself damaged
    write(d + "/config.json.new", newer)
    write(d + "/config.json", good[: len(good) // 2])
    r3 = store.Record(d, "config.json", DEFAULTS)
    out["recovered"] = [r3.status, r3.data]
    # a torn new copy beside an intact record: the record wins
    write(d + "/config.json", good)
    write(d + "/config.json.new", good[:10])
    r4 = store.Record(d, "config.json", DEFAULTS)
    out["torn_new"] = [r4.status, r4.data]
    # both damaged: defaults, flagged
    write(d + "/config.json", good.replace("17", "71"))
    r5 = store.Record(d, "config.json", DEFAULTS)
    out["corrupt"] = [r5.status, r5.data]
    # counters reserved in blocks
    r6 = store.Record(d, "config.json", DEFAULTS)
    wrote = [store.reserve_counter(r6, c) for c in (51, 60, 114, 115, 116)]
    out["reserve"] = [wrote, store.Record(d, "config.json", DEFAULTS).data["counter_reserved"]]
    # the event ring
    log = EventLog()
    for i in range(70):
        log.log(1000 + i, 3, 1, i)
    events = []
    first = log.read(0, 10, events)
    empty = []
    out["events"] = [log.head, log.oldest(), first, events[0], len(events), log.read(70, 5, empty), empty]
    print(json.dumps(out))


main()
