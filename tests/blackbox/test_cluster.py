"""Cluster mode end to end: redis-server, two ``gslb serve`` nodes and two ``gslb checker`` agents.

Every process is real and on loopback. The two regions disagree on purpose: each agent reads its
own copy of the zone whose fra check points at a different local backend, the way agents in
two regions see the network differently.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from harness import ROOT, Gslb, holds_for
from harness import eventually as _eventually
from redisd import RedisServer

#: a node or a site not there yet, a status entry not yet written: "not yet", poll again
eventually = partial(_eventually, ignoring=(OSError, StopIteration, KeyError))

ZONE = """\
zone: gslb.test
ns: [ns1.gslb.test]
records:
  ns1: {A: 192.0.2.53}
  www: {pool: web}
  www4: {pool: web4}
sites:
  fra: {location: [50.11, 8.68], addresses: [192.0.2.10], checks: [fra]}
  iad: {location: [38.95, -77.45], addresses: [198.51.100.20], checks: [iad]}
checks:
  fra: {type: http, port: FRA_PORT, path: /healthz, target: 127.0.0.1, interval: 0.5, timeout: 0.3, rise: 1, fall: 1}
  iad: {type: http, port: IAD_PORT, path: /healthz, target: 127.0.0.1, interval: 0.5, timeout: 0.3, rise: 1, fall: 1}
pools:
  web: {policy: failover, sites: [fra, iad], quorum: 0.5}
  web4: {policy: failover, sites: [fra, iad], quorum: 0.4}
"""
FRA = "192.0.2.10"
IAD = "198.51.100.20"
TOKEN = "cluster-test-token"


class Backend:
    """A local HTTP health endpoint whose status the test sets (200 or 503)."""

    def __init__(self) -> None:
        backend = self
        self.status = 200

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(backend.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class Checker:
    """A running ``gslb checker`` process."""

    def __init__(self, workdir: Path, region: str, state: str, zone_text: str) -> None:
        (workdir / "zones").mkdir(parents=True, exist_ok=True)
        (workdir / "zones" / "test.yaml").write_text(zone_text)
        (workdir / "gslb.yaml").write_text(yaml.safe_dump({"zones": "zones", "http": None}))
        self.log_file = workdir / "checker.log"
        self._log = open(self.log_file, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gslb", "checker", "--region", region, "--state", state,
             "-c", str(workdir / "gslb.yaml")],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Cluster:
    """Redis, local backends, two nodes and the agents; everything stopped by ``stop()``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        # also on a Unix socket (short path: sun_path holds about 100 bytes)
        self.sock = Path("/tmp") / f"gslb-cluster-{os.getpid()}-{time.monotonic_ns()}.sock"
        self.redis = RedisServer(tmp / "redis", unixsocket=self.sock).start()
        self.fra = Backend()
        self.fra_us = Backend()  # what us-east sees of fra
        self.iad = Backend()
        self.nodes: list[Gslb] = []
        self.checkers: dict[str, Checker] = {}  # by region (the latest one started)
        self.all_checkers: list[Checker] = []
        (tmp / "token").write_text(TOKEN + "\n")

    def zone(self, fra_port: int) -> str:
        return ZONE.replace("FRA_PORT", str(fra_port)).replace("IAD_PORT", str(self.iad.port))

    def start_node(self, index: int, state: str | None = None) -> Gslb:
        config = {"state": state or self.redis.url, "checks": False, "api_token_file": str(self.tmp / "token")}
        node = Gslb(self.tmp / f"node{index}", {"test.yaml": self.zone(self.fra.port)}, config)
        self.nodes.append(node)
        return node.start(wait_for="gslb.test.")

    def start_checker(self, region: str) -> Checker:
        port = self.fra_us.port if region == "us-east" else self.fra.port
        checker = Checker(self.tmp / f"checker-{region}-{len(self.all_checkers)}", region, self.redis.url,
                          self.zone(port))
        self.checkers[region] = checker
        self.all_checkers.append(checker)
        return checker

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        for checker in self.all_checkers:
            checker.stop()
        self.redis.stop()
        self.sock.unlink(missing_ok=True)
        for backend in (self.fra, self.fra_us, self.iad):
            backend.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def addresses(node: Gslb, name: str) -> list[str]:
    reply = node.query(name, "A")
    return sorted(rr.address for rrset in reply.answer for rr in rrset if hasattr(rr, "address"))


def status(node: Gslb) -> dict:
    with urllib.request.urlopen(node.http + "/api/v1/status", timeout=2) as r:
        return json.load(r)


def site(node: Gslb, name: str) -> dict:
    return next(s for s in status(node)["sites"] if s["site"] == name)


def put_override(node: Gslb, name: str, state: str) -> dict:
    req = urllib.request.Request(f"{node.http}/api/v1/sites/gslb.test/{name}/override", method="PUT",
                                 data=json.dumps({"state": state}).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=2) as r:
        return json.load(r)


def both(cluster: Cluster, name: str, expected: list[str]) -> bool:
    return all(addresses(node, name) == expected for node in cluster.nodes)


def test_quorum_staleness_and_redis_restart(cluster: Cluster) -> None:
    node1, node2 = cluster.start_node(1), cluster.start_node(2)
    cluster.start_checker("eu-west")
    cluster.start_checker("us-east")
    # both regions see both sites up: both nodes answer fra, identically
    eventually(lambda: set(site(node1, "fra")["regions"]) == {"eu-west", "us-east"}, what="two regions")
    assert both(cluster, "www.gslb.test", [FRA]) and both(cluster, "www4.gslb.test", [FRA])

    # fra down in one region of two: out with quorum 0.5 (1 of 2 is not more than half), in with 0.4
    cluster.fra_us.status = 503
    eventually(lambda: both(cluster, "www.gslb.test", [IAD]), what="failover with quorum 0.5")
    assert both(cluster, "www4.gslb.test", [FRA])
    regions = site(node2, "fra")["regions"]
    assert regions["us-east"]["state"] == "down" and regions["eu-west"]["state"] == "up"

    # down in both regions: out of both pools on both nodes
    cluster.fra.status = 503
    eventually(lambda: both(cluster, "www4.gslb.test", [IAD]), what="failover with quorum 0.4")
    assert both(cluster, "www.gslb.test", [IAD])
    cluster.fra.status = 200
    eventually(lambda: both(cluster, "www4.gslb.test", [FRA]), what="fra back for 0.4")

    # the us-east agent dies: its vote goes stale (3 x 0.5 s) and quorum is recomputed
    cluster.checkers["us-east"].stop(signal.SIGKILL)
    eventually(lambda: set(site(node1, "fra")["regions"]) == {"eu-west"}, what="stale us-east")
    eventually(lambda: both(cluster, "www.gslb.test", [FRA]), what="fra back for 0.5")

    # Redis goes away: answers continue from the last state, status says so
    cluster.fra.status = 503
    eventually(lambda: both(cluster, "www.gslb.test", [IAD]), what="fra down in eu-west")
    cluster.redis.stop()
    eventually(lambda: not status(node1)["state_backend"]["connected"], what="disconnected")
    assert not status(node2)["state_backend"]["connected"]
    # for longer than the results' stale_after (3 x 0.5 s): frozen, fra stays out throughout
    holds_for(lambda: both(cluster, "www.gslb.test", [IAD]), 2.0, what="fra out while Redis is down")
    # ... meanwhile fra recovers; once Redis is back, the agent's latest result converges both nodes
    cluster.fra.status = 200
    cluster.redis.start()
    eventually(lambda: all(status(n)["state_backend"]["connected"] for n in cluster.nodes),
               timeout=10, what="reconnected")
    eventually(lambda: both(cluster, "www.gslb.test", [FRA]), what="converged after Redis restart")


def test_override_through_one_node_applies_on_the_other_and_survives_restart(cluster: Cluster) -> None:
    node1, node2 = cluster.start_node(1), cluster.start_node(2)
    cluster.start_checker("eu-west")
    eventually(lambda: site(node1, "fra")["regions"].get("eu-west", {}).get("state") == "up",
               what="first results")
    assert both(cluster, "www.gslb.test", [FRA])
    assert put_override(node1, "fra", "drain")["override"] == "drain"
    eventually(lambda: addresses(node2, "www.gslb.test") == [IAD], timeout=1.5, what="override on node 2")
    assert site(node2, "fra")["override"] == "drain"
    # node 2 restarts: the override is still there (durable, in Redis)
    node2.stop()
    node2.start(wait_for="gslb.test.")
    assert addresses(node2, "www.gslb.test") == [IAD]
    assert site(node2, "fra")["state"] == "drain"
    # removed through node 2, gone on node 1
    put_override(node2, "fra", "auto")
    eventually(lambda: addresses(node1, "www.gslb.test") == [FRA], timeout=1.5, what="override removed")
    assert site(node1, "fra")["override"] is None


def redis_keys(cluster: Cluster, pattern: str) -> list[str]:
    import redis

    with redis.Redis(port=cluster.redis.port, decode_responses=True) as client:
        return sorted(client.scan_iter(match=pattern))


def test_two_agents_of_one_region_share_one_vote(cluster: Cluster) -> None:
    node1 = cluster.start_node(1)
    cluster.start_checker("eu-west")
    cluster.start_checker("eu-west")
    cluster.start_checker("us-east")
    eventually(lambda: set(site(node1, "fra")["regions"]) == {"eu-west", "us-east"}
               and set(site(node1, "iad")["regions"]) == {"eu-west", "us-east"}, what="two regions")
    # exactly one result per site per region in Redis, and two regions in the status
    expected = [f"gslb:v1:result:gslb.test:{s}:{r}" for s in ("fra", "iad") for r in ("eu-west", "us-east")]
    eventually(lambda: redis_keys(cluster, "gslb:v1:result:*") == expected, what="four result keys")
    # through several rounds of all three agents (interval 0.5 s), never a fifth key
    holds_for(lambda: redis_keys(cluster, "gslb:v1:result:*") == expected, 1.5, what="one key per site and region")
    for name in ("fra", "iad"):
        assert set(site(node1, name)["regions"]) == {"eu-west", "us-east"}
    # fra down for us-east only: 1 of 2 regions, not 1 of 3 votes -> out with quorum 0.5
    cluster.fra_us.status = 503
    eventually(lambda: addresses(node1, "www.gslb.test") == [IAD], what="failover with quorum 0.5")
    assert addresses(node1, "www4.gslb.test") == [FRA]
    assert len(redis_keys(cluster, "gslb:v1:result:*")) == 4


def test_node_over_a_unix_socket_survives_a_crafted_message(cluster: Cluster) -> None:
    import redis

    node1 = cluster.start_node(1, state=cluster.redis.unix_url)
    node2 = cluster.start_node(2)
    cluster.start_checker("eu-west")
    eventually(lambda: site(node1, "fra")["regions"].get("eu-west", {}).get("state") == "up",
               what="results over the Unix socket")
    assert status(node1)["state_backend"]["connected"] is True
    # a crafted message with times out of range: ignored, the status API keeps answering
    bomb = {"kind": "result", "zone": "gslb.test", "site": "iad", "region": "mars",
            "result": {"state": "down", "checked_at": 1e300, "stale_after": 1e300}}
    with redis.Redis(port=cluster.redis.port) as client:
        client.publish("gslb:v1:events", json.dumps(bomb))
    # an override through the socket node reaches the TCP node, and its removal through the TCP
    # node the socket node: both came on the channel after the crafted message, so each node has
    # read that message by the time it applies the override
    put_override(node1, "fra", "drain")
    eventually(lambda: addresses(node2, "www.gslb.test") == [IAD], timeout=1.5, what="override on node 2")
    put_override(node2, "fra", "auto")
    eventually(lambda: addresses(node1, "www.gslb.test") == [FRA], timeout=1.5, what="override removed on node 1")
    for node in cluster.nodes:
        assert "mars" not in site(node, "iad")["regions"]
    assert addresses(node1, "www.gslb.test") == [FRA]


def test_password_in_the_url_query_is_never_shown(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis-auth", password="s3cret-pw").start()
    node = Gslb(tmp_path / "node", {"test.yaml": ZONE.replace("FRA_PORT", "9").replace("IAD_PORT", "9")},
                {"state": f"redis://127.0.0.1:{server.port}/0?password=s3cret-pw", "checks": False})
    try:
        node.start(wait_for="gslb.test.")
        backend = status(node)["state_backend"]
        assert backend["connected"] is True
        assert backend["url"] == f"redis://127.0.0.1:{server.port}/0?password=***"
        assert "s3cret-pw" not in node.log() and "password=***" in node.log()
    finally:
        node.stop()
        server.stop()
