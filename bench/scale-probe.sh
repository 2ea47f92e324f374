#!/usr/bin/env bash
# One gateway and N agents (switchyard-e2e-fleet) on loopback, an open loop
# of RATE calls/s from the CLI (`switchyard bench`), three windows of 5 s:
# for each, the gateway's CPU per call (/proc/PID/stat), the UDP datagrams
# sent per call on every hop (/proc/net/snmp, so the machine's other UDP
# traffic counts too) and the agents' process CPU per call.
#
#   bench/scale-probe.sh BIN_DIR AGENTS MAX_CANDIDATES RATE [FLEET_ARGS...]
#   bench/scale-probe.sh target/release 1000 16 1000
#   bench/scale-probe.sh target/release 1000 16 1000 --stats-interval-ms 20000
#
# MAX_CANDIDATES 0 offers the policy every free node. The gateway's
# configuration is the scale section's (`least-request`, limits raised to
# admit N agents from loopback).
set -euo pipefail

if [ $# -lt 4 ]; then
    sed -n '2,13p' "$0"
    exit 2
fi
bin=$1 agents=$2 max_candidates=$3 rate=$4
shift 4
plugins=$(cd "$(dirname "$0")/.." && pwd)/plugins/dist
dir=$(mktemp -d /tmp/switchyard-scale-probe.XXXXXX)
free_port() {
    python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.$1); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
}
quic=$(free_port SOCK_DGRAM)
admin=$(free_port SOCK_STREAM)
limit=$((agents + 64))
cat > "$dir/gateway.toml" <<EOF
listen = "127.0.0.1:$quic"
admin_listen = "127.0.0.1:$admin"
data_dir = "$dir/data"
plugins_dir = "$plugins"
default_policy = "least-request"
agent_token = "scale-probe-token"
shutdown_grace_s = 0
max_candidates = $max_candidates

[http]
enabled = false

[agents]
max_agents = $limit
max_agents_per_ip = $limit

[quic]
max_connections = $limit
max_connections_per_ip = $limit
max_pending_handshakes = $limit
EOF

pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

"$bin/gateway" --config "$dir/gateway.toml" > "$dir/gateway.log" 2>&1 &
gateway=$!
pids+=("$gateway")
for _ in $(seq 1 100); do [ -f "$dir/data/ca.pem" ] && break; sleep 0.1; done
"$bin/switchyard-e2e-fleet" --gateway "127.0.0.1:$quic" --ca "$dir/data/ca.pem" \
    --token scale-probe-token --agents "$agents" --service scale-echo "$@" \
    --keep-stdin > "$dir/fleet.log" 2>&1 < <(sleep 100000) &
fleet=$!
pids+=("$fleet")
for _ in $(seq 1 1800); do grep -q '^ready' "$dir/fleet.log" && break; sleep 0.1; done
grep '^ready' "$dir/fleet.log" || { tail "$dir/fleet.log"; exit 1; }
sleep 3

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
datagrams() { awk '/^Udp:/ { n++; if (n == 2) print $5 }' /proc/net/snmp; }
call() {
    "$bin/switchyard" --gateway "127.0.0.1:$quic" --ca "$dir/data/ca.pem" \
        bench scale-echo --rate "$rate" --warm-up-s 0 "$@"
}
call --duration-s 2 > /dev/null 2>&1
for window in 1 2 3; do
    g0=$(cpu "$gateway") f0=$(cpu "$fleet") u0=$(datagrams)
    calls=$(call --duration-s 5 --json 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["calls"])')
    g1=$(cpu "$gateway") f1=$(cpu "$fleet") u1=$(datagrams)
    awk -v c="$calls" -v t="$ticks" -v g=$((g1 - g0)) -v f=$((f1 - f0)) -v u=$((u1 - u0)) -v w="$window" \
        'BEGIN { printf "window %d: %d calls, gateway %.0f µs/call, %.2f datagrams/call, agents %.0f µs/call\n", w, c, g / t * 1e6 / c, u / c, f / t * 1e6 / c }'
done
