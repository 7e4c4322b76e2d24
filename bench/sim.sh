#!/usr/bin/env bash
# Fleet simulation figures for docs/benchmarks.md ("Fleet simulation"), side by side with a
# naive peer measured in the same run. Everything runs on 127.0.0.1 and stops by itself.
#
#   bash bench/sim.sh                 # 10,000 idle devices, 1,000 devices at 1 press/s each
#   IDLE=2000 LOAD=500 bash bench/sim.sh
#   NAIVE=200 bash bench/sim.sh       # naive peer size (one mosquitto_sub process per device)
#
# 1. Idle fleet: IDLE devices ramped at RAMP/s, pressing never (--press-every 1h): peak RSS,
#    bytes per connected device (RSS when all were connected minus RSS before, / devices),
#    mutual-TLS connects per second during the ramp (devices / seconds until all connected),
#    with mosquitto on the same 2 cores.
# 2. Load: LOAD devices pressing every second: presses/s end to end, press -> cloud latency.
# 3. Naive peer, same machine, same run: NAIVE `mosquitto_sub` processes, one per device, each
#    its own TLS connection with its own certificate, against a mosquitto of the same
#    configuration: memory per device (sum of their RSS / NAIVE) and connects per second.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${IDLE:-10000}
LOAD=${LOAD:-1000}
RAMP=${RAMP:-1000}
NAIVE=${NAIVE:-300}
out=$(mktemp -d /tmp/acorn-bench-sim.XXXXXX)
echo "results in $out"

cargo build --release -p acorn >/dev/null 2>&1 || cargo build --release -p acorn
acorn=target/release/acorn

echo "== 1. idle fleet: $IDLE devices, ramp $RAMP/s"
$acorn sim --devices "$IDLE" --duration 60s --ramp "$RAMP" --press-every 1h \
  --commands-every 0 --drain 5s --json "$out/idle.json" >"$out/idle.txt" 2>"$out/idle.err"
python3 - "$out/idle.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
m = r["memory"]
print(f"  connected {r['connected']}/{r['devices']}; ramp {r['rampConnectsPerSecond']} connects/s; "
      f"connect p50 {r['connectLatencyMs']['p50']} ms p99 {r['connectLatencyMs']['p99']} ms")
print(f"  RSS before {m['rssBeforeBytes']/1e6:.1f} MB, all connected {(m['rssAllConnectedBytes'] or 0)/1e6:.1f} MB, "
      f"peak {m['peakRssBytes']/1e6:.1f} MB; per connected device {(m['bytesPerConnectedDevice'] or 0)/1e3:.1f} KB")
EOF

echo "== 2. load: $LOAD devices, one press per second each"
$acorn sim --devices "$LOAD" --duration 30s --ramp 500 --press-every 1s \
  --commands-every 1s --json "$out/load.json" >"$out/load.txt" 2>"$out/load.err"
python3 - "$out/load.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["pressLatencyMs"]
print(f"  sent {r['sent']} acked {r['acked']} received {r['received']} lost {r['lost']} duplicated {r['duplicated']}")
print(f"  {r['pressesPerSecond']} presses/s; press->cloud p50 {l['p50']} p90 {l['p90']} p99 {l['p99']} "
      f"p99.9 {l['p999']} max {l['max']} ms")
EOF

echo "== 3. naive peer: $NAIVE mosquitto_sub processes, one per device"
if ! command -v mosquitto_sub >/dev/null; then
  echo "  mosquitto_sub missing (apt-get install mosquitto-clients): skipped"
  exit 0
fi
n="$out/naive"
mkdir -p "$n/certs"
chmod 755 "$out" "$n" "$n/certs"
openssl ecparam -name prime256v1 -genkey -noout -out "$n/ca.key" 2>/dev/null
openssl req -x509 -new -key "$n/ca.key" -subj "/CN=naive CA" -days 2 -out "$n/ca.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$n/server.key" 2>/dev/null
openssl req -new -key "$n/server.key" -subj "/CN=localhost" -out "$n/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\n' >"$n/san.ext"
openssl x509 -req -in "$n/server.csr" -CA "$n/ca.pem" -CAkey "$n/ca.key" -CAcreateserial \
  -days 2 -extfile "$n/san.ext" -out "$n/server.pem" 2>/dev/null
for i in $(seq 1 "$NAIVE"); do
  openssl ecparam -name prime256v1 -genkey -noout -out "$n/certs/d$i.key" 2>/dev/null
  openssl req -new -key "$n/certs/d$i.key" -subj "/CN=naive-$i" -out "$n/certs/d$i.csr" 2>/dev/null
  openssl x509 -req -in "$n/certs/d$i.csr" -CA "$n/ca.pem" -CAkey "$n/ca.key" -days 2 \
    -out "$n/certs/d$i.pem" 2>/dev/null
done
chmod 644 "$n"/*.pem "$n"/*.key "$n"/certs/*
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$n/mosquitto.conf" <<EOF
per_listener_settings true
persistence false
log_dest stderr
log_type error
listener $port 127.0.0.1
allow_anonymous false
cafile $n/ca.pem
certfile $n/server.pem
keyfile $n/server.key
require_certificate true
use_identity_as_username true
EOF
user_opt=()
if [ "$(id -u)" = 0 ]; then user_opt=(setpriv --reuid=mosquitto --regid=mosquitto --init-groups); fi
"${user_opt[@]}" /usr/sbin/mosquitto -c "$n/mosquitto.conf" 2>"$n/mosquitto.log" &
broker=$!
trap 'kill $broker 2>/dev/null || true; for p in $(cat "$n/pids" 2>/dev/null); do kill $p 2>/dev/null || true; done' EXIT
sleep 0.5
start=$(date +%s.%N)
: >"$n/pids"
for i in $(seq 1 "$NAIVE"); do
  mosquitto_sub -h localhost -p "$port" -q 1 -i "naive-$i" -t "acorn-pups/commands/naive-$i" \
    --cafile "$n/ca.pem" --cert "$n/certs/d$i.pem" --key "$n/certs/d$i.key" >/dev/null 2>&1 &
  echo $! >>"$n/pids"
done
# Wait (bounded: 120 s) until the broker has every client.
for _ in $(seq 1 1200); do
  up=$(ss -tn state established "( sport = :$port )" 2>/dev/null | tail -n +2 | wc -l)
  [ "$up" -ge "$NAIVE" ] && break
  sleep 0.1
done
end=$(date +%s.%N)
rss=0
for p in $(cat "$n/pids"); do
  kb=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
  rss=$((rss + ${kb:-0}))
done
python3 - "$NAIVE" "$up" "$start" "$end" "$rss" <<'EOF'
import sys
n, up, start, end, rss_kb = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
print(f"  {up}/{n} connected in {end-start:.1f} s: {up/(end-start):.0f} connects/s; "
      f"RSS {rss_kb/1e3:.1f} MB = {rss_kb/max(up,1):.0f} KB per device")
EOF
