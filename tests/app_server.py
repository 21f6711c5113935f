"""Start ``python app.py --port <free port>`` as a subprocess, wait until it answers, stop it.

Used by the API and browser tests and by ``benchmarks/app_browser.py``::

    with AppServer("--threads", "1") as server:
        Client(server.url)
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_MARK = "lesionseg app: ready at"  # printed by lesionseg.ui.launch.launch once the server is up
QUIET_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
             "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when the thread that started it dies (no
    orphan servers after a killed test run); start servers from the main thread."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux / glibc: stop() still ends it when the tests finish normally


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class AppServerError(RuntimeError):
    """The app did not start; the message ends with the tail of its output."""


class AppServer:
    """``python app.py --port <free port> *args`` in the repository root, as a context manager.

    ``url`` is set once the server answers HTTP; ``log`` is its combined stdout / stderr.
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None, startup_timeout: float = 300.0,
                 host: str = "127.0.0.1"):
        self.args = list(args)
        self.env = {**os.environ, **QUIET_ENV, **(env or {})}
        self.startup_timeout = startup_timeout
        self.host = host
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}/"
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="lesionseg-app-", suffix=".log", delete=False)

    @property
    def log(self) -> str:
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    def _ready(self) -> bool:
        """The app printed its ready line (after launch() returned) and answers HTTP."""
        return READY_MARK in self.log and self._answers()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "gradio_api/info", timeout=5) as r:
                return r.status == 200
        except urllib.error.HTTPError as e:
            return e.code in (401, 403)  # running, behind a login
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> "AppServer":
        cmd = [sys.executable, "app.py", "--port", str(self.port), "--host", self.host, *self.args]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True,  # own process group: stop() reaches all of it
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AppServerError(f"app.py exited with code {self.proc.returncode}:\n{self.log[-3000:]}")
            if self._ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise AppServerError(f"app.py did not answer within {self.startup_timeout:.0f} s:\n{self.log[-3000:]}")

    def stop(self) -> None:
        """SIGTERM (the app shuts down as on Ctrl-C and removes its temp files), then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)  # its own session: the app and anything it started
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> "AppServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)
