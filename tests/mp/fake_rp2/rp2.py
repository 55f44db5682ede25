# A fake `rp2` for MicroPython's unix port (tests/test_hal_rp2040.py). The PIO program is
# not assembled (its body needs the real assembler's names) and nothing moves data: a test
# plays the DMA by writing the ring and setting the data channel's write address.
import uctypes

CHANNELS = []
MACHINES = []


class PIO:
    SHIFT_LEFT = 0
    SHIFT_RIGHT = 1
    IN_LOW = 0
    IN_HIGH = 1
    OUT_LOW = 2
    OUT_HIGH = 3
    JOIN_NONE = 0
    JOIN_TX = 1
    JOIN_RX = 2


def asm_pio(**kw):
    def assemble(f):
        return {"asm_pio": kw, "program": f.__name__}

    return assemble


class StateMachine:
    def __init__(self, id, program=None, **kw):
        self.id = id
        self.program = program
        self.kw = kw
        self.running = False
        MACHINES.append(self)

    def active(self, v=None):
        if v is None:
            return self.running
        self.running = bool(v)
        return self.running


def _address(x):
    return x if isinstance(x, int) else uctypes.addressof(x)


class DMA:
    def __init__(self):
        self.channel = len(CHANNELS)
        self.read = 0
        self._write = 0
        self.count = 0
        self.ctrl = None
        self.running = False
        self.script = []  # write addresses the next reads of .write return, one each
        self.step_bytes = 0  # if set: every read of .write moves one step on (a DMA that keeps up)
        CHANNELS.append(self)

    @property
    def write(self):
        if self.script:
            self._write = self.script.pop(0)
        elif self.step_bytes:
            self._write += self.step_bytes
        return self._write

    def pack_ctrl(self, **kw):
        return kw

    def config(self, read=None, write=None, count=None, ctrl=None, trigger=False):
        if read is not None:
            self.read = _address(read)
        if write is not None:
            self._write = _address(write)
        if count is not None:
            self.count = count
        if ctrl is not None:
            self.ctrl = ctrl
        if trigger:
            self.running = True

    def active(self, v=None):
        if v is None:
            return self.running
        self.running = bool(v)
        return self.running

    def close(self):
        self.running = False
