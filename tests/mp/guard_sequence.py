# Runs on MicroPython: a sequence of requests (hex bodies, one per line of the file
# named in argv, JSON {"body": hex, "answer": hex or null}) through one Guard, as a
# tap would see them in a row. Prints the verdict and tap state after each.
import binascii
import json
import sys

from firmware import guard as guard_mod
from firmware import reply
from firmware.hmac256 import Hmac
from protocol import catalog, layout

MESSAGES = layout.load()
NAMES = {guard_mod.ADMIT: "admit", guard_mod.IGNORE: "ignore", guard_mod.CACHED: "cached"}
for code, name in catalog.ERRORS:
    NAMES[code] = name


def main():
    with open(sys.argv[1]) as f:
        setup = json.loads(f.readline())
        hmac = Hmac(binascii.unhexlify(setup["key"]))
        g = guard_mod.Guard(MESSAGES, binascii.unhexlify(setup["unique_id"]), setup["address"], hmac,
                            setup["epoch"], setup["counter"])
        out = bytearray(catalog.MAX_BODY)
        for line in f:
            step = json.loads(line)
            body = bytearray(binascii.unhexlify(step["body"]))
            verdict = g.admit(body, len(body))
            answer = None
            if verdict == guard_mod.ADMIT and step.get("heartbeat"):
                verdict = g.heartbeat(step["heartbeat"])
            if verdict == guard_mod.ADMIT and MESSAGES[g.type].authenticated:
                # what a handler does: answer ACK, signed, and remember it for retries
                n = reply.ack(out, g.address, g.seq, g.type)
                n = reply.sign(out, n, hmac, g.auth_epoch, g.auth_counter)
                g.remember(out, n)
                answer = out[:n]
            elif verdict == guard_mod.CACHED:
                buf, n = g.cached_answer()
                reply.mark_cached(buf, n, hmac)
                answer = buf[:n]
            elif verdict > 0:
                n = reply.nak(out, g.address, g.seq, g.type, verdict, g.detail)
                if g.verified:  # as the tap: signed once the tag checked out...
                    n = reply.sign(out, n, hmac, g.auth_epoch, g.auth_counter)
                if g.consumed:  # ... remembered only once the counter is spent
                    g.remember(out, n)
                answer = out[:n]
            print(json.dumps({
                "verdict": NAMES[verdict], "detail": g.detail, "epoch": g.epoch, "counter": g.counter,
                "answer": None if answer is None else binascii.hexlify(answer).decode(),
            }))


main()
