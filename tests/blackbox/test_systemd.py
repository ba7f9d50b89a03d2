"""The systemd unit (contrib/systemd/gslb.service) as systemd reads it, and gslb's sd_notify
readiness protocol seen by a fake service manager: a unix datagram socket the test binds and
names in ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import configparser
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from harness import FRA, ORIGIN, ROOT, Gslb, answer, two_site_zone

UNIT = ROOT / "contrib" / "systemd" / "gslb.service"


def _verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    # systemd-analyze checks that ExecStart's binary exists: the test copy runs this venv's gslb
    gslb = Path(sys.executable).parent / "gslb"
    assert gslb.exists(), gslb
    unit = tmp_path / "gslb.service"
    unit.write_text(text.replace("/opt/gslb/bin/gslb", str(gslb)))
    return subprocess.run([shutil.which("systemd-analyze") or "systemd-analyze", "verify", str(unit)],
                          capture_output=True, text=True, timeout=60)


def test_unit_passes_systemd_analyze_verify(tmp_path):
    done = _verify(tmp_path, UNIT.read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gslb.service" not in done.stdout + done.stderr, done.stdout + done.stderr


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    # the check above is worth something: a misspelt value and an unknown key are reported
    broken = UNIT.read_text().replace("Restart=on-failure", "Restart=on-failur\nBogusKey=1")
    done = _verify(tmp_path, broken)
    assert "on-failur" in done.stderr and "BogusKey" in done.stderr, done.stderr


def test_unit_runs_gslb_as_operators_run_dns():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    svc = unit["Service"]
    assert svc["Type"] == "notify"
    assert svc["User"] == "gslb"
    assert svc["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert svc["ProtectSystem"] == "strict"
    assert svc["StateDirectory"] == "gslb"
    assert "/etc/gslb/zones" in svc["ReadWritePaths"].split()
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["Restart"] == "on-failure"
    assert svc["ExecStart"].split()[1:] == ["serve", "-c", "/etc/gslb/gslb.yaml"]


def _messages(sock: socket.socket, until: str, timeout: float = 30.0) -> list[str]:
    """Datagrams received until one holds the line ``until`` (each datagram one message)."""
    sock.settimeout(timeout)
    got: list[str] = []
    while True:
        got.append(sock.recv(4096).decode())
        if until in got[-1].splitlines():
            return got


def test_ready_is_sent_once_dns_answers_then_reloading_and_stopping(tmp_path, backends, monkeypatch):
    fra, iad = backends(), backends()
    path = tmp_path / "notify.sock"
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))  # the server's environment is the test's
    server = Gslb(tmp_path / "srv", {"gslb.example.com.yaml": two_site_zone({"fra": fra.port, "iad": iad.port})},
                  {"region": "lab-1"})
    started: list[BaseException | None] = []

    def start() -> None:
        try:
            server.start(wait_for=ORIGIN)
            started.append(None)
        except BaseException as exc:  # reported by the main thread
            started.append(exc)

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    try:
        before = _messages(manager, "READY=1")
        # at the moment READY=1 arrives, a pool name is answered (first health round done) over
        # UDP and TCP
        assert answer(server) == {FRA}
        assert server.query(f"www.{ORIGIN}", "A", tcp=True).answer
        assert any(line.startswith("STATUS=serving 1 zone(s)") for line in before[-1].splitlines()), before
        starter.join(30)
        assert started == [None], started

        server.signal(signal.SIGHUP)
        reload_msgs = _messages(manager, "READY=1")
        assert "RELOADING=1" in reload_msgs[0].splitlines(), reload_msgs
        assert any(line.startswith("MONOTONIC_USEC=") for line in reload_msgs[0].splitlines()), reload_msgs
        assert answer(server) == {FRA}

        server.signal(signal.SIGTERM)
        stop_msgs = _messages(manager, "STOPPING=1")
        assert stop_msgs[-1] == "STOPPING=1", stop_msgs
        # STOPPING=1 comes as the shutdown starts; the process then exits by itself, cleanly
        assert server.proc is not None
        assert server.proc.wait(30) == 0
    finally:
        server.stop()
        manager.close()
