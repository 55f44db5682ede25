# Runs on MicroPython: feeds golden-vector inputs (JSON lines, file named in argv)
# through the firmware codec, guard and payload layouts, and prints what the
# firmware made of each as a JSON line. tests/test_vectors.py compares.
import binascii
import json
import sys

from firmware import guard as guard_mod
from firmware.framing import VERDICTS, Decoder, Encoder
from firmware.hmac256 import Hmac
from protocol import catalog, layout

MESSAGES = layout.load()
ERROR_NAMES = {}
for code, name in catalog.ERRORS:
    ERROR_NAMES[code] = name


def unhex(s):
    return binascii.unhexlify(s)


def jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return binascii.hexlify(value).decode()
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k in value:
            out[k] = jsonable(value[k])
        return out
    return value


def feed_all(decoder, wire, chunk):
    outcomes = []
    bodies = []
    start = 0
    while start < len(wire):
        end = min(len(wire), start + chunk)
        pos = start
        while pos < end:
            pos = decoder.feed(wire, pos, end)
            r = decoder.result
            if r > 0:
                outcomes.append("good")
                bodies.append(bytes(decoder.body[:r]))
            elif r < 0:
                outcomes.append(VERDICTS[r])
        start = end
    return outcomes, bodies


def good(case, key):
    wire = unhex(case["wire"])
    outcomes, bodies = feed_all(Decoder(), wire, len(wire))
    out = {"name": case["name"], "outcomes": outcomes}
    if outcomes != ["good"]:
        return out
    body = bodies[0]
    out["body"] = binascii.hexlify(body).decode()
    enc = Encoder()
    enc.body[: len(body)] = body
    n = enc.encode(len(body))
    out["wire"] = binascii.hexlify(enc.out[:n]).decode()
    flags = body[4]
    out["header"] = {"dst": body[1], "src": body[2], "type": body[3], "flags": flags, "seq": body[5] | (body[6] << 8)}
    end = len(body)
    if flags & catalog.FLAG_AUTH:
        end -= catalog.AUTH_LEN
        out["tag_ok"] = Hmac(key).tag_ok(
            body[: len(body) - catalog.TAG_LEN], body[len(body) - catalog.TAG_LEN :], catalog.TAG_LEN
        )
    message = MESSAGES[body[3]]
    compiled = message.response if flags & catalog.FLAG_RESPONSE else message.request
    out["fields"] = jsonable(compiled.unpack(body, catalog.HEADER_LEN, end))
    return out


def stream(case):
    wire = unhex(case["wire"])
    whole, bodies = feed_all(Decoder(), wire, len(wire))
    bytewise, _ = feed_all(Decoder(), wire, 1)
    sevens, _ = feed_all(Decoder(), wire, 7)
    return {
        "name": case["name"],
        "whole": whole,
        "bytewise": bytewise,
        "sevens": sevens,
        "bodies": [binascii.hexlify(b).decode() for b in bodies],
    }


def request(case, key):
    state = case["tap_state"]
    g = guard_mod.Guard(
        MESSAGES, unhex(state["unique_id"]), state["address"], Hmac(key), state["epoch"], state["counter"]
    )
    body = bytearray(unhex(case["body"]))
    verdict = g.admit(body, len(body))
    if verdict == guard_mod.ADMIT:
        try:
            fields = MESSAGES[g.type].request.unpack(body, catalog.HEADER_LEN, g.payload_end)
            if g.type == catalog.T_HEARTBEAT:
                verdict = g.heartbeat(fields["epoch"])
        except layout.LayoutError:
            verdict = catalog.E_BAD_LENGTH
            g.detail = MESSAGES[g.type].request.size  # what the tap answers: the expected length
    if verdict == guard_mod.ADMIT:
        name = "admit"
    elif verdict == guard_mod.IGNORE:
        name = "ignore"
    elif verdict == guard_mod.CACHED:
        name = "cached"
    else:
        name = ERROR_NAMES[verdict]
    return {"name": case["name"], "tap": name, "detail": g.detail, "counter_after": g.counter, "epoch_after": g.epoch}


def main():
    key = None
    with open(sys.argv[1]) as f:
        for line in f:
            case = json.loads(line)
            kind = case["kind"]
            if kind == "key":
                key = unhex(case["key"])
                continue
            if kind == "good":
                result = good(case, key)
            elif kind == "stream":
                result = stream(case)
            else:
                result = request(case, key)
            print(json.dumps(result))


main()
