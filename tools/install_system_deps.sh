#!/usr/bin/env bash
# Install the Debian packages the tests talk to (dig, delv, redis-server, redis-sentinel, unbound, knot,
# chromium, systemd-analyze, promtool) when missing.
set -euo pipefail
need=()
command -v dig >/dev/null || need+=(dnsutils)
command -v delv >/dev/null || need+=(bind9-dnsutils)
command -v redis-server >/dev/null || need+=(redis-server)
command -v unbound >/dev/null || need+=(unbound)
# knotd: the reference server of tests/blackbox/test_protocol_corners.py (in /usr/sbin, off a user's PATH)
command -v knotd >/dev/null || [ -x /usr/sbin/knotd ] || need+=(knot)
command -v chromium >/dev/null || need+=(chromium)
command -v openssl >/dev/null || need+=(openssl)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v promtool >/dev/null || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing: ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# the packaged services are not needed: tests start their own on free ports
systemctl disable --now redis-server redis-sentinel unbound knot prometheus >/dev/null 2>&1 || true
