# The tap's event log: a ring of numbered events (SPEC.md, READ_EVENTS). Index rises
# by one per event; the oldest are overwritten. Preallocated: logging allocates nothing.

from array import array

from micropython import const

CAPACITY = const(64)
_WRAP = const(0x3FFFFFFF)  # indexes and times stay small ints


class EventLog:
    def __init__(self):
        self.head = 0  # the index the next event will get
        self._time = array("i", [0] * CAPACITY)
        self._code = bytearray(CAPACITY)
        self._input = bytearray(CAPACITY)
        self._value = array("i", [0] * CAPACITY)

    def log(self, time_ms, code, input_index, value):
        slot = self.head % CAPACITY
        self._time[slot] = time_ms & _WRAP
        self._code[slot] = code
        self._input[slot] = input_index
        self._value[slot] = value
        self.head = (self.head + 1) & _WRAP

    def oldest(self):
        return self.head - CAPACITY if self.head > CAPACITY else 0

    def read(self, since, max_count, out):
        """Append (time_ms, code, input, value) tuples of events from index
        max(since, oldest) on to `out`, at most max_count; return the first index."""
        first = since if since > self.oldest() else self.oldest()
        index = first
        while index < self.head and len(out) < max_count:
            slot = index % CAPACITY
            out.append((self._time[slot], self._code[slot], self._input[slot], self._value[slot]))
            index += 1
        return first if first < self.head else self.head
