# The one definition of the IBT wire protocol v1: constants and message layouts.
#
# Loaded by both sides: the host (CPython) and the tap firmware (MicroPython,
# compiled by mpy-cross). So: plain tuples, ints and short strings only; no typing,
# no dataclasses, no imports. SPEC.md explains every rule; its message tables are
# generated from this file (python -m protocol.tools.spec_tables) and a test keeps them equal.

# -- versioning -----------------------------------------------------------------
VERSION = 1  # header byte 0; a receiver refuses any other value
PROTOCOL_MINOR = 3  # reported by IDENTIFY; minor revisions only append fields/types
# minor 1: READ_SETTINGS and SET_CALIBRATION; config_crc also covers the calibration
# minor 2: READ_ALTERNATES

# -- framing ----------------------------------------------------------------------
CRC_LEN = 4  # CRC-32 (IEEE, as binascii.crc32) of the body, little-endian
CRC_RESIDUE = 0x2144DF1C  # crc32(body + crc) of any intact frame
MAX_BODY = 320  # header + payload + auth trailer
MAX_DECODED = MAX_BODY + CRC_LEN
MAX_ENCODED = MAX_DECODED + (MAX_DECODED + 253) // 254  # COBS worst case, no delimiter
DELIMITER = 0

# -- header: version, dst, src, type, flags, seq ---------------------------------
HEADER_FMT = "<BBBBBH"
HEADER_LEN = 7

ADDR_HOST = 0
ADDR_TAP_MIN = 1
ADDR_TAP_MAX = 247
ADDR_UNASSIGNED = 254  # source address of a tap that has no address yet
ADDR_BROADCAST = 255

FLAG_RESPONSE = 0x01  # sent by a tap, answering the request with the same seq
FLAG_AUTH = 0x02  # an auth trailer (epoch, counter, tag) follows the payload
FLAG_CACHED = 0x04  # response replayed from the duplicate cache, not executed again
FLAGS_KNOWN = 0x07  # the other bits are reserved and must be zero

# -- authentication trailer: epoch, counter, tag ---------------------------------
AUTH_FMT = "<II"  # controller epoch, command counter; the tag follows
TAG_LEN = 16  # HMAC-SHA256 truncated to 128 bits
AUTH_LEN = 8 + TAG_LEN
KEY_LEN = 32
KEY_WRAP_LABEL = b"ibt-v1 key wrap"
KEY_CHECK_LABEL = b"ibt-v1 key check"

# -- timing (ms unless named) -----------------------------------------------------
DEFAULT_BAUD = 115200
BITS_PER_CHAR = 10  # 8N1
TURNAROUND_MIN_CHARS = 2  # a tap waits this long after the delimiter before driving
TURNAROUND_MAX_MS = 10  # a tap starts its answer within this
DISCOVER_SLOT_GUARD_CHARS = 4  # idle between discovery slots
DUPLICATE_CACHE_SIZE = 4  # answers to authenticated commands a tap keeps
MAX_RETRIES = 2  # host resends of one request, same bytes

# -- roles, protection states, curves, event codes --------------------------------
ROLE_RACK_TAP = 0
ROLE_SOURCE_MONITOR = 1

PROT_NORMAL = 0
PROT_PICKUP = 1  # overload timer running
PROT_TRIPPED = 2  # output opened by overload, awaiting a command
PROT_LOCKOUT = 3  # fault above breaking capacity: no transfer, wait for upstream clear
PROT_DOWNSTREAM_FAULT = 4  # transfer blocked: the fault is on the rack side
PROT_CHATTER = 5  # automatic transfers stopped after too many in a minute, until the host acts

CURVE_STANDARD_INVERSE = 1
CURVE_VERY_INVERSE = 2
CURVE_EXTREMELY_INVERSE = 3

ALARM_HOST_LOST = 0x0001  # a host heard since boot has sent nothing in the tap's epoch for the host timeout
ALARM_OVERTEMPERATURE = 0x0002
ALARM_RELAY_MISMATCH = 0x0004  # contact feedback disagrees with the commanded state
ALARM_AUTH_FAILURES = 0x0008  # bad tags seen since the last STATUS read
ALARM_NO_HEALTHY_ALTERNATE = 0x0010
ALARM_UNCALIBRATED = 0x0020  # running on a default the host did not set (a channel not calibrated, ...)
ALARM_BUS_A_SILENT = 0x0040
ALARM_BUS_B_SILENT = 0x0080

HOST_TIMEOUT_S = 10  # default: HOST_LOST after this long without the host

INPUT_PRESENT = 0x01
INPUT_HEALTHY = 0x02  # within the voltage, frequency and THD limits
INPUT_SETTLING = 0x04  # minor 3: the values come from a window that began before the present bit last changed
NO_CAPTURE_HELD = 0x10000  # NO_CAPTURE's detail when the tap holds no capture (above every u16 id)

CAPTURE_ARMED = 0
CAPTURE_READY = 1
TRIGGER_NOW = 0
TRIGGER_NEXT_EVENT = 1
CHANNEL_INPUT_VOLTAGE = 0
CHANNEL_OUTPUT_CURRENT = 1
RESET_FIRMWARE = 0  # restart the MCU, relays held

# SET_CALIBRATION: a channel's reading = nominal scale x gain_ppm / 10**6 x (RMS counts + offset_counts)
CAL_GAIN_NOMINAL_PPM = 1000000  # the board description's scale
CAL_GAIN_MIN_PPM = 950000  # -5%
CAL_GAIN_MAX_PPM = 1050000  # +5%
CAL_OFFSET_MAX_COUNTS = 64  # |offset_counts| at most this
CAL_SET = 0x01  # READ_SETTINGS channel state: set by SET_CALIBRATION (else the nominal scale)

EV_BOOT = 1
EV_SOURCE_LOST = 2
EV_TRANSFER = 3
EV_OVERLOAD_TRIP = 4
EV_LOCKOUT = 5
EV_DOWNSTREAM_FAULT = 6
EV_COMMAND = 7
EV_AUTH_FAILURE = 8
EV_HOST_LOST = 9
EV_RELAY_MISMATCH = 10

# -- error codes carried by NAK ------------------------------------------------------
ERRORS = (
    (1, "UNKNOWN_TYPE"),
    (2, "BAD_LENGTH"),
    (3, "BAD_VERSION"),
    (4, "BAD_HEADER"),
    (5, "AUTH_REQUIRED"),
    (6, "BAD_TAG"),
    (7, "REPLAY"),
    (8, "STALE_EPOCH"),
    (9, "EPOCH_NOT_RAISED"),
    (10, "CAS_MISMATCH"),
    (11, "OUT_OF_RANGE"),
    (12, "SOURCE_UNHEALTHY"),
    (13, "PROTECTION_LOCKOUT"),
    (14, "DOWNSTREAM_FAULT"),
    (15, "BUSY"),
    (16, "NOT_SUPPORTED"),
    (17, "BAD_ADDRESSING"),
    (18, "NO_CAPTURE"),
    (19, "INTERNAL"),
)
E_UNKNOWN_TYPE = 1
E_BAD_LENGTH = 2
E_BAD_VERSION = 3
E_BAD_HEADER = 4
E_AUTH_REQUIRED = 5
E_BAD_TAG = 6
E_REPLAY = 7
E_STALE_EPOCH = 8
E_EPOCH_NOT_RAISED = 9
E_CAS_MISMATCH = 10
E_OUT_OF_RANGE = 11
E_SOURCE_UNHEALTHY = 12
E_PROTECTION_LOCKOUT = 13
E_DOWNSTREAM_FAULT = 14
E_BUSY = 15
E_NOT_SUPPORTED = 16
E_BAD_ADDRESSING = 17
E_NO_CAPTURE = 18
E_INTERNAL = 19

# -- message layouts ------------------------------------------------------------------
# A field is (name, struct code, unit). Two special codes:
#   "*"  a repeated group: (name, "*", count_field, (fields...)); the count field comes
#        earlier in the same layout; the group is last.
#   "~"  the rest of the payload as bytes: (name, "~", unit); last.
GROUP = "*"
TAIL = "~"

# Who may address a message (bit set) and how it is answered.
UNICAST = 1
BROADCAST = 2

_NONE = ()

_INPUT = (
    ("voltage_mV", "I", "mV"),
    ("frequency_cHz", "H", "cHz"),
    ("thd_dpct", "H", "0.1%"),
    ("phase_cdeg", "h", "0.01deg"),
    ("state", "B", "bits"),
)

# one input's failover order: SET_ALTERNATES sets it, READ_ALTERNATES answers it
_RANKING = (
    ("for_input", "B", "index"),
    ("alternate_1", "B", "index"),
    ("alternate_2", "B", "index"),
    ("alternate_3", "B", "index"),
)

_EVENT = (
    ("time_ms", "I", "ms"),
    ("code", "B", "enum"),
    ("input", "B", "index"),
    ("value", "i", "per code"),
)

_CHANNEL = (
    ("kind", "B", "enum"),
    ("index", "B", "index"),
    ("scale_nu", "I", "nV|nA per LSB"),
)

_LIMITS = (
    ("curve", "B", "enum"),
    ("pickup_mA", "I", "mA"),
    ("tms_milli", "H", "0.001"),
    ("instantaneous_mA", "I", "mA"),
    ("undervoltage_mV", "I", "mV"),
    ("overvoltage_mV", "I", "mV"),
    ("frequency_low_cHz", "H", "cHz"),
    ("frequency_high_cHz", "H", "cHz"),
    ("thd_max_dpct", "H", "0.1%"),
)

_CALIBRATION = (
    ("kind", "B", "enum"),
    ("index", "B", "index"),
    ("gain_ppm", "I", "ppm"),
    ("offset_counts", "h", "counts"),
    ("state", "B", "bits"),
)

# the limits in force, in SET_LIMITS's layout, then every channel's calibration
_SETTINGS = _LIMITS + (  # noqa: RUF005 (concatenated: a starred display is not MicroPython's)
    ("n_channels", "B", "count"),
    ("channels", GROUP, "n_channels", _CALIBRATION),
)

_CAPTURE_INFO = (
    ("capture_id", "H", "id"),
    ("state", "B", "enum"),
    ("sample_rate_hz", "H", "Hz"),
    ("samples_per_channel", "H", "count"),
    ("total_bytes", "I", "bytes"),
    ("n_channels", "B", "count"),
    ("channels", GROUP, "n_channels", _CHANNEL),
)

# (type, name, authenticated, addressing, request layout, response layout)
# A response layout of None means the answer is ACK or NAK.
MESSAGES = (
    (0x01, "ACK", False, 0, None, (
        ("request_type", "B", "type"),
    )),
    (0x02, "NAK", False, 0, None, (
        ("request_type", "B", "type"),
        ("error", "B", "code"),
        ("detail", "I", "per error"),
    )),
    (0x10, "IDENTIFY", False, UNICAST, _NONE, (
        ("unique_id", "8s", "bytes"),
        ("board", "12s", "ascii"),
        ("firmware_major", "B", "version"),
        ("firmware_minor", "B", "version"),
        ("firmware_patch", "B", "version"),
        ("protocol_major", "B", "version"),
        ("protocol_minor", "B", "version"),
        ("role", "B", "enum"),
        ("n_inputs", "B", "count"),
        ("address", "B", "address"),
        ("epoch", "I", "epoch"),
        ("auth_counter", "I", "counter"),
        ("config_crc", "I", "crc32"),
    )),
    (0x11, "DISCOVER", False, BROADCAST, (
        ("uid_low", "8s", "bytes"),
        ("uid_high", "8s", "bytes"),
        ("slots", "B", "count"),
        ("slot_ms", "B", "ms"),
        ("salt", "B", "nonce"),
        ("scope", "B", "enum"),
    ), (
        ("unique_id", "8s", "bytes"),
        ("board", "12s", "ascii"),
        ("role", "B", "enum"),
        ("n_inputs", "B", "count"),
        ("slot", "B", "index"),
    )),
    (0x12, "ASSIGN_ADDRESS", True, UNICAST | BROADCAST, (
        ("unique_id", "8s", "bytes"),
        ("address", "B", "address"),
    ), None),
    (0x20, "TELEMETRY", False, UNICAST, _NONE, (
        ("uptime_s", "I", "s"),
        ("active_input", "B", "index"),
        ("relays_closed", "B", "bits"),
        ("protection", "B", "enum"),
        ("alarms", "H", "bits"),
        ("temperature_dC", "h", "0.1C"),
        ("current_mA", "I", "mA"),
        ("power_W", "i", "W"),
        ("apparent_VA", "I", "VA"),
        ("power_factor_milli", "h", "0.001"),
        ("transfers", "I", "count"),
        ("trips", "I", "count"),
        ("frames_bad", "I", "count"),
        ("n_inputs", "B", "count"),
        ("inputs", GROUP, "n_inputs", _INPUT),
    )),
    (0x21, "STATUS", False, UNICAST, _NONE, (
        ("active_input", "B", "index"),
        ("relays_closed", "B", "bits"),
        ("protection", "B", "enum"),
        ("alarms", "H", "bits"),
        ("epoch", "I", "epoch"),
        ("auth_counter", "I", "counter"),
        ("event_head", "I", "index"),
        ("config_crc", "I", "crc32"),
        ("alternates_for", "B", "index"),
        ("alternate_1", "B", "index"),
        ("alternate_2", "B", "index"),
        ("alternate_3", "B", "index"),
        ("host_silent_s", "H", "s"),
        ("boot_count", "I", "count"),  # minor 3: boots since flashing, persisted; names the event log's boot
    )),
    (0x22, "READ_SETTINGS", False, UNICAST, _NONE, _SETTINGS),
    (0x23, "READ_ALTERNATES", False, UNICAST, (
        ("for_input", "B", "index"),
    ), _RANKING),
    (0x30, "SWITCH", True, UNICAST, (
        ("expected_input", "B", "index"),
        ("target_input", "B", "index"),
    ), None),
    (0x31, "SET_ALTERNATES", True, UNICAST, _RANKING, None),
    (0x32, "SET_LIMITS", True, UNICAST, _LIMITS, None),
    (0x33, "SET_KEY", True, UNICAST, (
        ("wrapped_key", "32s", "bytes"),
        ("key_check", "4s", "bytes"),
    ), None),
    (0x34, "RAISE_EPOCH", True, UNICAST, (
        ("new_epoch", "I", "epoch"),
    ), None),
    (0x35, "RESET", True, UNICAST, (
        ("mode", "B", "enum"),
    ), None),
    (0x36, "SET_CALIBRATION", True, UNICAST, (
        ("kind", "B", "enum"),
        ("index", "B", "index"),
        ("gain_ppm", "I", "ppm"),
        ("offset_counts", "h", "counts"),
    ), None),
    (0x40, "READ_EVENTS", False, UNICAST, (
        ("since", "I", "index"),
        ("max_count", "B", "count"),
    ), (
        ("first", "I", "index"),
        ("head", "I", "index"),
        ("n_events", "B", "count"),
        ("events", GROUP, "n_events", _EVENT),
    )),
    (0x41, "CAPTURE_START", False, UNICAST, (
        ("capture_id", "H", "id"),
        ("trigger", "B", "enum"),
        ("cycles", "B", "count"),
    ), _CAPTURE_INFO),
    (0x42, "CAPTURE_INFO", False, UNICAST, (
        ("capture_id", "H", "id"),
    ), _CAPTURE_INFO),
    (0x43, "CAPTURE_READ", False, UNICAST, (
        ("capture_id", "H", "id"),
        ("offset", "I", "bytes"),
        ("length", "B", "bytes"),
    ), (
        ("capture_id", "H", "id"),
        ("offset", "I", "bytes"),
        ("total_bytes", "I", "bytes"),
        ("data", TAIL, "i16 LE"),
    )),
    (0x50, "HEALTH", False, UNICAST, _NONE, (
        ("temperature_dC", "h", "0.1C"),
        ("vibration_rms_mg", "H", "mg"),
        ("vibration_kurtosis_milli", "H", "0.001"),
        ("vibration_crest_milli", "H", "0.001"),
        ("ripple_dpct", "H", "0.1%"),
        ("thd_dpct", "H", "0.1%"),
        ("sensors_ok", "B", "bits"),
        ("age_ms", "H", "ms"),
    )),
    (0x60, "HEARTBEAT", False, UNICAST | BROADCAST, (
        ("epoch", "I", "epoch"),
    ), (
        ("epoch", "I", "epoch"),
        ("uptime_s", "I", "s"),
        ("alarms", "H", "bits"),
    )),
)

T_ACK = 0x01
T_NAK = 0x02
T_IDENTIFY = 0x10
T_DISCOVER = 0x11
T_ASSIGN_ADDRESS = 0x12
T_TELEMETRY = 0x20
T_STATUS = 0x21
T_READ_SETTINGS = 0x22
T_READ_ALTERNATES = 0x23
T_SWITCH = 0x30
T_SET_ALTERNATES = 0x31
T_SET_LIMITS = 0x32
T_SET_KEY = 0x33
T_RAISE_EPOCH = 0x34
T_RESET = 0x35
T_SET_CALIBRATION = 0x36
T_READ_EVENTS = 0x40
T_CAPTURE_START = 0x41
T_CAPTURE_INFO = 0x42
T_CAPTURE_READ = 0x43
T_HEALTH = 0x50
T_HEARTBEAT = 0x60
