#!/usr/bin/env bash
# Column re-encryption speed on the local PostgreSQL: `lockbox reencrypt run`
# on a 1 000 000-row table, plaintext -> encrypted and rewrap (older key
# version -> current, after `keys rotate`), against a Python loop doing the
# seed documents' procedure (read, Fernet decrypt, Fernet encrypt, update;
# psycopg 3 + cryptography, bench/py_reencrypt.py) on the same table size, in
# this one run. Prints medians and ratios.
#
#   bench/reencrypt.sh     BENCH_ROWS=1000000  BENCH_RUNS=3 (lockbox)  BENCH_PY_RUNS=1
#                          BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/test
#                          BENCH_WORKERS=2  BENCH_BATCH=5000
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${BENCH_ROWS:-1000000}"
RUNS="${BENCH_RUNS:-3}"
PY_RUNS="${BENCH_PY_RUNS:-1}"
PG="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
WORKERS="${BENCH_WORKERS:-2}"
BATCH="${BENCH_BATCH:-5000}"
T=lockbox_bench_rx
TP=lockbox_bench_rx_py

VENV=bench/.venv
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "== creating $VENV (psycopg, cryptography)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "psycopg[binary]==3.3.9" "cryptography==50.0.2"
fi

echo "== building (release)" >&2
cargo build --quiet --release -p lockbox
LB="$PWD/target/release/lockbox"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"; psql -q "$PG" -c "DROP TABLE IF EXISTS $T; DROP TABLE IF EXISTS $TP" >/dev/null 2>&1 || true' EXIT
export LOCKBOX_STORE="sqlite://$WORK/keys.db"
LOCKBOX_MASTER_KEY="$("$LB" keygen-master)"
export LOCKBOX_MASTER_KEY
"$LB" keys create bench >/dev/null

echo "== loading $ROWS rows" >&2
psql -q "$PG" <<SQL >/dev/null 2>&1
DROP TABLE IF EXISTS $T;
CREATE TABLE $T (id BIGINT PRIMARY KEY, tenant INT NOT NULL, secret TEXT);
INSERT INTO $T SELECT g, g % 100, 'customer-secret-' || g FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE $T;
SQL

run_lb() { # -> rows/s of one `reencrypt run`
  "$LB" --json reencrypt run --db "$PG" --table $T --column secret --key bench \
    --context '{table}.{column}:{tenant}:{id}' --workers "$WORKERS" --batch-size "$BATCH" \
    --progress none 2>>"$WORK/lockbox.stderr" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["job_complete"]; print(round(r["rows_seen"]/r["elapsed_secs"]))'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

ENC=(); REWRAP=()
for i in $(seq "$RUNS"); do
  echo "== lockbox plaintext -> encrypted, run $i" >&2
  psql -q "$PG" -c "UPDATE $T SET secret = 'customer-secret-' || id" -c "VACUUM $T" >/dev/null
  ENC+=("$(run_lb)")
  echo "== lockbox rewrap (rotate, then rewrap), run $i" >&2
  "$LB" keys rotate bench >/dev/null
  psql -q "$PG" -c "VACUUM $T" >/dev/null
  REWRAP+=("$(run_lb)")
done
"$LB" --json reencrypt verify --db "$PG" --table $T --column secret --key bench \
  --context '{table}.{column}:{tenant}:{id}' >/dev/null

echo "== Python loop: Fernet tokens for $ROWS rows" >&2
KEYS="$("$VENV/bin/python" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode(), Fernet.generate_key().decode())')"
read -r OLD NEW <<<"$KEYS"
psql -q "$PG" -c "DROP TABLE IF EXISTS $TP; CREATE TABLE $TP (id BIGINT PRIMARY KEY, secret TEXT)" >/dev/null
"$VENV/bin/python" - "$PG" "$TP" "$OLD" "$ROWS" <<'PYEOF'
import sys, psycopg
from cryptography.fernet import Fernet
dsn, t, old, n = sys.argv[1], sys.argv[2], Fernet(sys.argv[3].encode()), int(sys.argv[4])
with psycopg.connect(dsn) as c, c.cursor() as cur:
    with cur.copy(f"COPY {t} (id, secret) FROM STDIN") as cp:
        for i in range(1, n + 1):
            cp.write_row((i, old.encrypt(f"customer-secret-{i}".encode()).decode()))
PYEOF
psql -q "$PG" -c "VACUUM ANALYZE $TP" >/dev/null
PY=(); PYM=()
for i in $(seq "$PY_RUNS"); do
  echo "== Python loop (read, Fernet decrypt, Fernet encrypt, UPDATE per row), run $i" >&2
  PY+=("$("$VENV/bin/python" bench/py_reencrypt.py "$PG" "$TP" "$NEW" "$OLD" loop)")
  psql -q "$PG" -c "VACUUM $TP" >/dev/null
  echo "== Python, tuned (executemany, pipelined), run $i" >&2
  PYM+=("$("$VENV/bin/python" bench/py_reencrypt.py "$PG" "$TP" "$NEW" "$OLD" executemany)")
  psql -q "$PG" -c "VACUUM $TP" >/dev/null
done

E=$(printf '%s\n' "${ENC[@]}" | median)
R=$(printf '%s\n' "${REWRAP[@]}" | median)
P=$(printf '%s\n' "${PY[@]}" | median)
PM=$(printf '%s\n' "${PYM[@]}" | median)
echo
echo "re-encryption of a $ROWS-row PostgreSQL table, rows/s (median; lockbox $RUNS runs, Python $PY_RUNS)"
printf '  %-52s %10s   runs: %s\n' "lockbox plaintext -> encrypted (workers $WORKERS)" "$E" "${ENC[*]}"
printf '  %-52s %10s   runs: %s\n' "lockbox rewrap v(N-1) -> vN (workers $WORKERS)" "$R" "${REWRAP[*]}"
printf '  %-52s %10s   runs: %s\n' "Python loop: read, Fernet decrypt+encrypt, UPDATE/row" "$P" "${PY[*]}"
printf '  %-52s %10s   runs: %s\n' "Python tuned: same, executemany (pipelined)" "$PM" "${PYM[*]}"
python3 - "$E" "$R" "$P" "$PM" <<'PYEOF'
import sys
e, r, p, pm = (float(x) for x in sys.argv[1:5])
checks = [
    ("plaintext -> encrypted / Python loop", e / p, 10.0),
    ("rewrap / Python loop", r / p, 10.0),
    ("rewrap / Python tuned (executemany)", r / pm, 10.0),
    ("rewrap rows/s / 50 000", r / 50000, 1.0),
]
print()
for name, v, want in checks:
    print(f"  {name:52} {v:8.2f}  {'ok' if v >= want else 'BELOW TARGET'} (target >= {want:g})")
PYEOF
