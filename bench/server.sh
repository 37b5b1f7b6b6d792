#!/usr/bin/env bash
# HTTP server throughput on loopback: single-item encrypt at 1, 16 and 64
# connections (requests/s, p50/p99) and a batch of 1 000 fields (fields/s),
# against the in-process library rate measured in the same run.
# The load generator is wrk (Debian package `wrk`), bounded in time,
# 127.0.0.1 only. The server and wrk share this machine's cores.
#
#   bench/server.sh            (BENCH_SECONDS=8 per point)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS="${BENCH_SECONDS:-8}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --quiet --release -p lockbox --bin lockbox
cargo build --quiet --release -p lockbox-core --example bench_core

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADDR="http://127.0.0.1:$PORT"
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
target/release/lockbox serve --dev --dev-root-token bench --listen "127.0.0.1:$PORT" > "$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf "$ADDR/v1/sys/health" >/dev/null && break; sleep 0.1; done
curl -sf -H 'X-Vault-Token: bench' -X POST "$ADDR/v1/transit/keys/bench" >/dev/null

one_lua "$WORK"
python3 - "$FIELD" > "$WORK/batch.json" <<'PY'
import json, sys
print(json.dumps({"batch_input": [{"plaintext": sys.argv[1]} for _ in range(1000)]}))
PY
cat > "$WORK/batch.lua" <<LUA
wrk.method = "POST"
wrk.headers["X-Vault-Token"] = "bench"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$WORK/batch.json", "r"); wrk.body = f:read("*a"); f:close()
LUA

run() { # connections script path -> "rps p50 p99" (ms)
  wrk -t"$(( $1 < 2 ? 1 : 2 ))" -c"$1" -d"${SECS}s" --latency -s "$2" "$ADDR$3" > "$WORK/wrk.txt" 2>&1
  python3 - "$WORK/wrk.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(v, u): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", t, re.M)}
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(rps, lat.get("50", 0), lat.get("99", 0), errs.group(1) if errs else 0)
PY
}

LIB=$(BENCH_RUN_MS=200 target/release/examples/bench_core 2>/dev/null | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["vault_encrypt_32"], r["native_aes256-gcm_encrypt_32_text"])')
read -r LIB_VAULT LIB_NATIVE <<<"$LIB"
echo "in-process library, single thread: vault-format encrypt $LIB_VAULT ops/s, native $LIB_NATIVE ops/s"
echo
printf "%-28s %12s %10s %10s %8s %10s\n" "single-item encrypt" "requests/s" "p50 ms" "p99 ms" "non-2xx" "/library"
for c in 1 16 64; do
  read -r RPS P50 P99 ERR <<<"$(run $c "$WORK/one.lua" /v1/transit/encrypt/bench)"
  printf "%-28s %12.0f %10.2f %10.2f %8s %10.3f\n" "$c connections" "$RPS" "$P50" "$P99" "$ERR" "$(python3 -c "print($RPS / $LIB_VAULT)")"
  [[ $c == 64 ]] && RPS64=$RPS && P99_64=$P99
done
read -r BRPS BP50 BP99 BERR <<<"$(run 4 "$WORK/batch.lua" /v1/transit/encrypt/bench)"
FIELDS=$(python3 -c "print($BRPS * 1000)")
printf "%-28s %12.0f %10.2f %10.2f %8s %10.3f\n" "batch of 1000 (4 conns)" "$BRPS" "$BP50" "$BP99" "$BERR" "$(python3 -c "print($FIELDS / $LIB_VAULT)")"
echo
python3 - "$RPS64" "$P99_64" "$FIELDS" "$LIB_VAULT" <<'PY'
import sys
rps64, p99, fields, lib = (float(x) for x in sys.argv[1:])
print(f"single-item at 64 connections: {rps64:,.0f} req/s (target >= 20,000: {'meets' if rps64 >= 20000 else 'BELOW'}), "
      f"p99 {p99:.2f} ms (target < 5 ms: {'meets' if p99 < 5 else 'BELOW'})")
print(f"single-item at 64 connections / library single-thread rate: {rps64 / lib:.3f}")
print(f"batch: {fields:,.0f} fields/s = {fields / lib:.2f} x the library single-thread rate (target >= 0.50: {'meets' if fields / lib >= 0.5 else 'BELOW'})")
PY
