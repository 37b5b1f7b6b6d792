#!/usr/bin/env bash
# The cost of the audit log and of TLS: single-item encrypt throughput of
# four servers built from the same binary:
#   plain   HTTP, no audit
#   audit   HTTP, file audit sink (fail closed, the default: a request is
#           answered once the batch holding its chained entry is written)
#   audit-open  HTTP, file audit sink, --audit-fail-open (the answer does
#           not wait for the write)
#   tls     HTTPS (TLS 1.3, TLS_AES_256_GCM_SHA384, ECDSA P-256), no audit
#
# Method: duets. Each of audit, audit-open and tls is measured side by side
# with plain: both servers run at the same moment on the same cores, each
# loaded by its own wrk (on the other cores when there are at least two).
# The scheduler gives both servers the same share of the CPU, and whatever
# the machine does meanwhile (a shared cloud VM's neighbours, frequency,
# caches) hits both alike, so the ratio of their request counts is the
# feature's cost in server throughput per CPU, measured to a few percent
# where one-after-the-other runs of the same servers scatter by +-20%
# ("duet benchmarking", Bulej et al., 2020). Each round runs the three duets
# (order rotating); the verdict is the median over rounds of each duet's
# overhead, 1 - feature/plain (target: at most 15% each), with the range.
# Also printed: each server's CPU per request (from /proc) and wrk's.
# Needs wrk, openssl and taskset (Debian packages).
#
#   bench/audit-tls.sh   (BENCH_SECONDS=5 per duet, BENCH_ROUNDS=8,
#                         BENCH_CONNECTIONS=32 per server)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS="${BENCH_SECONDS:-5}"
ROUNDS="${BENCH_ROUNDS:-8}"
CONNS="${BENCH_CONNECTIONS:-32}"
for c in wrk openssl taskset; do
  command -v $c >/dev/null || { echo "$c is needed (apt-get install wrk openssl util-linux)" >&2; exit 1; }
done
N=$(nproc)
if [ "$N" -ge 2 ]; then # servers on the upper half of the cores, clients on the lower
  SERVER_CPUS=(taskset -c "$((N / 2))-$((N - 1))") CLIENT_CPUS=(taskset -c "0-$((N / 2 - 1))")
  WRK_THREADS=$(((N / 2 + 1) / 2))
else
  SERVER_CPUS=() CLIENT_CPUS=() WRK_THREADS=1
fi
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

declare -A URL PID
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # name scheme extra-args...
  local name=$1 scheme=$2 p; shift 2; p=$(port)
  "${SERVER_CPUS[@]}" target/release/lockbox serve --dev --dev-root-token bench --listen "127.0.0.1:$p" "$@" \
    > "$WORK/$name.log" 2>&1 &
  PIDS+=($!) PID[$name]=$!
  URL[$name]="$scheme://127.0.0.1:$p"
  for _ in $(seq 100); do
    curl -sf --cacert "$WORK/ca.pem" "${URL[$name]}/v1/sys/health" >/dev/null && break
    sleep 0.1
  done
  curl -sf --cacert "$WORK/ca.pem" -H 'X-Vault-Token: bench' -X POST \
    "${URL[$name]}/v1/transit/keys/bench" >/dev/null
}
start plain http
start audit http --audit-file "$WORK/audit.log"
start audit-open http --audit-file "$WORK/audit-open.log" --audit-fail-open
start tls https --tls-cert "$WORK/tls.pem" --tls-key "$WORK/tls.key"

one_lua "$WORK"
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime+stime, clock ticks
load() { # name: one wrk against it; `times` then prints wrk's user and system time
  ( "${CLIENT_CPUS[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" --latency -s "$WORK/one.lua" \
      "${URL[$1]}/v1/transit/encrypt/bench" > "$WORK/$1.wrk" 2>&1; times > "$WORK/$1.times" )
}
duet() { # round feature: plain and the feature under load at the same moment
  local a0 b0 a1 b1 pa pb
  a0=$(cpu "${PID[plain]}") b0=$(cpu "${PID[$2]}")
  load plain & pa=$!
  load "$2" & pb=$!
  wait "$pa" "$pb"
  a1=$(cpu "${PID[plain]}") b1=$(cpu "${PID[$2]}")
  python3 - "$1" "$2" "$WORK" "$((a1 - a0))" "$((b1 - b0))" "$(getconf CLK_TCK)" <<'PY' >> "$WORK/results"
import re, sys
rnd, feat, work, tick = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[6])
def side(name, ticks):
    t = open(f"{work}/{name}.wrk").read()
    reqs = max(int(re.search(r"(\d+) requests in", t).group(1)), 1)
    kids = open(f"{work}/{name}.times").read().splitlines()[1].split()
    wrk_s = sum(int(m) * 60 + float(s) for m, s in (re.match(r"(\d+)m([\d.]+)s", k).groups() for k in kids))
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", t, re.M)
    p99ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)] if p99 else 0
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    return rps, p99ms, int(errs.group(1)) if errs else 0, ticks * 1e6 / tick / reqs, wrk_s * 1e6 / reqs
a, b = side("plain", int(sys.argv[4])), side(feat, int(sys.argv[5]))
print(rnd, feat, *(f"{x:.2f}" for x in a + b))
PY
}
: > "$WORK/results"
FEATURES=(audit audit-open tls)
for r in $(seq "$ROUNDS"); do
  for i in 0 1 2; do
    f=${FEATURES[$(((i + r) % 3))]}
    duet "$r" "$f"
    tail -1 "$WORK/results" | awk '{printf "round %s %-10s plain %6.0f req/s  %-10s %6.0f req/s  overhead %5.1f%%  non-2xx %d/%d\n",
      $1, $2, $3, $2, $8, 100 * (1 - $8 / $3), $5, $10}'
  done
done
echo
echo "audit entries written by the audited server: $(wc -l < "$WORK/audit.log")"
python3 - "$WORK/results" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
print(f"{'duet':18} {'req/s':>15} {'overhead':>9} {'range':>14} {'p99 ms':>11} "
      f"{'server us/req':>13} {'wrk us/req':>11}")
for f in ("audit", "audit-open", "tls"):
    rs = [[float(x) for x in r[2:]] for r in rows if r[1] == f]
    over = [100 * (1 - r[5] / r[0]) for r in rs]
    med = lambda i: st.median(r[i] for r in rs)
    o = st.median(over)
    verdict = "meets <=15%" if o <= 15 else "ABOVE 15%"
    print(f"{'plain vs ' + f:18} {med(0):7,.0f} {med(5):7,.0f} {o:8.1f}% {min(over):6.1f}..{max(over):5.1f}% "
          f"{med(1):5.2f} {med(6):5.2f} {med(3):6.1f} {med(8):6.1f} {med(4):5.1f} {med(9):5.1f}  {verdict}")
print("Each column pair is plain, then the feature, measured at the same moment.")
print("overhead: median over rounds of 1 - feature/plain requests in the duet.")
PY
