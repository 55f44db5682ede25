"""Frame codec benchmark: host and firmware speed, firmware allocation, wire overhead.

Run from the repository root: `.venv/bin/python benchmarks/codec.py` (under 10 s here).
The frames are the golden vectors "telemetry request" and "telemetry response,
4 inputs" of protocol/vectors/frames.json. Prints markdown tables for RESULTS.md.

1. Host: host/wire/framing.py as shipped (C extensions `cobs` and `crcmod`) against the
   same encode_frame / StreamDecoder with the byte work swapped for the pure-Python
   COBS below and binascii.crc32, so the ratio is what the C extensions buy.
2. Firmware: firmware/framing.py compiled by mpy-cross and run on MicroPython's unix
   port with the RP2040's heap, as flashed (@micropython.native) and as plain
   bytecode (the decorators stripped from a copy).
3. Wire: one telemetry poll against the Modbus RTU exchange (function 0x03) that
   would carry the same values.
"""

from __future__ import annotations

import binascii
import json
import math
import os
import platform
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

from host.build import firmware_build
from host.wire import framing, messages
from protocol import catalog

VECTORS = firmware_build.ROOT / "protocol" / "vectors" / "frames.json"
REQUEST_VECTOR = "telemetry request"
RESPONSE_VECTOR = "telemetry response, 4 inputs"
BOARD_HEAP = "190K"  # what an RP2040 leaves MicroPython, as in tests/conftest.py
HOST_FRAMES = 50_000  # per timed run on the host
REPEATS = 7  # timed runs per figure; the best one counts
MP_FRAMES = 5_000  # per timed run on MicroPython
MP_ALLOC_FRAMES = 256  # frames in the allocation count (the gc is off meanwhile)
MODBUS_FIXED_T35_MS = 1.75  # Modbus over serial line V1.02, 2.5.1.1: fixed t3.5 above 19200 baud

# Runs on MicroPython. argv: body hex, wire hex, frames per timed run, repeats,
# frames counted for allocation. Prints one JSON line.
MP_SCRIPT = """\
import binascii
import gc
import json
import sys
import time

from firmware.framing import Decoder, Encoder

BODY = binascii.unhexlify(sys.argv[1])
WIRE = binascii.unhexlify(sys.argv[2])
FRAMES = int(sys.argv[3])
REPEATS = int(sys.argv[4])
ALLOC_FRAMES = int(sys.argv[5])


def encode_loop(enc, n, frames):
    for _ in range(frames):
        enc.encode(n)


def decode_loop(dec, wire, w, frames):
    for _ in range(frames):
        dec.feed(wire, 0, w)


def best_us(loop, codec, *args):
    best = None
    for _ in range(REPEATS):
        t0 = time.ticks_us()
        loop(codec, *args, FRAMES)
        dt = time.ticks_diff(time.ticks_us(), t0)
        if best is None or dt < best:
            best = dt
    return best / FRAMES


def alloc_per_frame(loop, codec, *args):
    loop(codec, *args, 1)  # warm-up frame
    gc.collect()
    gc.disable()  # a collection inside the loop would hide allocations
    before = gc.mem_alloc()
    loop(codec, *args, ALLOC_FRAMES)
    after = gc.mem_alloc()
    gc.enable()
    return (after - before) / ALLOC_FRAMES


enc = Encoder()
enc.body[: len(BODY)] = BODY
dec = Decoder()
enc_args = (len(BODY),)
dec_args = (WIRE, len(WIRE))
encode_alloc = alloc_per_frame(encode_loop, enc, *enc_args)
decode_alloc = alloc_per_frame(decode_loop, dec, *dec_args)
m = enc.encode(len(BODY))
print(json.dumps({
    "encode_us": best_us(encode_loop, enc, *enc_args),
    "decode_us": best_us(decode_loop, dec, *dec_args),
    "encode_alloc": encode_alloc,
    "decode_alloc": decode_alloc,
    "encode_ok": bytes(enc.out[:m]) == WIRE,
    "decode_ok": dec.result == len(BODY) and bytes(dec.body[: len(BODY)]) == BODY,
}))
"""


# -- the frames ------------------------------------------------------------------------


def load_vector(name: str) -> tuple[bytes, bytes]:
    """(body, wire) of a golden vector."""
    for case in json.loads(VECTORS.read_text())["good"]:
        if case["name"] == name:
            return bytes.fromhex(case["body"]), bytes.fromhex(case["wire"])
    raise KeyError(name)


# -- 1. host ---------------------------------------------------------------------------


class PureCobsError(ValueError):
    """Not a COBS encoding."""


def py_cobs_encode(data: bytes) -> bytes:
    """COBS in pure Python, block by block (bytes.split does the zero search)."""
    out = bytearray()
    chunks = data.split(b"\x00")
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        while len(chunk) >= 254:
            out.append(0xFF)
            out += chunk[:254]
            chunk = chunk[254:]
            if last and not chunk:
                return bytes(out)  # a final full block carries no implied zero
        out.append(len(chunk) + 1)
        out += chunk
    return bytes(out)


def py_cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        end = i + code
        if code == 0 or end > len(data) or 0 in data[i + 1 : end]:
            raise PureCobsError("not a COBS encoding")
        out += data[i + 1 : end]
        i = end
        if code < 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


PURE_COBS = SimpleNamespace(encode=py_cobs_encode, decode=py_cobs_decode, DecodeError=PureCobsError)


def pure_python_framing() -> AbstractContextManager[object]:
    """Patch host/wire/framing.py to do its byte work in pure Python + binascii.crc32."""
    return mock.patch.multiple(framing, cobs=PURE_COBS, _crc32=binascii.crc32)


def frames_per_second(step: Callable[[], object], frames: int = HOST_FRAMES) -> float:
    best = math.inf
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(frames):
            step()
        best = min(best, time.perf_counter() - start)
    return frames / best


def host_rates(body: bytes, wire: bytes) -> dict[str, float]:
    """Frames per second through encode_frame and StreamDecoder.feed, one frame a call."""
    if framing.encode_frame(body) != wire or framing.StreamDecoder().feed(wire) != [body]:
        raise AssertionError("host codec disagrees with the golden vector")
    decoder = framing.StreamDecoder()
    return {
        "encode": frames_per_second(lambda: framing.encode_frame(body)),
        "decode": frames_per_second(lambda: decoder.feed(wire)),
    }


# -- 2. firmware -----------------------------------------------------------------------


def bytecode_sources(dest: Path) -> Path:
    """A copy of firmware/ and protocol/ whose framing.py has no native decorators."""
    for package in firmware_build.PACKAGES:
        shutil.copytree(firmware_build.ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    framing_py = dest / "firmware" / "framing.py"
    framing_py.write_text(firmware_build.strip_native(framing_py.read_text()))
    return dest


def run_micropython(tree: Path, script: Path, *args: str) -> str:
    command = [firmware_build.micropython_command(), "-X", f"heapsize={BOARD_HEAP}", str(script), *args]
    env = dict(os.environ, MICROPYPATH=str(tree))
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"micropython failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def firmware_figures(work: Path, body: bytes, wire: bytes) -> dict[str, dict[str, float]]:
    """Per-frame time and allocation of the firmware codec, as flashed and as bytecode."""
    script = work / "codec_bench.py"
    script.write_text(MP_SCRIPT)
    trees = {"native": work / "native", "bytecode": work / "bytecode"}
    firmware_build.compile_tree(trees["native"], firmware_build.ARCH_UNIX_X64)
    sources = bytecode_sources(work / "bytecode-src")
    firmware_build.compile_tree(trees["bytecode"], firmware_build.ARCH_UNIX_X64, root=sources)
    args = (body.hex(), wire.hex(), str(MP_FRAMES), str(REPEATS), str(MP_ALLOC_FRAMES))
    figures = {}
    for variant, tree in trees.items():
        figures[variant] = json.loads(run_micropython(tree, script, *args).splitlines()[-1])
        if not (figures[variant]["encode_ok"] and figures[variant]["decode_ok"]):
            raise AssertionError(f"firmware codec ({variant}) disagrees with the golden vector")
    return figures


def micropython_version() -> str:
    """e.g. "1.29.0-preview (9458e3a23f on 2026-07-05)"."""
    code = (
        "import sys; v = sys.implementation.version; "
        "print('%d.%d.%d' % v[:3], v[3] if len(v) > 3 else '', sys.version.split('MicroPython ')[-1], sep='|')"
    )
    out = subprocess.run([firmware_build.micropython_command(), "-c", code], capture_output=True, text=True, check=True)
    number, tag, build = out.stdout.strip().split("|")
    return f"{number}{'-' + tag if tag else ''} ({build})"


def crc_note(body: bytes) -> str:
    """The firmware's transmit CRC is a long int on 32-bit ports from 2**30 up; x64 cannot show that."""
    crc = binascii.crc32(body)
    size = "a small int" if crc < 2**30 else "a long int (allocates)"
    return f"CRC-32 of this body: 0x{crc:08x}, {size} on a 32-bit port such as the RP2040's"


# -- 3. wire ---------------------------------------------------------------------------


def registers(codes: tuple[str, ...]) -> int:
    """Modbus holding registers for these fields: each field rounded up to whole registers."""
    return sum(math.ceil(struct.calcsize("<" + code) / 2) for code in codes)


def telemetry_registers(body: bytes) -> int:
    frame = messages.parse_body(body)
    layout = messages.MESSAGES[frame.type].response
    if layout is None:
        raise AssertionError(f"{frame.name} has no response layout")
    count = registers(layout.codes)
    if layout.group is not None:
        name, _, element = layout.group
        count += len(frame.fields()[name]) * registers(element.codes)
    return count


def line_ms(chars: float, baud: int = catalog.DEFAULT_BAUD) -> float:
    return chars * catalog.BITS_PER_CHAR / baud * 1000


def chars_in(ms: float, baud: int = catalog.DEFAULT_BAUD) -> float:
    return ms / 1000 * baud / catalog.BITS_PER_CHAR


def wire_figures(request_wire: bytes, response_wire: bytes, n_registers: int) -> dict[str, dict[str, float]]:
    """Bytes of each frame and silent line time (in char-times) of one telemetry poll."""
    modbus = {
        "request": 8,  # address, function 0x03, start, count, CRC-16
        "response": 5 + 2 * n_registers,  # address, function, byte count, data, CRC-16
    }
    return {
        "IBT v1 (COBS + CRC-32, with 0x00 delimiters)": {
            "request": len(request_wire),
            "response": len(response_wire),
            "silent": 0,
        },
        f"Modbus RTU 0x03, {n_registers} registers, t3.5 = 3.5 chars before each frame": {
            **modbus,
            "silent": 2 * 3.5,
        },
        "same, t3.5 = 1.75 ms (Modbus spec's fixed value above 19200 baud)": {
            **modbus,
            "silent": 2 * chars_in(MODBUS_FIXED_T35_MS),
        },
    }


# -- report ----------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def host_table(c_ext: dict[str, float], pure: dict[str, float]) -> str:
    return table(
        ["host codec (CPython)", "encode frames/s", "decode frames/s"],
        [
            ["cobs + crcmod C extensions (as shipped)", f"{c_ext['encode']:,.0f}", f"{c_ext['decode']:,.0f}"],
            ["pure-Python COBS + binascii.crc32", f"{pure['encode']:,.0f}", f"{pure['decode']:,.0f}"],
            [
                "ratio C / pure Python",
                f"{c_ext['encode'] / pure['encode']:.1f}x",
                f"{c_ext['decode'] / pure['decode']:.1f}x",
            ],
        ],
    )


def firmware_table(figures: dict[str, dict[str, float]]) -> str:
    native, plain = figures["native"], figures["bytecode"]

    def row(name: str, f: dict[str, float]) -> list[str]:
        times = [f"{f['encode_us']:.2f}", f"{f['decode_us']:.2f}"]
        return [name, *times, f"{f['encode_alloc']:g}", f"{f['decode_alloc']:g}"]

    return table(
        [
            "firmware codec (MicroPython)",
            "encode µs/frame",
            "decode µs/frame",
            "encode B alloc/frame",
            "decode B alloc/frame",
        ],
        [
            row("@micropython.native (as flashed)", native),
            row("plain bytecode", plain),
            [
                "ratio bytecode / native",
                f"{plain['encode_us'] / native['encode_us']:.2f}x",
                f"{plain['decode_us'] / native['decode_us']:.2f}x",
                "",
                "",
            ],
        ],
    )


def wire_table(figures: dict[str, dict[str, float]]) -> str:
    """One row per exchange, then IBT against the first Modbus row (the 3.5-character count)."""
    rows, chars = [], []
    for name, f in figures.items():
        frame_bytes = f["request"] + f["response"]
        chars.append((frame_bytes, frame_bytes + f["silent"]))
        rows.append(
            [
                name,
                f"{f['request']:g}",
                f"{f['response']:g}",
                f"{frame_bytes:g}",
                f"{f['silent']:.1f}",
                f"{chars[-1][1]:.1f}",
                f"{line_ms(chars[-1][1]):.3f}",
            ]
        )
    (ibt_bytes, ibt_chars), (mb_bytes, mb_chars) = chars[0], chars[1]
    ratio = f"{ibt_chars / mb_chars:.2f}x"
    rows.append(["ratio IBT / Modbus (3.5 chars)", "", "", f"{ibt_bytes / mb_bytes:.2f}x", "", ratio, ratio])
    return table(
        [
            "telemetry poll",
            "request B",
            "response B",
            "bytes on wire",
            "silent char-times",
            "line char-times",
            f"line time ms @ {catalog.DEFAULT_BAUD} 8N1",
        ],
        rows,
    )


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}, "
        f"MicroPython {micropython_version()}, unix port, heap {BOARD_HEAP}"
    )


def main() -> None:
    _, request_wire = load_vector(REQUEST_VECTOR)
    body, wire = load_vector(RESPONSE_VECTOR)
    print(f"machine: {machine()}")
    print(f"frame: {RESPONSE_VECTOR!r}, body {len(body)} B, wire {len(wire)} B\n")

    c_ext = host_rates(body, wire)
    with pure_python_framing():
        pure = host_rates(body, wire)
    print(host_table(c_ext, pure), end="\n\n")

    with tempfile.TemporaryDirectory(prefix="codec-bench-") as work:
        print(firmware_table(firmware_figures(Path(work), body, wire)), end="\n\n")
    print(crc_note(body), end="\n\n")

    print(wire_table(wire_figures(request_wire, wire, telemetry_registers(body))))


if __name__ == "__main__":
    main()
