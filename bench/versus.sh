#!/usr/bin/env bash
# This tree's server against the server of another revision, side by side:
# a throughput regression check (single-item encrypt, dev server, loopback).
#
# Method: duets, as in bench/audit-tls.sh. Both servers run at once on the
# upper half of the cores, each loaded by its own wrk on the lower half at
# the same moment, so machine noise hits both alike; the verdict is the
# median over rounds of this tree's requests / the other's (range printed).
# The other revision is built in a git worktree with its own target
# directory (both under $TMPDIR, reused between runs).
#
#   bench/versus.sh [REV]   (REV default: HEAD~1; BENCH_SECONDS=5 per duet,
#                            BENCH_ROUNDS=8, BENCH_CONNECTIONS=32 per server)
# Needs wrk and taskset (Debian packages wrk, util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
REV="${1:-HEAD~1}"
SECS="${BENCH_SECONDS:-5}"
ROUNDS="${BENCH_ROUNDS:-8}"
CONNS="${BENCH_CONNECTIONS:-32}"
for c in wrk taskset; do
  command -v $c >/dev/null || { echo "$c is needed (apt-get install wrk util-linux)" >&2; exit 1; }
done
N=$(nproc)
if [ "$N" -ge 2 ]; then
  SERVER_CPUS=(taskset -c "$((N / 2))-$((N - 1))") CLIENT_CPUS=(taskset -c "0-$((N / 2 - 1))")
  WRK_THREADS=$(((N / 2 + 1) / 2))
else
  SERVER_CPUS=() CLIENT_CPUS=() WRK_THREADS=1
fi
SHA=$(git rev-parse --short "$REV")
BASE="${TMPDIR:-/tmp}/lockbox-versus-$SHA"
[ -d "$BASE" ] || git worktree add -f --detach "$BASE" "$SHA" >/dev/null
echo "building this tree and $SHA (release)..."
cargo build --quiet --release -p lockbox --bin lockbox
(cd "$BASE" && CARGO_TARGET_DIR="$BASE-target" cargo build --quiet --release -p lockbox --bin lockbox)

WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
declare -A URL
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # name binary
  local p; p=$(port)
  "${SERVER_CPUS[@]}" "$2" serve --dev --dev-root-token bench --listen "127.0.0.1:$p" > "$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  URL[$1]="http://127.0.0.1:$p"
  for _ in $(seq 100); do curl -sf "${URL[$1]}/v1/sys/health" >/dev/null && break; sleep 0.1; done
  curl -sf -H 'X-Vault-Token: bench' -X POST "${URL[$1]}/v1/transit/keys/bench" >/dev/null
}
start new target/release/lockbox
start old "$BASE-target/release/lockbox"

one_lua "$WORK"
load() {
  "${CLIENT_CPUS[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" -s "$WORK/one.lua" \
    "${URL[$1]}/v1/transit/encrypt/bench" > "$WORK/$1.wrk" 2>&1
}
rps() { awk '/Requests\/sec/ {print $2}' "$WORK/$1.wrk"; }
non2xx() { awk '/Non-2xx/ {print $5}' "$WORK/$1.wrk"; }
: > "$WORK/results"
for r in $(seq "$ROUNDS"); do
  load new & a=$!
  load old & b=$!
  wait "$a" "$b"
  echo "$(rps new) $(rps old)" >> "$WORK/results"
  printf "round %d  this tree %8.0f req/s  %s %8.0f req/s  ratio %.3f  non-2xx %s/%s\n" \
    "$r" "$(rps new)" "$SHA" "$(rps old)" "$(echo "$(rps new) $(rps old)" | awk '{print $1 / $2}')" \
    "$(non2xx new || true)" "$(non2xx old || true)"
done
python3 - "$WORK/results" "$SHA" <<'PY'
import statistics as st, sys
rows = [[float(x) for x in l.split()] for l in open(sys.argv[1])]
ratios = [a / b for a, b in rows]
m = st.median(ratios)
print(f"\nthis tree {st.median(r[0] for r in rows):,.0f} req/s, {sys.argv[2]} {st.median(r[1] for r in rows):,.0f} req/s "
      f"(medians, each server at half the machine)")
print(f"ratio this tree / {sys.argv[2]}: median {m:.3f}, range {min(ratios):.3f}..{max(ratios):.3f}"
      f"  -> {'within 5%' if m >= 0.95 else 'REGRESSION beyond 5%'}")
PY
