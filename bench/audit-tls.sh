#!/usr/bin/env bash
# The cost of the audit log and of TLS: single-item encrypt throughput at 64
# connections against four servers measured in the same run:
#   plain   HTTP, no audit
#   audit   HTTP, file audit sink (fail closed, the default: a request is
#           answered once the batch holding its chained entry is written)
#   audit-open  HTTP, file audit sink, --audit-fail-open (the answer does
#           not wait for the write)
#   tls     HTTPS (TLS 1.3, TLS_AES_256_GCM_SHA384, ECDSA P-256), no audit
# Each round measures all four, in forward order on odd rounds and reverse
# order on even ones, so a machine that speeds up or slows down during a
# round favours no server. A server's overhead is taken against plain within
# each round (paired), and the verdict is the median of those per-round
# overheads (target: at most 15% each); the range is printed beside it.
# Also printed: the server's and the client's (wrk's) CPU per request, which
# tell the server's own cost apart from the client's when both share the
# cores. Needs wrk and openssl (Debian packages).
#
#   bench/audit-tls.sh       (BENCH_SECONDS=6 per point, BENCH_ROUNDS=6)
#   BENCH_PIN=1 bench/audit-tls.sh   servers on the last core, wrk (one
#           thread) on the others: the client's own work (its TLS too) is
#           then not taken from the servers' share of the cores
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${BENCH_SECONDS:-6}"
ROUNDS="${BENCH_ROUNDS:-6}"
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
run() { # base-url pid -> "rps p99ms non2xx server-us-per-request client-us-per-request"
  local c0 c1
  c0=$(cpu "$2")
  # `times` in the subshell prints its children's (wrk's) user and system time
  ( "${CLIENT_CPUS[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" --latency -s "$WORK/one.lua" \
      "$1/v1/transit/encrypt/bench" > "$WORK/wrk.txt" 2>&1; times > "$WORK/times.txt" )
  c1=$(cpu "$2")
  python3 - "$WORK/wrk.txt" "$((c1 - c0))" "$TICK" "$WORK/times.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
reqs = max(int(re.search(r"(\d+) requests in", t).group(1)), 1)
cpu_us = int(sys.argv[2]) * 1e6 / int(sys.argv[3]) / reqs
# second line of `times`: children's user and system time, as 0m1.234s
kids = open(sys.argv[4]).read().splitlines()[1].split()
client_us = sum(int(m) * 60 + float(s) for m, s in (re.match(r"(\d+)m([\d.]+)s", k).groups() for k in kids)) * 1e6 / reqs
def ms(v, u): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p99 = [ms(v, u) for v, u in re.findall(r"^\s+99%\s+([\d.]+)(us|ms|s)", t, re.M)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(rps, p99[0] if p99 else 0, errs.group(1) if errs else 0, round(cpu_us, 2), round(client_us, 2))
PY
}
: > "$WORK/results"
ORDER=(plain audit audit-open tls)
for r in $(seq "$ROUNDS"); do
  names=("${ORDER[@]}")
  [ $((r % 2)) = 0 ] && names=(tls audit-open audit plain)
  for name in "${names[@]}"; do
    case $name in
      plain) url=$PLAIN pid=${PIDS[0]} ;; audit) url=$AUDIT pid=${PIDS[1]} ;;
      audit-open) url=$AUDITOPEN pid=${PIDS[2]} ;; tls) url=$TLS pid=${PIDS[3]} ;;
    esac
    read -r RPS P99 ERR CPU CLI <<<"$(run "$url" "$pid")"
    echo "$r $name $RPS $P99 $ERR $CPU $CLI" >> "$WORK/results"
    printf "round %d %-10s %10.0f req/s  p99 %6.2f ms  non-2xx %s  CPU us/req: server %5.1f client %5.1f\n" \
      "$r" "$name" "$RPS" "$P99" "$ERR" "$CPU" "$CLI"
  done
done
ENTRIES=$(wc -l < "$WORK/audit.log")
echo
echo "audit entries written by the audited server: $ENTRIES"
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
names = ("plain", "audit", "audit-open", "tls")
by = {(r[0], r[1]): r for r in rows}
rounds = sorted({r[0] for r in rows}, key=int)
def med(n, i): return statistics.median(float(by[(k, n)][i]) for k in rounds)
def paired(n): # overhead against plain in each round, %
    return [100 * (1 - float(by[(k, n)][2]) / float(by[(k, "plain")][2])) for k in rounds]
print(f"{'server':10} {'median req/s':>12} {'p99 ms':>7} {'overhead':>9} {'range':>16}  "
      f"{'server us/req':>13} {'client us/req':>13}")
for n in names:
    o = paired(n)
    over, rng = statistics.median(o), f"{min(o):.1f}..{max(o):.1f}%"
    verdict = "" if n == "plain" else ("meets <=15%" if over <= 15 else "ABOVE 15%")
    print(f"{n:10} {med(n, 2):12,.0f} {med(n, 3):7.2f} {over:8.1f}% {rng if n != 'plain' else '':>16}  "
          f"{med(n, 5):13.1f} {med(n, 6):13.1f}  {verdict}")
print("overhead: median over rounds of (1 - server/plain), each round's servers")
print("measured back to back. Throughput is the target's measure; CPU per request")
print("tells what the server and the client (wrk, its TLS too) each spend.")
PY
