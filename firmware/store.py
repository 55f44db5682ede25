# Persistent records on the board's flash: address, key, limits, alternates,
# calibration, epoch and counters. Written atomically (the new text to NAME.new, then
# renamed over NAME), each with a CRC-32 of its text, so a reset during a write leaves
# either the old record or the new one. A missing or corrupt record loads the safe
# defaults and says so (the tap raises an alarm the host sees), never a crash loop.
#
# A flash erase stalls the RP2040 for tens to hundreds of milliseconds, blinding
# protection: callers write rarely, batched, and never during a transfer. Command
# counters are therefore reserved in blocks: the record holds a counter that the tap
# has not yet reached, and after a reset the tap treats it as already used.

import binascii
import json
import os

OK = 0
MISSING = 1
CORRUPT = 2  # neither the record nor its .new copy was intact
RECOVERED = 3  # the record was damaged; the .new copy of a write in flight was used

COUNTER_BLOCK = 64


def _read(path):
    """The data of an intact record at path, or None."""
    try:
        with open(path) as f:
            header = f.readline()
            text = f.readline()
    except OSError:
        return None
    try:
        if int(header.strip(), 16) != binascii.crc32(text.strip().encode()):
            return None
        data = json.loads(text)
    except (ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Record:
    def __init__(self, directory, name, defaults):
        self.path = directory + "/" + name
        self.new_path = self.path + ".new"
        self.defaults = defaults
        self.status = OK
        self.data = self.load()

    def load(self):
        data = _read(self.path)
        if data is not None:
            self.status = OK
            return self._complete(data)
        data = _read(self.new_path)
        if data is not None:
            self.status = RECOVERED
            return self._complete(data)
        self.status = CORRUPT if _exists(self.path) or _exists(self.new_path) else MISSING
        return self._complete({})

    def _complete(self, data):
        # fields added by a newer firmware keep their defaults
        out = {}
        for key in self.defaults:
            value = data[key] if key in data else self.defaults[key]
            out[key] = list(value) if isinstance(value, list) else value  # never share the defaults' lists
        return out

    def save(self):
        text = json.dumps(self.data)
        with open(self.new_path, "w") as f:
            f.write("%08x\n%s\n" % (binascii.crc32(text.encode()), text))
        try:
            os.rename(self.new_path, self.path)
        except OSError:
            # a file system that will not rename over a file: remove, then rename; a
            # reset in between leaves the .new copy, which load() takes
            os.remove(self.path)
            os.rename(self.new_path, self.path)
        self.status = OK


def reserve_counter(record, counter):
    """Before accepting `counter`: make sure the record holds a counter at or above it.
    Returns True if the record had to be written."""
    if counter <= record.data["counter_reserved"]:
        return False
    record.data["counter_reserved"] = counter + COUNTER_BLOCK
    record.save()
    return True
