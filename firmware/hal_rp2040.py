# HAL of the reference board (boards/rp2040-ads131m06.toml): RP2040, a TI ADS131M06
# read by a PIO state machine and DMA, relay coils and contact feedback on GPIOs, two
# RS-485 buses on the RP2040's UARTs with a driver-enable pin each. The same interface
# as firmware/hal_sim.py's SimHal; everything above the HAL is the same on both boards.
#
# Pins and parameters come from board.json's "hal" entry (what `ibt flash` writes from
# the board description; main_rp2040.py reads it):
#   "adc": {"spi": 0, "cs_pin": 17, "drdy_pin": 20, optional "sck_pin", "mosi_pin",
#           "miso_pin" (default: MicroPython's rpi_pico pins of that SPI), "clkin_hz"
#           (8192000), "gains" (six PGA gains, 1), "volts_channels" ([0..n-1]),
#           "amps_channel" (4), "aux_channels" (a monitor's), "pio_sm" (0)}
#   "relays": one per input, in input order: {"coil_pin", "feedback_pin",
#           "feedback_closed_level" (the level the pin reads when the main contacts are
#           closed: no default, a mirror contact is usually wired inverted), optional
#           "feedback_pull" ("up", "down"), "coil_active_level" (1)}
#   "uarts": bus A then bus B: {"id", "baud", "de_pin", optional "tx_pin", "rx_pin"}
#
# Sampling never waits for the Python loop: the PIO program waits for the ADC's DRDY
# edge, clocks one whole frame out of the ADC and pushes its words to its RX FIFO; one
# DMA channel moves them into a ring of block slots, a second DMA channel re-aims the
# first at the next slot whenever a slot is full (a table of slot addresses, wrapped by
# the DMA's address ring). No interrupt is involved, so a flash erase or a GC pause
# does not stop sampling; exchange() hands over the oldest full slot while later ones
# fill. What only a real board can prove: the PIO program's timing against DRDY, the
# DMA chain, the register setup of the ADS131M06 (tests/test_hal_rp2040.py runs this
# file against fake machine/rp2 modules: the logic, not the hardware).

import time
from array import array

import machine
import micropython
import rp2
import uctypes
from micropython import const

from protocol import catalog

TYPE_CHECKING = False  # mypy takes this name as true; the PIO names below exist only while a program assembles
if TYPE_CHECKING:
    from rp2.asm_pio import gpio, in_, jmp, label, nop, null, pins, set, wait, wrap, wrap_target, x, x_dec, y, y_dec

# -- ADS131M06 (TI datasheet SBAS946, "Register Map" and "Commands") -----------------------------
_CMD_NULL = const(0x0000)
_CMD_RESET = const(0x0011)
_CMD_RREG = const(0xA000)  # 101a aaaa annn nnnn: read n+1 registers from a
_CMD_WREG = const(0x6000)  # 011a aaaa annn nnnn: write n+1 registers from a
_ACK_WREG = const(0x4000)  # 010a aaaa ammm mmmm: the answer to WREG, in the next frame
_ACK_RESET = const(0xFF26)  # 0xFF2n, n = the channel count: 6 (unverified on a part, see setup())
_REG_ID = const(0x00)  # CHANCNT in bits 11:8
_REG_MODE = const(0x02)
_REG_CLOCK = const(0x03)
_REG_GAIN1 = const(0x04)  # PGAGAIN3..0: bits 14:12, 10:8, 6:4, 2:0
_REG_GAIN2 = const(0x05)  # PGAGAIN5..4: bits 6:4, 2:0
# MODE: RESET flag (bit 10) written 0 to clear it; WLENGTH (9:8) = 01, 24-bit words; TIMEOUT
# (4) = 1, the SPI interface resets when CS stays low too long; DRDY_SEL (3:2) = 00, DRDY
# when the last enabled channel has data; DRDY_HiZ (1) = 0, driven; DRDY_FMT (0) = 0, a level
# (low when data is ready). CRC on the input and register map off (bits 13:11 = 0).
_MODE = const(0x0110)
_CLOCK_CHANNELS = const(0x3F00)  # CH5_EN..CH0_EN, bits 13:8: all six converting
_CLOCK_PWR_HR = const(0x0002)  # PWR (1:0) = 10: high resolution, fCLKIN = 8.192 MHz
_OSR_CODES = {128: 0, 256: 1, 512: 2, 1024: 3, 2048: 4, 4096: 5, 8192: 6, 16256: 7}  # CLOCK.OSR, bits 4:2
_WORD_BYTES = const(3)  # 24-bit words
_FRAME_WORDS = const(8)  # status, six channels, CRC
_STATUS_24BIT_WORDS = const(0x0100)  # STATUS bits 9:8 echo MODE.WLENGTH: a frame read in step shows 01

# -- RP2040 (datasheet: 2.5 DMA, 3.7 PIO registers, 2.5.3.1 DREQ numbers) --------------------------
_DMA_BASE = const(0x50000000)
_DMA_CHANNEL_STRIDE = const(0x40)
_DMA_AL2_WRITE_ADDR_TRIG = const(0x2C)  # writing it sets WRITE_ADDR and starts the channel
_PIO_BASES = (0x50200000, 0x50300000)
_PIO_RXF0 = const(0x20)  # RXF0..RXF3 at 0x20 + 4 * state machine
_DREQ_PIO_RX0 = (4, 12)  # DREQ_PIO0_RX0, DREQ_PIO1_RX0: + the state machine's number
_TREQ_PERMANENT = const(0x3F)
_SM_FREQ = const(16_000_000)  # 4 PIO cycles a bit: SCLK 4 MHz, a 192-bit frame in about 52 us
_SPI_SETUP_BAUD = const(1_000_000)
_SPI_DEFAULT_PINS = ((18, 19, 16), (10, 11, 8))  # (sck, mosi, miso) MicroPython's rpi_pico uses for SPI0, SPI1
_SHIFT = const(18)  # a FIFO word is the 24-bit code << 8; >> 18 leaves its top 14 bits: -8192..8191 counts
_RING_MAX = const(128)
_TX_MARGIN_US = const(2000)


@micropython.native
def _split(raw, first, n, out):
    # One channel of one slot: every _FRAME_WORDS-th word from first. A word is the ADC's
    # 24-bit two's complement sample left-aligned in a signed 32-bit word (the PIO shifts 8
    # zero bits in after it); >> _SHIFT keeps its top 14 bits, the counts the tap works in
    # (boards.ADC_MAX = 8191 at the ADC's positive full scale, -8192 at its negative).
    p = first
    for j in range(n):
        out[j] = raw[p] >> _SHIFT
        p += _FRAME_WORDS


def _frame_reader(drdy):
    """The PIO program: at each falling edge of DRDY (GPIO drdy) read one frame in SPI
    mode 1 (SCLK idle low, the ADC shifts out on the rising edge, sampled before the falling
    one) while MOSI stays low (the NULL command); each 24-bit word is pushed left-aligned
    (8 zero bits shifted in after it), so the FIFO word is signed like the sample."""

    @rp2.asm_pio(set_init=rp2.PIO.OUT_HIGH, sideset_init=rp2.PIO.OUT_LOW, in_shiftdir=rp2.PIO.SHIFT_LEFT,
                 autopush=True, push_thresh=32, fifo_join=rp2.PIO.JOIN_RX)
    def program():
        wrap_target()
        wait(1, gpio, drdy).side(0)  # an edge, not a level: DRDY may still be low from the last frame
        wait(0, gpio, drdy).side(0)
        set(pins, 0).side(0)  # CS low
        set(y, 7).side(0)  # 8 words
        label("word")
        set(x, 23).side(0)  # of 24 bits
        label("bit")
        nop().side(1)[1]  # SCLK rises: the ADC puts out the next bit
        in_(pins, 1).side(0)  # SCLK falls: the bit, valid since the rising edge, is taken
        jmp(x_dec, "bit").side(0)
        in_(null, 8).side(0)  # left-align: reaches 32 bits, autopush
        jmp(y_dec, "word").side(0)
        set(pins, 1).side(0)  # CS high
        wrap()

    return program


def _claim_dma():
    # unannotated on purpose: the stubs lack DMA's register attributes (channel, write),
    # which MicroPython's rp2.DMA has; mypy takes the result as Any
    return rp2.DMA()


def _ring_slots(block, fs, uarts):
    """Slots in the ring: enough to cover both buses sending their longest frame in one
    step (the loop waits for txdone), a power of two (the DMA's address ring)."""
    slowest = min(u["baud"] for u in uarts) if uarts else 115200
    tx_us = len(uarts) * catalog.MAX_ENCODED * 10 * 1000000 // slowest
    block_us = block * 1000000 // fs
    need = tx_us // block_us + 4
    n = 4
    while n < need and n < _RING_MAX:
        n *= 2
    return n


class Rs485:
    """One RS-485 bus: a UART and the transceiver's driver enable. The receiver is assumed
    disabled while the driver is on (/RE tied to DE), so the tap does not read its own frames."""

    def __init__(self, uart_id, baud, de_pin, tx_pin=None, rx_pin=None):
        self._de = machine.Pin(de_pin, machine.Pin.OUT, value=0)  # listening until the tap answers
        if tx_pin is None or rx_pin is None:
            self._uart = machine.UART(uart_id, baudrate=baud, bits=8, parity=None, stop=1, timeout=0,
                                      txbuf=catalog.MAX_ENCODED + 16, rxbuf=1024)
        else:
            self._uart = machine.UART(uart_id, baudrate=baud, bits=8, parity=None, stop=1, timeout=0,
                                      txbuf=catalog.MAX_ENCODED + 16, rxbuf=1024,
                                      tx=machine.Pin(tx_pin), rx=machine.Pin(rx_pin))
        self._us_per_byte = 10 * 1000000 // baud + 1
        self.closed = False  # a bus on wires does not hang up (SimUart's can)
        self.tx_timeouts = 0

    def readinto(self, buf):
        """Bytes received since the last call (0 when none); never waits."""
        if not self._uart.any():
            return 0
        return self._uart.readinto(buf) or 0

    def write(self, buf, n):
        self._de.value(1)
        self._uart.write(memoryview(buf)[:n])
        # the driver stays on until the stop bit of the last byte has left the shift register
        start = time.ticks_us()
        limit = n * self._us_per_byte + _TX_MARGIN_US
        while not self._uart.txdone():
            if time.ticks_diff(time.ticks_us(), start) > limit:
                self.tx_timeouts += 1  # a stuck UART: free the bus rather than hold it for ever
                break
        self._de.value(0)

    def close(self):
        self._de.value(0)
        self._uart.deinit()


class Relay:
    def __init__(self, desc):
        if "set_pin" in desc or "reset_pin" in desc:
            raise ValueError("relay: pulsed (latching) coil drive is not written yet")
        if desc.get("feedback_pin") is None:
            # relays.py confirms every transfer by the contacts; without them it would only guess
            raise ValueError("relay: no feedback_pin: a rack tap needs contact feedback")
        self._on = desc.get("coil_active_level", 1)
        pin = machine.Pin(desc["coil_pin"])  # not reconfigured: after a soft reboot it still drives the coil
        level = pin.value()  # after a hardware reset the pad is an input, pulled low: the coil is off
        self._coil = machine.Pin(desc["coil_pin"], machine.Pin.OUT, value=level)
        self.driven = level == self._on
        pull = {"up": machine.Pin.PULL_UP, "down": machine.Pin.PULL_DOWN}.get(desc.get("feedback_pull"))
        if pull is None:
            self._feedback = machine.Pin(desc["feedback_pin"], machine.Pin.IN)
        else:
            self._feedback = machine.Pin(desc["feedback_pin"], machine.Pin.IN, pull)
        self._closed_level = desc["feedback_closed_level"]

    def drive(self, closed):
        self.driven = bool(closed)
        self._coil.value(self._on if closed else 1 - self._on)

    def contacts_closed(self):
        return self._feedback.value() == self._closed_level


class Ads131m06:
    """The ADC's register setup, over the RP2040's SPI before the PIO takes the pins."""

    def __init__(self, spi_id, sck, mosi, miso, cs):
        self._cs = machine.Pin(cs, machine.Pin.OUT, value=1)
        self._spi = machine.SPI(spi_id, baudrate=_SPI_SETUP_BAUD, polarity=0, phase=1, bits=8,
                                sck=machine.Pin(sck), mosi=machine.Pin(mosi), miso=machine.Pin(miso))
        self._out = bytearray(_FRAME_WORDS * _WORD_BYTES)
        self._in = bytearray(_FRAME_WORDS * _WORD_BYTES)

    def frame(self, command, data=()):
        """One full frame: the command and its data words out, the first word in (the answer
        to the previous frame's command)."""
        out = self._out
        for i in range(len(out)):
            out[i] = 0
        words = [command]
        words.extend(data)
        for i in range(len(words)):
            out[3 * i] = words[i] >> 8  # 16-bit command/register words, left-aligned in 24 bits
            out[3 * i + 1] = words[i] & 0xFF
        self._cs.value(0)
        self._spi.write_readinto(out, self._in)
        self._cs.value(1)
        return (self._in[0] << 8) | self._in[1]

    def read_register(self, address):
        self.frame(_CMD_RREG | (address << 7))
        return self.frame(_CMD_NULL)

    def setup(self, clkin_hz, fs, gains):
        """RESET, check the part, write MODE, CLOCK, GAIN1, GAIN2, read them back. Raises
        OSError naming what did not answer as the datasheet says. The RESET answer (0xFF26)
        and the ID layout are read from the datasheet, not from a part: a bench check."""
        osr = clkin_hz // 2 // fs  # fMOD = fCLKIN / 2, data rate = fMOD / OSR
        if osr not in _OSR_CODES or clkin_hz // 2 // osr != fs:
            raise ValueError("ADS131M06: no OSR gives %d SPS from CLKIN %d Hz" % (fs, clkin_hz))
        codes = []
        for g in gains:
            if g not in (1, 2, 4, 8, 16, 32, 64, 128):
                raise ValueError("ADS131M06: PGA gain %d" % g)
            codes.append(len(bin(g)) - 3)  # log2
        wanted = (_MODE, _CLOCK_CHANNELS | (_OSR_CODES[osr] << 2) | _CLOCK_PWR_HR,
                  (codes[3] << 12) | (codes[2] << 8) | (codes[1] << 4) | codes[0], (codes[5] << 4) | codes[4])
        self.frame(_CMD_RESET)
        time.sleep_ms(2)  # the registers are back at their defaults well within this
        answer = self.frame(_CMD_NULL)
        if answer != _ACK_RESET:
            raise OSError("ADS131M06: RESET answered 0x%04x, not 0x%04x" % (answer, _ACK_RESET))
        chip_id = self.read_register(_REG_ID)
        if (chip_id >> 8) & 0x0F != 6:
            raise OSError("ADS131M06: ID 0x%04x does not say six channels" % chip_id)
        self.frame(_CMD_WREG | (_REG_MODE << 7) | (len(wanted) - 1), wanted)
        answer = self.frame(_CMD_NULL)
        if answer != _ACK_WREG | (_REG_MODE << 7) | (len(wanted) - 1):
            raise OSError("ADS131M06: WREG answered 0x%04x" % answer)
        for i in range(len(wanted)):
            got = self.read_register(_REG_MODE + i)
            if got != wanted[i]:
                raise OSError("ADS131M06: register 0x%02x reads 0x%04x, wrote 0x%04x" % (_REG_MODE + i, got,
                                                                                        wanted[i]))
        return wanted

    def release(self):
        self._spi.deinit()  # the PIO takes SCLK and CS over; MISO is only read


class Rp2040Hal:
    def __init__(self, board):
        hw = board["hal"]
        adc = hw["adc"]
        self.n_inputs = board["n_inputs"]
        self.block = board["block"]
        n = self.n_inputs
        block = self.block
        self.volts = [array("h", bytearray(2 * block)) for _ in range(n)]
        self.amps = array("h", bytearray(2 * block))
        self.aux = [array("h", bytearray(2 * block)) for _ in range(board.get("n_aux", 0))]
        self._volts_ch = adc.get("volts_channels", list(range(n)))
        self._amps_ch = adc.get("amps_channel", 4)
        self._aux_ch = adc.get("aux_channels", [])
        if len(self._volts_ch) != n or len(self._aux_ch) != len(self.aux):
            raise ValueError("hal.adc: one channel per input voltage and per aux signal")
        self.ticks_us = time.ticks_us
        self.ticks_diff = time.ticks_diff
        # relays first: their coils hold whatever they held through the reset (relays.py adopts it)
        if len(hw["relays"]) != n:
            raise ValueError("hal.relays: one per input")
        self._relays = [Relay(r) for r in hw["relays"]]
        self.uarts = [Rs485(u["id"], u["baud"], u["de_pin"], u.get("tx_pin"), u.get("rx_pin")) for u in hw["uarts"]]
        self._wdt = None
        self._watchdog_ms = board.get("watchdog_ms", 0)
        self._unique_id = machine.unique_id()
        self._temp = machine.ADC(4)  # the RP2040's own sensor: the description names no other
        # the ring of block slots, filled by DMA; its slot address table, aligned for the DMA's ring
        self.slots = _ring_slots(block, board["fs"], hw["uarts"])
        self._slot_words = block * _FRAME_WORDS
        self.raw = array("i", bytearray(4 * self.slots * self._slot_words))
        self._ring = uctypes.addressof(self.raw)
        self._table_store = array("I", bytearray(8 * self.slots))
        table_bytes = 4 * self.slots
        skip = (-uctypes.addressof(self._table_store)) % table_bytes // 4
        self._table = memoryview(self._table_store)[skip:skip + self.slots]
        for s in range(self.slots):
            self._table[s] = self._ring + 4 * s * self._slot_words
        self._table_addr = uctypes.addressof(self._table)
        self._next = 0  # the slot exchange() hands over next
        self._last_us = time.ticks_us()
        self._block_us = block * 1000000 // board["fs"]
        self.overruns = 0  # blocks lost because the loop fell a ring behind
        self.bad_frames = 0  # blocks whose first word was not a status word
        self.blocks = 0
        sm_id = adc.get("pio_sm", 0)
        sck, mosi, miso = _SPI_DEFAULT_PINS[adc["spi"]]
        sck = adc.get("sck_pin", sck)
        mosi = adc.get("mosi_pin", mosi)
        miso = adc.get("miso_pin", miso)
        chip = Ads131m06(adc["spi"], sck, mosi, miso, adc["cs_pin"])
        self.registers = chip.setup(adc.get("clkin_hz", 8192000), board["fs"], adc.get("gains", [1] * 6))
        chip.release()
        machine.Pin(mosi, machine.Pin.OUT, value=0)  # every word out is 0: the NULL command
        machine.Pin(miso, machine.Pin.IN)
        machine.Pin(adc["drdy_pin"], machine.Pin.IN)
        self._sm = rp2.StateMachine(sm_id, _frame_reader(adc["drdy_pin"]), freq=_SM_FREQ,
                                    in_base=machine.Pin(miso), set_base=machine.Pin(adc["cs_pin"]),
                                    sideset_base=machine.Pin(sck))
        self._data = _claim_dma()
        self._control = _claim_dma()
        self._start(sm_id)

    def _start(self, sm_id):
        pio = sm_id // 4
        sm = sm_id % 4
        data = self._data
        control = self._control
        slots = self.slots
        ring_bits = 2
        while (1 << ring_bits) < 4 * slots:
            ring_bits += 1
        data.config(read=_PIO_BASES[pio] + _PIO_RXF0 + 4 * sm, write=self._ring, count=self._slot_words,
                    ctrl=data.pack_ctrl(size=2, inc_read=False, inc_write=True, treq_sel=_DREQ_PIO_RX0[pio] + sm,
                                        chain_to=control.channel, irq_quiet=True))
        control.config(read=self._table_addr + 4, write=_DMA_BASE + _DMA_CHANNEL_STRIDE * data.channel
                       + _DMA_AL2_WRITE_ADDR_TRIG, count=1,
                       ctrl=control.pack_ctrl(size=2, inc_read=True, inc_write=False, ring_size=ring_bits,
                                              ring_sel=False, treq_sel=_TREQ_PERMANENT, chain_to=control.channel,
                                              irq_quiet=True))
        data.active(1)  # waits on the PIO's RX DREQ: nothing moves before the first frame
        self._next = 0
        self._last_us = time.ticks_us()
        self._sm.active(1)

    def _filling(self):
        """The slot the DMA is writing now (after the last slot, before the control channel
        has re-aimed it, the address is the ring's end: slot 0, which is right)."""
        return (self._data.write - self._ring) // (4 * self._slot_words) % self.slots

    def exchange(self):
        """Wait for the next full slot and split it into volts, amps (and aux) counts. The
        coils are driven as drive() is called: nothing to send."""
        slots = self.slots
        filling = self._filling()
        while filling == self._next:
            filling = self._filling()
        now = time.ticks_us()
        lag = (filling - self._next) % slots
        if lag > slots - 3 or time.ticks_diff(now, self._last_us) > (slots - 3) * self._block_us:
            # a ring behind: the slot due may be under the DMA right now; take the newest full one
            self.overruns += 1
            self._next = (filling - 1) % slots
        self._last_us = now
        first = self._next * self._slot_words
        raw = self.raw
        if (raw[first] >> 16) & 0x0300 != _STATUS_24BIT_WORDS:
            self.bad_frames += 1  # words lost or shifted: the frame is not where a frame should be
        block = self.block
        for i in range(len(self.volts)):
            _split(raw, first + 1 + self._volts_ch[i], block, self.volts[i])
        _split(raw, first + 1 + self._amps_ch, block, self.amps)
        for i in range(len(self.aux)):
            _split(raw, first + 1 + self._aux_ch[i], block, self.aux[i])
        self._next = (self._next + 1) % slots
        self.blocks += 1

    def drive(self, k, closed):
        self._relays[k - 1].drive(closed)

    def coil(self, k):
        return self._relays[k - 1].driven

    def feedback(self, k):
        return self._relays[k - 1].contacts_closed()

    def temperature_dC(self):
        # RP2040 datasheet 4.9.5: T = 27 - (V - 0.706) / 0.001721, V on the 3.3 V reference
        uv = self._temp.read_u16() * 3300000 // 65535
        return 270 - (uv - 706000) * 10 // 1721

    def unique_id(self):
        return self._unique_id

    def wdt_feed(self):
        if self._wdt is None:
            if not self._watchdog_ms:
                return
            # started at the first feed, after the Tap is built: a slow start cannot bite
            self._wdt = machine.WDT(timeout=self._watchdog_ms)
        self._wdt.feed()

    def reset(self):
        machine.reset()

    def close(self):
        self._sm.active(0)
        self._data.active(0)
        self._control.active(0)
        self._data.close()
        self._control.close()
        for uart in self.uarts:
            uart.close()
