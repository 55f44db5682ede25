# Runs on MicroPython: bytes allocated per frame by the firmware codec in steady
# state, for a telemetry-sized answer encoded and a request decoded. Prints JSON.
import gc
import json
import sys

from firmware.framing import Decoder, Encoder

N = 200


def main():
    body = bytes(range(1, 90)) + bytes(6)  # 95 bytes, zeros included
    enc = Encoder()
    dec = Decoder()
    enc.body[: len(body)] = body
    n = enc.encode(len(body))  # warm-up: caches the exact-length views
    dec.feed(enc.out, 0, n)
    frames = 0
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(N):
        n = enc.encode(len(body))
        pos = 0
        while pos < n:
            pos = dec.feed(enc.out, pos, n)
            if dec.result > 0:
                frames += 1
    after = gc.mem_alloc()
    gc.enable()
    print(json.dumps({"frames": frames, "bytes_per_frame": (after - before) / N, "good": dec.good}))


main()
sys.exit(0)
