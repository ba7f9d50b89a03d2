"""gslb.sdnotify: the sd_notify datagram, to a path or an abstract socket, and its failures."""

from __future__ import annotations

import logging
import os
import socket

from gslb import sdnotify


def test_no_notify_socket_sends_nothing():
    assert sdnotify.notify("READY=1", env={}) is False


def test_sends_one_datagram_to_a_path(tmp_path):
    path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(path)
        assert sdnotify.notify("READY=1\nSTATUS=x", env={"NOTIFY_SOCKET": path}) is True
        assert manager.recv(100) == b"READY=1\nSTATUS=x"


def test_abstract_socket():
    name = f"gslb-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        assert sdnotify.notify("STOPPING=1", env={"NOTIFY_SOCKET": "@" + name}) is True
        assert manager.recv(100) == b"STOPPING=1"


def test_failures_are_logged_not_raised(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="gslb.sdnotify"):
        assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "absent")}) is False
        assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": "vsock:2:1"}) is False
    assert "cannot notify" in caplog.text and "not a unix socket path" in caplog.text


def test_reloading_carries_the_monotonic_time():
    lines = sdnotify.reloading().splitlines()
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0
