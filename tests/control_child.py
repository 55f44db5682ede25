"""A controller process for the whole-loop tests (tests/test_control_rig.py): the real
controller over the buses of a running virtual rig, journalling in an inventory, which
kills itself with SIGKILL at a chosen step of its first move, as a crash would.

    python tests/control_child.py RIG_DIR DB STORE SITE [--kill-at STEP] [--maintain SOURCE]
                                  [--ticks N]

STEP: intended (the intent journalled), sent (the SWITCH on the wire, no answer read),
answered (the fleet's answer back, not yet journalled), verified (before the reading
that verifies it). It prints one JSON line per tick, then one with the final state.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host.allocate.plan import Move
from host.control.controller import Controller
from host.control.leadership import LocalLock
from host.control.policy import ControlPolicy
from host.fleet.bus_fleet import BusFleet
from host.model.site_file import load_site_file
from host.ops.reconcile import reconcile_commands
from host.ops.session import Session, rig_ports
from host.store.control_store import ControlStore
from host.wire import framing, messages
from protocol import catalog


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class SendThenDie:
    """The link of a segment, which sends the first SWITCH it is handed and dies before
    reading the answer: the tap has the command, the host never learns its outcome."""

    def __init__(self, link: Any, transport: Any) -> None:
        self.link, self.transport = link, transport
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.link, name)

    def exchange(self, frame: bytes, timeout: float | None = None) -> bytes | None:
        if self.armed:
            _, body = framing.decode_frame(frame.rstrip(b"\x00"))
            if body is not None and messages.parse_body(body).type == catalog.T_SWITCH:
                self.transport.send(frame)
                time.sleep(1.0)  # the tap executes it meanwhile
                die()
        return self.link.exchange(frame, timeout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rig_dir")
    parser.add_argument("db")
    parser.add_argument("store")
    parser.add_argument("site")
    parser.add_argument("--kill-at", choices=("intended", "sent", "answered", "verified"))
    parser.add_argument("--maintain")
    parser.add_argument("--ticks", type=int, default=3)
    args = parser.parse_args()
    parsed = load_site_file(Path(args.site))
    session = Session.open(args.db, rig_ports(args.rig_dir))
    inventory = session.inventory
    taps = {t.rack: t for t in inventory.taps() if t.rack}
    segments = sorted({t.bus for t in taps.values()})
    clients = {segment: session.client(segment) for segment in segments}
    killer: SendThenDie | None = None
    if args.kill_at == "sent":
        client = clients[segments[0]]
        killer = SendThenDie(client.link, session.transports(segments[0])["A"])
        client.link = killer
    fleet = BusFleet(parsed.site, taps, clients, journal=inventory, transfer_timeout_s=30.0)

    def on_step(step: str, move: Move) -> None:
        if args.kill_at == "sent" and step == "intended" and killer is not None:
            killer.armed = True
        elif step == args.kill_at:
            die()

    reach = {t.id: (clients[t.bus], t.address) for t in inventory.taps() if t.address is not None}
    for line in reconcile_commands(inventory, reach.get):
        print(json.dumps({"reconciled": line}), flush=True)
    policy = ControlPolicy(tick_s=1.0, plan_s=60.0, stagger_s=0.0, dwell_s=0.0)
    controller = Controller(fleet, ControlStore.open(args.store), policy,
                            fence=lambda: fleet.take_over(session.state.set_epoch), heartbeat=fleet.heartbeat,
                            leadership=LocalLock(args.store + ".lock"), on_step=on_step)
    for note in controller.start():
        print(json.dumps({"start": note}), flush=True)
    if args.maintain:
        controller.maintain_source(args.maintain)
    for _ in range(args.ticks):
        report = controller.tick()
        print(json.dumps({"tick": report.time_s, "reasons": report.reasons, "moves": report.moves,
                          "refused": report.refused, "fenced": controller.fenced}), flush=True)
        time.sleep(policy.tick_s)
    telemetry = fleet.read_telemetry()
    print(json.dumps({"final": {r: telemetry.active_source(r) for r in telemetry.rack_ids},
                      "unfinished": len(controller.intents.unfinished()), "fenced": controller.fenced}), flush=True)
    session.close()


if __name__ == "__main__":
    main()
