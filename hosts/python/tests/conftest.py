"""A real Mosquitto per test, started on a free loopback port, as the Rust tests start it
(`support/mosquitto`): ready once its log says "running", killed at the end."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    def __init__(self, directory: Path, settings: str = "", port: int = 0):
        self.dir = directory
        self.settings = settings
        self.port = port or free_port()
        self.proc = None
        self.start()

    def start(self) -> None:
        conf = self.dir / "mosquitto.conf"
        # As root, Mosquitto drops to its own user, which may not write to our directory.
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{user}{self.settings}")
        log = self.dir / "mosquitto.log"
        log.write_text("")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        # Ready once every listener is bound: Mosquitto logs "... running". A connect to the
        # port would not do (it can meet itself, or someone else's listener).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start: {log.read_text()}")
            if any(line.endswith(" running") for line in log.read_text().splitlines()):
                return
            time.sleep(0.025)
        self.stop()
        raise RuntimeError(f"mosquitto did not report running within 5 s: {log.read_text()}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stops it: SIGTERM lets it save its sessions (with `persistence true`), SIGKILL not."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path):
    """Start one with `mosquitto(settings)`; every one started is killed at the end."""
    started = []

    def start(settings: str = "") -> Mosquitto:
        d = tmp_path / f"mosquitto-{len(started)}"
        d.mkdir()
        m = Mosquitto(d, settings)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()
