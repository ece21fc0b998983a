#!/usr/bin/env bash
# Soak: runs the test that probes every stable address every 100 ms through
# a server SIGKILL, a restart and a router upgrade, N times (default 50);
# prints how many runs lost a probe. Usage: scripts/soak-traffic.sh [N] [TEST]
# (TEST: another test of tests/recovery.rs, e.g. held_connections_survive_a_router_upgrade).
set -uo pipefail
cd "$(dirname "$0")/.."
n="${1:-50}"
test="${2:-traffic_survives_a_server_crash_restart_and_upgrade}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeboat-target}"
# The test binary of tests/recovery.rs, as cargo names it.
bin=$(cargo test --test recovery --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "recovery" and "test" in m["target"]["kind"] and m.get("executable"):
        print(m["executable"])')
[ -x "$bin" ] || { echo "cannot build tests/recovery.rs"; exit 2; }
failed=0
start=$(date +%s)
for i in $(seq 1 "$n"); do
  if ! "$bin" --exact "$test" >"/tmp/soak-$i.log" 2>&1; then
    failed=$((failed + 1))
    echo "run $i FAILED (see /tmp/soak-$i.log)"
  else
    rm -f "/tmp/soak-$i.log"
  fi
done
echo "soak: $test, $n runs, $failed failed, $(( $(date +%s) - start )) s"
[ "$failed" -eq 0 ]
