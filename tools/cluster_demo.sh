#!/usr/bin/env bash
# A local gslb cluster on loopback, and a failover you can watch:
#
#   redis-server  <-  gslb checker --region eu-west   (checks every site, writes results)
#                 <-  gslb checker --region us-east
#                 <-> gslb serve (node 1, --no-checks) --- DNS + HTTP
#                 <-> gslb serve (node 2, --no-checks) --- DNS + HTTP
#
# Two sites, fra and iad, each with a tiny local HTTP backend the script can kill. The pool
# www.demo.test is "failover": fra while it is up, else iad. The script kills fra's backend,
# shows both nodes moving www to iad and back when fra recovers, drains fra through node 1's
# API and shows node 2 obey, stops Redis and shows the nodes keep answering, then stops
# everything it started. Needs redis-server, dig and curl; about 10 seconds.
#
#   tools/cluster_demo.sh            # run the demo
#   KEEP=1 tools/cluster_demo.sh     # keep the work folder (logs, configs) afterwards
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}   # the project's venv, as for every tool (PYTHON=... to override)
if ! "$PY" -c 'import gslb, dnslib, redis' 2>/dev/null; then
    echo "cluster_demo: gslb cannot run under $PY: run \`make .venv/.installed\` in $ROOT (or PYTHON=...)" >&2
    exit 2
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gslb-cluster-demo.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "${KEEP:-}" ]]; then
        echo "work folder kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in redis-server dig curl; do
    command -v "$tool" >/dev/null || { echo "cluster_demo: $tool is needed" >&2; exit 2; }
done

free_port() {
    "$PY" -c 'import socket
for _ in range(100):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        u.close(); t.close()
    print(p); break'
}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

REDIS_PORT=$(free_port)
DNS1=$(free_port); HTTP1=$(free_port)
DNS2=$(free_port); HTTP2=$(free_port)
FRA_PORT=$(free_port); IAD_PORT=$(free_port)
STATE="redis://127.0.0.1:$REDIS_PORT/0"
TOKEN=demo-token
echo "$TOKEN" > "$WORK/token"

mkdir -p "$WORK/zones" "$WORK/fra" "$WORK/iad"
echo OK > "$WORK/fra/healthz"
echo OK > "$WORK/iad/healthz"
cat > "$WORK/zones/demo.yaml" <<EOF
zone: demo.test
ns: [ns1.demo.test]
records:
  ns1: {A: 127.0.0.1}
  www: {pool: www}
sites:
  fra: {location: [50.11, 8.68], addresses: [192.0.2.10], checks: [fra-web]}
  iad: {location: [38.95, -77.45], addresses: [198.51.100.20], checks: [iad-web]}
checks:   # the addresses are documentation ranges: probe the local backends instead
  fra-web: {type: http, port: $FRA_PORT, path: /healthz, target: 127.0.0.1, interval: 1, timeout: 0.5, rise: 1, fall: 2}
  iad-web: {type: http, port: $IAD_PORT, path: /healthz, target: 127.0.0.1, interval: 1, timeout: 0.5, rise: 1, fall: 2}
pools:
  www: {policy: failover, sites: [fra, iad], ttl: 5, quorum: 0.5}
EOF

node_config() {  # DNS_PORT HTTP_PORT -> a gslb.yaml
    cat <<EOF
listen: ["127.0.0.1:$1"]
http: "127.0.0.1:$2"
zones: $WORK/zones
geoip: $ROOT/data/sample-city.mmdb
state: $STATE
checks: false
api_token_file: $WORK/token
regions:
  eu-west: {location: [53.35, -6.26]}
  us-east: {location: [38.95, -77.45]}
EOF
}
node_config "$DNS1" "$HTTP1" > "$WORK/node1.yaml"
node_config "$DNS2" "$HTTP2" > "$WORK/node2.yaml"

start() {  # NAME COMMAND... (in the background, log in $WORK/NAME.log)
    local name=$1; shift
    (cd "$ROOT" && exec "$@") >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_${name//-/_}=$!"
}

wait_for() {  # SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "cluster_demo: timed out waiting for $what; logs in $WORK" >&2
            KEEP=1
            exit 1
        fi
        sleep 0.2
    done
}

answer() { dig +short +time=1 +tries=1 -p "$1" @127.0.0.1 www.demo.test A; }
answer_is() { [[ "$(answer "$1")" == "$2" ]]; }
sites() {  # HTTP_PORT -> one line per site: state and per-region votes
    curl -fsS "http://127.0.0.1:$1/api/v1/status" | "$PY" -c 'import json, sys
status = json.load(sys.stdin)
for s in status["sites"]:
    votes = ", ".join(f"{r}={v['"'"'state'"'"']}" for r, v in sorted(s["regions"].items()))
    print(f"  {s['"'"'site'"'"']:4} {s['"'"'state'"'"']:7} override={s['"'"'override'"'"']}  regions: {votes or '"'"'-'"'"'}")
print("  state backend:", status["state_backend"])'
}

site_down_everywhere() {  # HTTP_PORT SITE -> success when every region sees SITE down
    curl -fsS "http://127.0.0.1:$1/api/v1/status" | "$PY" -c 'import json, sys
site = [s for s in json.load(sys.stdin)["sites"] if s["site"] == sys.argv[1]][0]
sys.exit(0 if site["regions"] and all(v["state"] == "down" for v in site["regions"].values()) else 1)' "$2"
}

say "starting redis-server on 127.0.0.1:$REDIS_PORT"
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK"
wait_for 10 "redis-server" "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $REDIS_PORT), 1)"

say "starting the site backends (fra on :$FRA_PORT, iad on :$IAD_PORT)"
start fra "$PY" -m http.server "$FRA_PORT" --bind 127.0.0.1 --directory "$WORK/fra"
start iad "$PY" -m http.server "$IAD_PORT" --bind 127.0.0.1 --directory "$WORK/iad"

say "starting two checker agents (eu-west, us-east) and two DNS nodes (:$DNS1, :$DNS2)"
start checker-eu "$PY" -m gslb checker --region eu-west --state "$STATE" -c "$WORK/node1.yaml"
start checker-us "$PY" -m gslb checker --region us-east --state "$STATE" -c "$WORK/node1.yaml"
start node1 "$PY" -m gslb serve -c "$WORK/node1.yaml"
start node2 "$PY" -m gslb serve -c "$WORK/node2.yaml"
wait_for 20 "node 1 to answer" answer_is "$DNS1" 192.0.2.10
wait_for 20 "node 2 to answer" answer_is "$DNS2" 192.0.2.10
echo "node 1: www.demo.test A -> $(answer "$DNS1")"
echo "node 2: www.demo.test A -> $(answer "$DNS2")"
wait_for 10 "both regions to report" sh -c "curl -fsS http://127.0.0.1:$HTTP1/api/v1/status | grep -q us-east"
sites "$HTTP1"

say "killing fra's backend: the checkers see it fail, both nodes fail over to iad"
kill "$PID_fra"
wait_for 15 "node 1 to fail over" answer_is "$DNS1" 198.51.100.20
wait_for 5 "node 2 to fail over" answer_is "$DNS2" 198.51.100.20
echo "node 1: www.demo.test A -> $(answer "$DNS1")"
echo "node 2: www.demo.test A -> $(answer "$DNS2")"
wait_for 5 "both regions to see fra down" site_down_everywhere "$HTTP2" fra
sites "$HTTP2"

say "fra comes back"
start fra "$PY" -m http.server "$FRA_PORT" --bind 127.0.0.1 --directory "$WORK/fra"
wait_for 15 "node 2 to fail back" answer_is "$DNS2" 192.0.2.10
echo "node 2: www.demo.test A -> $(answer "$DNS2")"

say "operator: drain fra through node 1's API; node 2 applies it within a second"
curl -fsS -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"state": "drain"}' "http://127.0.0.1:$HTTP1/api/v1/sites/demo.test/fra/override"
echo
wait_for 3 "node 2 to apply the override" answer_is "$DNS2" 198.51.100.20
echo "node 2: www.demo.test A -> $(answer "$DNS2")"
sites "$HTTP2"
curl -fsS -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"state": "auto"}' "http://127.0.0.1:$HTTP1/api/v1/sites/demo.test/fra/override" >/dev/null

say "Redis goes away: the nodes keep answering from the last known state"
kill "$PID_redis"
wait_for 10 "node 1 to notice" sh -c "curl -fsS http://127.0.0.1:$HTTP1/api/v1/status | grep -q '\"connected\": false'"
echo "node 1: www.demo.test A -> $(answer "$DNS1")   (state_backend.connected: false)"

say "done: stopping everything"
