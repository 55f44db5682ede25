# A fake `machine` for MicroPython's unix port (tests/test_hal_rp2040.py): pins, UARTs and
# an ADS131M06 behind the SPI, as far as firmware/hal_rp2040.py uses them. Everything the
# HAL does to them is appended to LOG, so a test asserts on the order of events.

LOG = []
PINS = {}
UARTS = {}
SPIS = {}
WDTS = []


class ResetCalled(Exception):
    pass


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        state = PINS.setdefault(id, {"mode": Pin.IN, "level": 0, "pull": None})
        if mode != -1:
            state["mode"] = mode
        if pull != -1:
            state["pull"] = pull
        if value is not None:
            self.value(value)

    def value(self, v=None):
        state = PINS[self.id]
        if v is None:
            return state["level"]
        state["level"] = 1 if v else 0
        LOG.append(("pin", self.id, state["level"]))
        return None


def set_level(pin, level):
    """What the outside world drives onto an input pin."""
    PINS.setdefault(pin, {"mode": Pin.IN, "level": 0, "pull": None})["level"] = level


class UART:
    TXDONE_AFTER = 3  # txdone() says False this many times after each write

    def __init__(self, id, baudrate=115200, **kw):
        self.id = id
        self.baudrate = baudrate
        self.kw = kw
        self.rx = bytearray()
        self._busy = 0
        UARTS[id] = self

    def any(self):
        return len(self.rx)

    def readinto(self, buf):
        n = min(len(buf), len(self.rx))
        if n == 0:
            return None  # as the rp2 port with timeout=0
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n

    def write(self, buf):
        LOG.append(("write", self.id, bytes(buf)))
        self._busy = UART.TXDONE_AFTER
        return len(buf)

    def txdone(self):
        done = self._busy == 0
        if not done:
            self._busy -= 1
        LOG.append(("txdone", self.id, done))
        return done

    def deinit(self):
        LOG.append(("uart_deinit", self.id))


# ID, STATUS, MODE, CLOCK, GAIN1, GAIN2 after a reset
_DEFAULTS = {0x00: 0x2620, 0x01: 0x0500, 0x02: 0x0510, 0x03: 0x3F0E, 0x04: 0x0000, 0x05: 0x0000}


class Ads131m06Model:
    """The register behaviour hal_rp2040.py relies on, as read from the datasheet: the same
    reading as the HAL's, so agreement shows consistency, not that the part behaves so."""

    def __init__(self):
        self.regs = dict(_DEFAULTS)
        self.pending = 0x0500
        self.commands = []

    def frame(self, out, inp):
        for i in range(len(inp)):
            inp[i] = 0
        inp[0] = self.pending >> 8
        inp[1] = self.pending & 0xFF
        cmd = (out[0] << 8) | out[1]
        self.commands.append(cmd)
        self.pending = self.regs[0x01]
        if cmd == 0x0011:
            self.regs = dict(_DEFAULTS)
            self.pending = 0xFF26
        elif cmd & 0xE000 == 0xA000:
            self.pending = self.regs.get((cmd >> 7) & 0x3F, 0)
        elif cmd & 0xE000 == 0x6000:
            address = (cmd >> 7) & 0x3F
            for i in range((cmd & 0x7F) + 1):
                self.regs[address + i] = (out[3 * (i + 1)] << 8) | out[3 * (i + 1) + 1]
            self.pending = 0x4000 | (cmd & 0x1FFF)


class SPI:
    MSB = 0

    def __init__(self, id, **kw):
        self.id = id
        self.kw = kw
        self.chip = Ads131m06Model()
        SPIS[id] = self

    def write_readinto(self, out, inp):
        if CS_PIN and PINS[CS_PIN[0]]["level"] != 0:
            raise AssertionError("an SPI frame with CS high")
        self.chip.frame(out, inp)

    def deinit(self):
        LOG.append(("spi_deinit", self.id))


CS_PIN = []  # a test names the CS pin to have frames checked against it

ADC_VALUE = [0]


class ADC:
    def __init__(self, id):
        self.id = id

    def read_u16(self):
        return ADC_VALUE[0]


class WDT:
    def __init__(self, timeout=5000):
        self.timeout = timeout
        self.fed = 0
        WDTS.append(self)

    def feed(self):
        self.fed += 1


def unique_id():
    return b"\x01\x02\x03\x04\x05\x06\x07\x08"


def reset():
    raise ResetCalled()
