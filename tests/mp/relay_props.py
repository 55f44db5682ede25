# Runs on MicroPython: randomized episodes of requests, relay failures and MCU resets
# against firmware.relays.RelayMatrix, with a small model of relay contacts in this
# harness (operate/release within the datasheet maxima, bounce, welded or dead
# contacts, lying feedback, a hardware interlock). Prints one JSON summary.
# argv: seed, episodes, steps per episode.
import json
import random
import sys

from firmware import relays as rm

STEP_US = 250
OPERATE_MAX = 6000
RELEASE_MAX = 3000
BOUNCE_MAX = 1500


def ticks_diff(a, b):
    return a - b


class Contacts:
    """What the harness believes the physics is; the firmware sees it only via the HAL."""

    def __init__(self, n, interlock):
        self.n = n
        self.interlock = interlock
        self.coil_state = [False] * (n + 1)
        self.closed = [False] * (n + 1)
        self.change_at = [None] * (n + 1)  # (time, new state) of a pending movement
        self.bounce_until = [0] * (n + 1)
        self.welded = [False] * (n + 1)
        self.dead = [False] * (n + 1)  # never closes
        self.slow = [False] * (n + 1)  # operates beyond the maximum
        self.feedback_stuck = [None] * (n + 1)
        self.now = 0
        self.violations = []
        self.closes_commanded = 0

    def drive(self, k, closed):
        if closed:
            self.closes_commanded += 1
            for j in range(1, self.n + 1):
                # a contact whose feedback lies is the hardware interlock's to catch
                seen = self.closed[j] and self.feedback_stuck[j] is None
                if j != k and (self.coil_state[j] or seen):
                    self.violations.append("close %d commanded while %d coil=%s contact=%s" % (
                        k, j, self.coil_state[j], self.closed[j]))
        self.coil_state[k] = closed
        if closed:
            if self.dead[k]:
                return
            delay = random.randint(OPERATE_MAX // 3, OPERATE_MAX)
            if self.slow[k]:
                delay = OPERATE_MAX * 3
            self.change_at[k] = (self.now + delay, True)
        else:
            if self.welded[k]:
                return
            self.change_at[k] = (self.now + random.randint(RELEASE_MAX // 3, RELEASE_MAX), False)

    def coil(self, k):
        return self.coil_state[k]

    def feedback(self, k):
        if self.feedback_stuck[k] is not None:
            return self.feedback_stuck[k]
        if self.now < self.bounce_until[k]:
            return random.random() < 0.5
        return self.closed[k]

    def advance(self, now):
        self.now = now
        for k in range(1, self.n + 1):
            pending = self.change_at[k]
            if pending is None or now < pending[0]:
                continue
            self.change_at[k] = None
            # normally-closed auxiliary contacts of the others in this coil's path
            if pending[1] and self.interlock and any(self.closed[j] for j in range(1, self.n + 1) if j != k):
                continue
            if pending[1] != self.closed[k]:
                self.closed[k] = pending[1]
                if pending[1]:
                    self.bounce_until[k] = now + random.randint(0, BOUNCE_MAX)
        both = [k for k in range(1, self.n + 1) if self.closed[k]]
        if len(both) > 1 and not any(self.welded[k] for k in both):
            self.violations.append("inputs %s closed together at %d" % (both, now))


def episode(steps):
    n = random.randint(2, 4)
    contacts = Contacts(n, interlock=random.random() < 0.5)
    start = random.randint(0, n)
    if start:
        contacts.coil_state[start] = True
        contacts.closed[start] = True
    for k in range(1, n + 1):
        r = random.random()
        if r < 0.05:
            contacts.welded[k] = True
        elif r < 0.10:
            contacts.dead[k] = True
        elif r < 0.15:
            contacts.slow[k] = True
        elif r < 0.18:
            contacts.feedback_stuck[k] = random.random() < 0.5
    now = 0
    matrix = rm.RelayMatrix(contacts, n, ticks_diff, OPERATE_MAX, RELEASE_MAX, BOUNCE_MAX, now)
    stats = {"requests": 0, "completed": 0, "faults": 0, "resets": 0}
    for _ in range(steps):
        now += STEP_US
        contacts.advance(now)
        r = random.random()
        if r < 0.02:
            stats["requests"] += 1
            matrix.request(random.randint(0, n), random.randint(0, n), now)
        elif r < 0.023:
            stats["resets"] += 1
            matrix = rm.RelayMatrix(contacts, n, ticks_diff, OPERATE_MAX, RELEASE_MAX, BOUNCE_MAX, now)
        before = matrix.state
        matrix.step(now, random.random() < 0.3)
        if matrix.state == rm.FAULT and before != rm.FAULT:
            stats["faults"] += 1
        if before == rm.CLOSING and matrix.state == rm.IDLE:
            stats["completed"] += 1
            if not contacts.closed[matrix.active]:
                contacts.violations.append("confirmed %d while its contacts are open" % matrix.active)
    return contacts.violations, stats


def main():
    random.seed(int(sys.argv[1]))
    totals = {"requests": 0, "completed": 0, "faults": 0, "resets": 0, "episodes": 0}
    violations = []
    for _ in range(int(sys.argv[2])):
        found, stats = episode(int(sys.argv[3]))
        violations += found[:3]
        for key in stats:
            totals[key] += stats[key]
        totals["episodes"] += 1
    totals["violations"] = violations[:20]
    print(json.dumps(totals))


main()
