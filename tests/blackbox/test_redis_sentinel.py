"""The shared site-state table through Redis Sentinel (``state: redis+sentinel://...``), with real
processes on loopback: a Redis master and its replica, two ``redis-sentinel`` processes watching
them, and two ``gslb serve`` nodes (one running the checks, one answering only). The master is
killed; the Sentinels promote the replica. Answers go on during the failover, the table converges
through the new master (an override and a check result written after the failover reach the other
node), and an override removed before the kill does not come back."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import redis
from harness import FRA, IAD, ORIGIN, Gslb, answer, get_json, holds_for, stop_process, two_site_zone
from harness import eventually as _eventually
from redisd import RedisServer, _die_with_parent, _free_tcp_port

#: a node or an entry not there yet, a Sentinel still starting: "not yet", poll again
eventually = partial(_eventually, ignoring=(OSError, StopIteration, KeyError, redis.RedisError))

REDIS_SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
MASTER = "gslbmaster"
TOKEN = "sentinel-test-token"
ZONE = ORIGIN.rstrip(".")


class SentinelServer:
    """One ``redis-sentinel`` watching ``MASTER`` at 127.0.0.1:``master_port`` (quorum 1)."""

    def __init__(self, workdir: Path, master_port: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_tcp_port()
        self.conf = workdir / "sentinel.conf"  # rewritten by the Sentinel as it learns
        self.log_file = workdir / "sentinel.log"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\nprotected-mode no\ndir {workdir}\n"
            f"logfile {self.log_file}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
            f"sentinel parallel-syncs {MASTER} 1\n")
        self.proc = subprocess.Popen([REDIS_SENTINEL, str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)

    def master_port(self) -> int:
        addr: Any = self.client.sentinel_get_master_addr_by_name(MASTER)
        return int(addr[1])

    def ready(self, replica_port: int, others: int) -> bool:
        """It knows the replica (linked) and the ``others`` Sentinels."""
        replicas: Any = self.client.sentinel_slaves(MASTER)
        linked = any(int(r["port"]) == replica_port and not r["is_disconnected"] and not r["is_sdown"]
                     for r in replicas)
        known: Any = self.client.sentinel_sentinels(MASTER)
        return linked and len(known) >= others

    def stop(self) -> None:
        self.client.close()
        stop_process(self.proc)


def put_override(node: Gslb, site: str, state: str) -> dict[str, Any]:
    req = urllib.request.Request(f"{node.http}/api/v1/sites/{ZONE}/{site}/override", method="PUT",
                                 data=json.dumps({"state": state}).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def site(node: Gslb, name: str) -> dict[str, Any]:
    return next(s for s in get_json(node, "/api/v1/status")["sites"] if s["site"] == name)


def connected(node: Gslb) -> bool:
    return bool(get_json(node, "/api/v1/status")["state_backend"]["connected"])


def stored_override(client: redis.Redis, name: str) -> Any:
    """The override of ``name`` as Redis holds it (None: absent; a removal is ``{"state": null}``)."""
    raw = client.hget("gslb:v1:overrides", f"{ZONE}:{name}")
    return None if raw is None else json.loads(raw)["state"]


def test_sentinel_failover_keeps_answers_and_the_table(tmp_path, backends):
    started: list[Any] = []
    try:
        master = RedisServer(tmp_path / "master").start()
        started.append(master)
        replica = RedisServer(tmp_path / "replica", extra_args=["--replicaof", "127.0.0.1", str(master.port)]).start()
        started.append(replica)
        replica_client = redis.Redis(host="127.0.0.1", port=replica.port, socket_timeout=2, decode_responses=True)
        eventually(lambda: replica_client.info("replication")["master_link_status"] == "up",
                   what="the replica linked to the master")
        sentinels = [SentinelServer(tmp_path / f"sentinel{i}", master.port) for i in range(2)]
        started.extend(sentinels)
        eventually(lambda: all(s.ready(replica.port, others=1) for s in sentinels), timeout=30,
                   what="both Sentinels know the replica and each other")

        url = f"redis+sentinel://{','.join(f'127.0.0.1:{s.port}' for s in sentinels)}/{MASTER}/0"
        token = tmp_path / "token"
        token.write_text(TOKEN)
        fra, iad = backends(), backends()
        zone = {"gslb.example.com.yaml": two_site_zone({"fra": fra.port, "iad": iad.port})}
        common = {"state": url, "api_token_file": str(token)}
        checker = Gslb(tmp_path / "a", zone, {**common, "region": "lab-1"})
        started.append(checker)
        checker.start(wait_for=ORIGIN)
        server = Gslb(tmp_path / "b", zone, {**common, "checks": False})
        started.append(server)
        server.start(wait_for=ORIGIN)
        for node in (checker, server):
            eventually(lambda node=node: connected(node), what="node connected through the Sentinels")
        # node b runs no checks: lab-1's results reach it through Redis
        eventually(lambda: site(server, "fra")["regions"]["lab-1"]["state"] == "up", what="b sees a's results")

        # before the kill: an override set and removed again; the removal replicated
        put_override(checker, "iad", "drain")
        eventually(lambda: site(server, "iad")["override"] == "drain", what="b sees the drain")
        put_override(checker, "iad", "auto")
        eventually(lambda: site(server, "iad")["override"] is None, what="b sees the drain removed")
        eventually(lambda: "iad" in str(replica_client.hkeys("gslb:v1:overrides"))
                   and stored_override(replica_client, "iad") is None, what="the removal on the replica")

        # kill the master; until a Sentinel names the replica master, every query is answered
        assert master.proc is not None
        master.proc.kill()
        master.proc.wait()
        queries = 0

        def promoted() -> bool:
            nonlocal queries
            for node in (checker, server):
                assert answer(node) == {FRA}  # a missing reply raises: no retry
                queries += 1
            return all(s.master_port() == replica.port for s in sentinels)

        eventually(promoted, timeout=60, interval=0.1, what="the Sentinels promote the replica")
        assert queries >= 2
        for node in (checker, server):
            eventually(lambda node=node: connected(node), timeout=30, what="node reconnected to the new master")
            assert answer(node) == {FRA}

        # the table converges through the new master: an override and a check result written now
        put_override(checker, "fra", "down")
        eventually(lambda: answer(server) == {IAD}, what="b follows the override written after the failover")
        assert stored_override(replica_client, "fra") == "down"
        iad.set("failing_status")
        eventually(lambda: site(server, "iad")["regions"]["lab-1"]["state"] == "down",
                   what="b sees a check result written after the failover")
        iad.set("healthy")
        eventually(lambda: site(server, "iad")["regions"]["lab-1"]["state"] == "up", what="iad back up on b")

        # nothing stale comes back: the drain removed before the kill stays removed on both nodes
        # through resynchronisations (every 5 s) and in Redis
        holds_for(lambda: site(server, "iad")["override"] is None and site(checker, "iad")["override"] is None
                  and stored_override(replica_client, "iad") is None, duration=6.0,
                  what="the removed drain stays removed")
        assert site(server, "fra")["override"] == "down"
        replica_client.close()
    finally:
        for proc in reversed(started):
            proc.stop()
