"""Running a virtual rig and talking to it while it runs: the control socket that `ibt sim
inject` and `ibt sim status` use, and the run until Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host.sim.rig.rig_layout import CONTROL_LINE_LIMIT, CONTROL_SOCKET, RigError

if TYPE_CHECKING:
    from host.sim.rig.virtual_rig import VirtualRig


class ControlServer:
    """A Unix socket taking one JSON request per line, answering each with one JSON line;
    one client at a time (commands are rare and quick)."""

    def __init__(self, path: Path, handle: Callable[[dict[str, Any]], Any]) -> None:
        self.path = path
        self._handle = handle
        self._stop = threading.Event()
        path.unlink(missing_ok=True)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(str(path))
        except OSError as exc:
            self._listener.close()
            raise RigError(f"cannot listen on {path}: {exc.strerror} (a shorter --workdir path may help)") from None
        path.chmod(0o600)
        self._listener.listen(4)
        self._listener.settimeout(0.2)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="rig-control", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    connection, _ = self._listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    self._serve(connection)
        finally:
            self._listener.close()
            self.path.unlink(missing_ok=True)

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(5.0)
        buffer = b""
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                chunk = connection.recv(4096)
                if not chunk:
                    return
                buffer += chunk
                if len(buffer) > CONTROL_LINE_LIMIT:
                    return
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    connection.sendall(json.dumps(self._answer(line)).encode() + b"\n")

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise RigError("a request is a JSON object")
            return {"ok": True, "result": self._handle(request)}
        except (RigError, ValueError, TypeError) as exc:
            return {"ok": False, "error": str(exc)}


def send_control(workdir: Path, request: dict[str, Any], timeout: float = 10.0) -> Any:
    """Send one request to the rig running in workdir; its result, or RigError with the
    rig's one-line reason (or why no rig answered)."""
    path = Path(workdir) / CONTROL_SOCKET
    if not path.exists():
        raise RigError(f"no rig running in {workdir} (no {CONTROL_SOCKET}): start one with `ibt sim`")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer = _read_line(sock)
        except (ConnectionRefusedError, FileNotFoundError):
            raise RigError(f"no rig running in {workdir} ({CONTROL_SOCKET} is left from a rig that stopped)") from None
        except OSError as exc:
            raise RigError(f"the rig in {workdir} did not answer: {exc}") from None
    if not answer.get("ok"):
        raise RigError(str(answer.get("error", "the rig refused the request")))
    return answer.get("result")


def _read_line(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("the rig closed the connection")
        data += chunk
    answer = json.loads(data)
    if not isinstance(answer, dict):
        raise OSError("not an answer")
    return answer


def default_workdir() -> Path:
    """Where `ibt sim` and `ibt sim inject` meet when no --workdir is given: one per user."""
    return Path(tempfile.gettempdir()) / f"ibt-sim-{os.getuid()}"


def run_until_stopped(
    rig: VirtualRig, on_ready: Callable[[VirtualRig], None], on_dead_tap: Callable[[str, int], None]
) -> None:
    """Start the rig and its control socket, call on_ready, run until SIGINT or SIGTERM, then
    stop everything. Call from the main thread. A signal during start-up interrupts it (what
    had started is stopped); a tap process that ends meanwhile is reported once."""
    stop = threading.Event()
    running = False

    def on_signal(signum: int, frame: object) -> None:
        if not running:
            raise KeyboardInterrupt  # start() stops what it started
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        rig.start()
        rig.serve_control()
        running = True
        on_ready(rig)
        reported: set[str] = set()
        while not stop.wait(0.5):
            for tap_id, code in rig.dead_taps().items():
                if tap_id not in reported:
                    reported.add(tap_id)
                    on_dead_tap(tap_id, code)
    except KeyboardInterrupt:
        pass
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stopping short
        try:
            rig.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
