"""Start and stop a real Unbound (recursive, optionally validating) on a free loopback port with a
stub zone towards a gslb process (tests only: test_unbound, test_dnssec_validation)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query

from harness import eventually, free_port, stop_process


class Unbound:
    """An unbound process with a stub zone towards gslb; stopped by ``stop()``."""

    def __init__(self, workdir: Path, gslb_port: int, zone: str = "interop.example",
                 modules: str = "subnetcache iterator", extra: str = "") -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "unbound.conf"
        conf.write_text(f"""
server:
  interface: 127.0.0.1
  port: {self.port}
  do-ip6: no
  do-not-query-localhost: no
  username: ""
  chroot: ""
  directory: "{workdir}"
  pidfile: "{workdir}/unbound.pid"
  use-syslog: no
  logfile: "{workdir}/unbound.log"
  verbosity: 1
  access-control: 127.0.0.0/8 allow
  module-config: "{modules}"
  send-client-subnet: 127.0.0.1
  max-client-subnet-ipv4: 32
  max-client-subnet-ipv6: 128
  client-subnet-always-forward: yes
  qname-minimisation: yes
  harden-glue: yes
  minimal-responses: no
{extra}
stub-zone:
  name: "{zone}"
  stub-addr: 127.0.0.1@{gslb_port}
""")
        self.log = workdir / "unbound.log"
        self.proc = subprocess.Popen([shutil.which("unbound") or "unbound", "-d", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            eventually(lambda: dns.query.udp(dns.message.make_query(f"ns1.{zone}", "A"), "127.0.0.1",
                                             port=self.port, timeout=0.3),
                       timeout=10, what="unbound answering", ignoring=(dns.exception.Timeout, OSError))
        except AssertionError:
            self.stop()
            raise RuntimeError("unbound did not start: " + (self.log.read_text() if self.log.exists() else "")) from None

    def query(self, qname: str, rdtype: str = "A", ecs: str | None = None, do: bool = False) -> dns.message.Message:
        options = []
        if ecs:
            addr, _, prefix = ecs.partition("/")
            options.append(dns.edns.ECSOption(addr, int(prefix)))
        q = dns.message.make_query(qname, rdtype, use_edns=0, options=options or None, want_dnssec=do)
        # like a stub resolver: UDP first, TCP when the reply is truncated
        return dns.query.udp_with_fallback(q, "127.0.0.1", port=self.port, timeout=5)[0]

    def stop(self) -> None:
        stop_process(self.proc, 5)
