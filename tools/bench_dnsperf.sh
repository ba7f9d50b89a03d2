#!/usr/bin/env bash
# Queries per second of `gslb serve` on the example zone, measured with dnsperf (Debian package
# `dnsperf`), median of RUNS runs per scenario. Usage: tools/bench_dnsperf.sh [SECONDS] [RUNS]
# Everything runs on 127.0.0.1; the server is stopped at the end. gslb is the project's
# .venv/bin/gslb unless GSLB=PATH says otherwise; a gslb that does not start or answer is an error.
# For the side-by-side comparison with gdnsd and PowerDNS use tools/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}; runs=${2:-3}; port=${BENCH_PORT:-5399}
command -v dnsperf >/dev/null || { echo "dnsperf missing: apt-get install dnsperf" >&2; exit 1; }
gslb=${GSLB:-.venv/bin/gslb}
[[ -x $gslb ]] || gslb=$(command -v "$gslb") || { echo "gslb not found at ${GSLB:-.venv/bin/gslb}: run make .venv/.installed (or GSLB=PATH)" >&2; exit 1; }
pid=""
work=$(mktemp -d); trap '[[ -n $pid ]] && kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
printf 'listen: ["127.0.0.1:%s"]\nhttp: null\nchecks: false\nzones: %s/zones\ngeoip: %s/data/sample-city.mmdb\n' \
  "$port" "$PWD" "$PWD" > "$work/gslb.yaml"
"$gslb" --log-level warning serve -c "$work/gslb.yaml" 2>"$work/log" &
pid=$!
up=0
for _ in $(seq 50); do
  dig +short +tries=1 +time=1 @127.0.0.1 -p "$port" gslb.example.com SOA 2>/dev/null | grep -q "^[a-z0-9]" && { up=1; break; }
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if (( ! up )); then echo "gslb did not answer on 127.0.0.1:$port; its log:" >&2; tail -n 20 "$work/log" >&2; exit 1; fi
printf 'api.gslb.example.com A\n' > "$work/static"
printf 'www.gslb.example.com A\n' > "$work/pool"
printf 'gslb.example.com SOA\napi.gslb.example.com A\nwww.gslb.example.com A\nnope.gslb.example.com A\nsticky.gslb.example.com AAAA\nx.cdn.gslb.example.com A\ndocs.gslb.example.com A\n' > "$work/mixed"
run() {  # name, file, extra dnsperf args...
  local name=$1 file=$2; shift 2
  local results=()
  for _ in $(seq "$runs"); do
    results+=("$(dnsperf -s 127.0.0.1 -p "$port" -d "$work/$file" -l "$secs" -c 4 "$@" 2>&1 \
                 | awk '/Queries per second/ {printf "%d", $4}')")
  done
  local median
  median=$(printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  if [[ -z $median || $median == 0 ]]; then echo "$name: no answers (0 q/s); gslb's log:" >&2; tail -n 20 "$work/log" >&2; exit 1; fi
  printf '%-34s median %7s qps   (runs: %s)\n' "$name" "$median" "${results[*]}"
}
run "static A, no EDNS" static
run "pool (closest), no ECS" pool
run "pool (closest), ECS 81.2.69.0/24" pool -E 8:00011800510245
run "pool (closest), ECS 2001:db8:10::/48" pool -E 8:0002300020010db80010
run "mixed names, EDNS" mixed -e
