"""``gslb serve --workers N``: DNS worker processes on the same UDP address (SO_REUSEPORT).

Black-box: the real server with two workers, queried with dnspython from many source ports (the
kernel spreads flows over the processes by address and port, so thirty ports reach both). Every
check waits with ``eventually`` (a ceiling for a slow machine, never a measured time).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request
from pathlib import Path

import dns.message
import dns.query

from backends import Backend
from harness import eventually

TOKEN = "workers-test-token"
PORTS = 30


def zone(backend_port: int, api: str = "192.0.2.80", interval: int = 60) -> str:
    return f"""
zone: w.example
ns: [ns1.w.example]
records:
  ns1: {{A: 192.0.2.53}}
  api: {{A: {api}}}
  www: {{pool: web}}
sites:
  fra: {{location: [50.11, 8.68], addresses: [127.0.0.1], checks: [web]}}
  iad: {{location: [38.95, -77.45], addresses: [127.0.0.2], checks: [web]}}
checks:
  web: {{type: http, port: {backend_port}, target: 127.0.0.1, interval: {interval}, timeout: 1, rise: 1, fall: 1}}
pools:
  web: {{policy: failover, sites: [fra, iad], ttl: 5}}
"""


SENT = [0]


def from_many_ports(server, qname: str, rdtype: str = "A") -> set[str]:
    """The answers to one question asked from PORTS different source ports."""
    answers = set()
    for _ in range(PORTS):
        SENT[0] += 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            q = dns.message.make_query(qname, rdtype)
            reply = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=2, sock=sock)
            answers.add(" ".join(sorted(r.to_text() for rrset in reply.answer for r in rrset)))
    return answers


def http_json(server, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.http + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def metric(server, name: str) -> float:
    with urllib.request.urlopen(server.http + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def start(gslb_server, tmp_path: Path, backend: Backend, **kw):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    return gslb_server({"w.yaml": zone(backend.port, **kw)}, config={"api_token_file": str(token), "workers": 2},
                       wait_for="api.w.example")


def test_two_workers_answer_on_one_address_and_are_listed(gslb_server, tmp_path):
    backend = Backend()
    try:
        server = start(gslb_server, tmp_path, backend)
        workers = http_json(server, "GET", "/api/v1/status")["workers"]
        assert [w["worker"] for w in workers] == [0, 1] and all(w["ready"] for w in workers)
        assert workers[0]["pid"] == server.proc.pid and workers[1]["pid"] != server.proc.pid
        assert from_many_ports(server, "api.w.example") == {"192.0.2.80"}
        assert from_many_ports(server, "www.w.example") == {"127.0.0.1"}
        # the kernel spread the sixty flows over both processes
        eventually(lambda: all(w["queries"] > 0 for w in http_json(server, "GET", "/api/v1/status")["workers"]),
                   what="both workers answered")
        # one health monitor: the first round probed each of the two targets once, not once per worker
        assert backend.requests == 2
    finally:
        backend.stop()


def test_overrides_reloads_and_counters_reach_every_worker(gslb_server, tmp_path):
    backend = Backend()
    try:
        server = start(gslb_server, tmp_path, backend)
        start_sent = SENT[0]
        assert from_many_ports(server, "www.w.example") == {"127.0.0.1"}  # fra, cached in every worker
        http_json(server, "PUT", "/api/v1/sites/w.example/fra/override", {"state": "down"})
        eventually(lambda: from_many_ports(server, "www.w.example") == {"127.0.0.2"}, what="override in every worker")
        (server.zones_dir / "w.yaml").write_text(zone(backend.port, api="192.0.2.81"))
        http_json(server, "POST", "/api/v1/reload")
        eventually(lambda: from_many_ports(server, "api.w.example") == {"192.0.2.81"}, what="reload in every worker")
        # every query of every worker is counted (workers report their counters every second)
        sent = SENT[0] - start_sent + 1  # and the harness's start-up probe
        eventually(lambda: metric(server, "gslb_queries_total") >= sent, what="queries of all workers counted")
    finally:
        backend.stop()


def test_a_worker_that_dies_is_restarted_and_its_counts_are_kept(gslb_server, tmp_path):
    backend = Backend()
    try:
        server = start(gslb_server, tmp_path, backend)
        from_many_ports(server, "api.w.example")
        eventually(lambda: metric(server, "gslb_queries_total") >= PORTS, what="counted")
        before = metric(server, "gslb_queries_total")
        pid = http_json(server, "GET", "/api/v1/status")["workers"][1]["pid"]
        os.kill(pid, signal.SIGKILL)

        def restarted():
            row = http_json(server, "GET", "/api/v1/status")["workers"][1]
            return row["ready"] and row["pid"] != pid and row["restarts"] == 1

        eventually(restarted, what="worker restarted")
        assert from_many_ports(server, "api.w.example") == {"192.0.2.80"}
        assert metric(server, "gslb_queries_total") >= before  # counters never go down
        assert "DNS worker 1" in server.log()
    finally:
        backend.stop()
    assert server.stop() == 0
    assert not any(p.isdigit() and _is_worker(int(p), pid) for p in os.listdir("/proc"))


def _is_worker(pid: int, old: int) -> bool:
    """Whether a process is a gslb DNS worker (none may outlive the server)."""
    try:
        return b"gslb.workers" in Path(f"/proc/{pid}/cmdline").read_bytes() and pid != old
    except OSError:
        return False
