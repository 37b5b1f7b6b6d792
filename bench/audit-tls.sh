#!/usr/bin/env bash
# The cost of the audit log and of TLS: single-item encrypt throughput at 64
# connections against three servers measured in the same run, rounds
# interleaved so machine noise hits all three alike:
#   plain   HTTP, no audit
#   audit   HTTP, file audit sink (fail closed, the default: a request is
#           answered once the batch holding its chained entry is written)
#   audit-open  HTTP, file audit sink, --audit-fail-open (the answer does
#           not wait for the write)
#   tls     HTTPS (TLS 1.3, TLS_AES_256_GCM_SHA384, ECDSA P-256), no audit
# Prints the median requests/s and p99 of each and the overhead against
# plain (target: at most 15% each). Needs wrk and openssl (Debian packages).
#
#   bench/audit-tls.sh       (BENCH_SECONDS=6 per point, BENCH_ROUNDS=5)
#   BENCH_PIN=1 bench/audit-tls.sh   servers on the last core, wrk (one
#           thread) on the others: the client's own work (its TLS too) is
#           then not taken from the servers' share of the cores
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${BENCH_SECONDS:-6}"
ROUNDS="${BENCH_ROUNDS:-5}"
CONNS="${BENCH_CONNECTIONS:-64}"
SERVER_CPUS=() CLIENT_CPUS=() WRK_THREADS=2
if [ "${BENCH_PIN:-0}" = 1 ]; then
  command -v taskset >/dev/null || { echo "BENCH_PIN needs taskset (util-linux)" >&2; exit 1; }
  LAST=$(($(nproc) - 1))
  [ "$LAST" -ge 1 ] || { echo "BENCH_PIN needs at least 2 cores" >&2; exit 1; }
  SERVER_CPUS=(taskset -c "$LAST") CLIENT_CPUS=(taskset -c "0-$((LAST - 1))") WRK_THREADS=1
fi
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --quiet --release -p lockbox --bin lockbox

WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 30 -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.csr \
  -subj "/CN=localhost" 2>/dev/null
printf "subjectAltName=IP:127.0.0.1\n" > ext.cnf
openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tls.pem -days 30 \
  -extfile ext.cnf 2>/dev/null
cd - >/dev/null

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # name scheme extra-args... -> sets URL (no subshell: PIDS must grow here)
  local name=$1 scheme=$2 p; shift 2; p=$(port)
  "${SERVER_CPUS[@]}" target/release/lockbox serve --dev --dev-root-token bench --listen "127.0.0.1:$p" "$@" \
    > "$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -sf --cacert "$WORK/ca.pem" "$scheme://127.0.0.1:$p/v1/sys/health" >/dev/null && break
    sleep 0.1
  done
  curl -sf --cacert "$WORK/ca.pem" -H 'X-Vault-Token: bench' -X POST \
    "$scheme://127.0.0.1:$p/v1/transit/keys/bench" >/dev/null
  URL="$scheme://127.0.0.1:$p"
}
start plain http; PLAIN=$URL
start audit http --audit-file "$WORK/audit.log"; AUDIT=$URL
start audit-open http --audit-file "$WORK/audit-open.log" --audit-fail-open; AUDITOPEN=$URL
start tls https --tls-cert "$WORK/tls.pem" --tls-key "$WORK/tls.key"; TLS=$URL

FIELD=$(head -c 32 /dev/zero | tr '\0' 'B' | base64)
cat > "$WORK/one.lua" <<LUA
wrk.method = "POST"
wrk.headers["X-Vault-Token"] = "bench"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"plaintext":"$FIELD"}'
LUA
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime+stime, clock ticks
TICK=$(getconf CLK_TCK)
run() { # base-url pid -> "rps p99ms non2xx server-cpu-us-per-request"
  local c0 c1
  c0=$(cpu "$2")
  "${CLIENT_CPUS[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" --latency -s "$WORK/one.lua" "$1/v1/transit/encrypt/bench" \
    > "$WORK/wrk.txt" 2>&1
  c1=$(cpu "$2")
  python3 - "$WORK/wrk.txt" "$((c1 - c0))" "$TICK" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
reqs = int(re.search(r"(\d+) requests in", t).group(1))
cpu_us = int(sys.argv[2]) * 1e6 / int(sys.argv[3]) / max(reqs, 1)
def ms(v, u): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p99 = [ms(v, u) for v, u in re.findall(r"^\s+99%\s+([\d.]+)(us|ms|s)", t, re.M)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(rps, p99[0] if p99 else 0, errs.group(1) if errs else 0, round(cpu_us, 2))
PY
}
: > "$WORK/results"
for r in $(seq "$ROUNDS"); do
  for name in plain audit audit-open tls; do
    case $name in
      plain) url=$PLAIN pid=${PIDS[0]} ;; audit) url=$AUDIT pid=${PIDS[1]} ;;
      audit-open) url=$AUDITOPEN pid=${PIDS[2]} ;; tls) url=$TLS pid=${PIDS[3]} ;;
    esac
    read -r RPS P99 ERR CPU <<<"$(run "$url" "$pid")"
    echo "$name $RPS $P99 $ERR $CPU" >> "$WORK/results"
    printf "round %d %-10s %10.0f req/s  p99 %6.2f ms  non-2xx %s  server CPU %6.1f us/req\n" \
      "$r" "$name" "$RPS" "$P99" "$ERR" "$CPU"
  done
done
ENTRIES=$(wc -l < "$WORK/audit.log")
echo
echo "audit entries written by the audited server: $ENTRIES"
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {n: statistics.median(float(r[1]) for r in rows if r[0] == n) for n in ("plain", "audit", "audit-open", "tls")}
p99 = {n: statistics.median(float(r[2]) for r in rows if r[0] == n) for n in med}
cpu = {n: statistics.median(float(r[4]) for r in rows if r[0] == n) for n in med}
print(f"{'server':10} {'median req/s':>14} {'median p99 ms':>14} {'ratio to plain':>15} {'overhead':>9}  {'server CPU us/req':>17}")
for n in med:
    ratio = med[n] / med["plain"]
    over = 100 * (1 - ratio)
    verdict = "" if n == "plain" else ("meets <=15%" if over <= 15 else "ABOVE 15%")
    print(f"{n:10} {med[n]:14,.0f} {p99[n]:14.2f} {ratio:15.3f} {over:8.1f}%  {cpu[n]:17.1f}  {verdict}")
print("(throughput is the target's measure; server CPU per request is what each")
print(" feature costs the server itself, whatever the client's share of the cores)")
PY
