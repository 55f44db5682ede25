# Packing and unpacking of message payloads from the layouts in catalog.py.
#
# Shared by host (CPython) and firmware (MicroPython), so that a field's layout is
# interpreted by one piece of code. MicroPython's struct silently truncates values
# that do not fit, so every value is range-checked here before packing.

import struct

from protocol import catalog

RANGES = {
    "B": (0, 0xFF),
    "b": (-0x80, 0x7F),
    "H": (0, 0xFFFF),
    "h": (-0x8000, 0x7FFF),
    "I": (0, 0xFFFFFFFF),
    "i": (-0x80000000, 0x7FFFFFFF),
}


class LayoutError(ValueError):
    """A payload that does not fit its layout (wrong length, value out of range)."""


class Compiled:
    """A layout turned into struct formats once, at start-up."""

    def __init__(self, fields):
        fmt = "<"
        names = []  # type: list[str]
        codes = []
        self.group = None  # (name, count index in fixed part, Compiled of the element)
        self.tail = None  # name of the trailing bytes field
        for field in fields:
            code = field[1]
            if code == catalog.GROUP:
                self.group = (field[0], names.index(field[2]), Compiled(field[3]))
            elif code == catalog.TAIL:
                self.tail = field[0]
            else:
                fmt += code
                names.append(field[0])
                codes.append(code)
        self.fmt = fmt
        self.names = tuple(names)
        self.codes = tuple(codes)
        self.size = struct.calcsize(fmt)

    def unpack(self, buf, start, end):
        """Return a dict of the payload buf[start:end]; LayoutError if it does not fit."""
        if end - start < self.size:
            raise LayoutError("payload too short: %d < %d" % (end - start, self.size))
        values = struct.unpack_from(self.fmt, buf, start)
        out = {}
        for i in range(len(self.names)):
            out[self.names[i]] = values[i]
        pos = start + self.size
        if self.group is not None:
            name, count_index, element = self.group
            count = values[count_index]
            need = count * element.size
            if end - pos != need:
                raise LayoutError("%s: %d bytes for %d items of %d" % (name, end - pos, count, element.size))
            items = []
            for _ in range(count):
                items.append(element.unpack(buf, pos, pos + element.size))
                pos += element.size
            out[name] = items
        elif self.tail is not None:
            out[self.tail] = bytes(buf[pos:end])
            pos = end
        if pos != end:
            raise LayoutError("payload length %d, layout wants %d" % (end - start, pos - start))
        return out

    def packed_size(self, values):
        size = self.size
        if self.group is not None:
            size += len(values[self.group[0]]) * self.group[2].size
        elif self.tail is not None:
            size += len(values[self.tail])
        return size

    def pack_into(self, values, buf, offset):
        """Write values (a dict) at buf[offset:]; return the end offset."""
        args = []
        for i in range(len(self.names)):
            name = self.names[i]
            if name not in values:
                raise LayoutError("missing field %s" % name)
            args.append(check_value(name, self.codes[i], values[name]))
        if self.group is not None:
            name, count_index, _ = self.group
            if len(values[name]) != args[count_index]:
                raise LayoutError("%s has %d items, count says %d" % (name, len(values[name]), args[count_index]))
        if offset + self.packed_size(values) > len(buf):
            raise LayoutError("payload does not fit in %d bytes" % len(buf))
        struct.pack_into(self.fmt, buf, offset, *args)
        pos = offset + self.size
        if self.group is not None:
            for item in values[self.group[0]]:
                pos = self.group[2].pack_into(item, buf, pos)
        elif self.tail is not None:
            data = values[self.tail]
            buf[pos:pos + len(data)] = data
            pos += len(data)
        return pos


def check_value(name, code, value):
    """Return value if it fits code, else raise LayoutError naming the field."""
    limits = RANGES.get(code)
    if limits is not None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise LayoutError("%s must be an integer" % name)
        if value < limits[0] or value > limits[1]:
            raise LayoutError("%s=%d outside %d..%d" % (name, value, limits[0], limits[1]))
        return value
    width = int(code[:-1])
    if not isinstance(value, (bytes, bytearray)) or len(value) > width:
        raise LayoutError("%s must be at most %d bytes" % (name, width))
    return bytes(value)


class Message:
    """One catalogue entry with its request and response layouts compiled."""

    def __init__(self, entry):
        self.type = entry[0]
        self.name = entry[1]
        self.authenticated = entry[2]
        self.addressing = entry[3]
        self.request = None if entry[4] is None else Compiled(entry[4])
        self.response = None if entry[5] is None else Compiled(entry[5])


def load():
    """Return {type: Message} for the whole catalogue (call once at start-up)."""
    out = {}
    for entry in catalog.MESSAGES:
        out[entry[0]] = Message(entry)
    return out
