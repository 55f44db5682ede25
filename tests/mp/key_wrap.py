# Runs on MicroPython: unwraps SET_KEY cases (JSON lines, file named in argv) with the
# firmware's HMAC and prints the new key and its check value for each.
import binascii
import json
import sys

from firmware.hmac256 import Hmac, key_check, unwrap_key

with open(sys.argv[1]) as f:
    for line in f:
        case = json.loads(line)
        new = unwrap_key(Hmac(binascii.unhexlify(case["old"])), binascii.unhexlify(case["wrapped"]), case["counter"])
        print(json.dumps({"new": binascii.hexlify(new).decode(), "check": binascii.hexlify(key_check(new)).decode()}))
