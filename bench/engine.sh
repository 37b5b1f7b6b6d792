#!/usr/bin/env bash
# Key engine over the store: encrypt through the engine (warm cache) against
# raw lockbox-core in the same run, and start-up (open + unseal + load) with
# many keys. Ratios printed.
#
#   bench/engine.sh                       SQLite in a temp dir, 10 000 keys x 5 versions
#   BENCH_STORE=postgres://postgres@127.0.0.1:5432/test?schema=lbx_bench bench/engine.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p lockbox-engine --example bench_engine
OUT=$(target/release/examples/bench_engine)
python3 - "$OUT" <<'PYEOF'
import json, sys
r = json.loads(sys.argv[1])
print("encrypt, 32-byte field, single thread, medians of 7 runs (ops/s)")
for k in ("core_vault_encrypt_32", "engine_vault_encrypt_32", "core_native_encrypt_32", "engine_native_encrypt_32"):
    print(f"  {k:28} {r[k]:>12,.0f}")
vr = r["engine_vault_encrypt_32"] / r["core_vault_encrypt_32"]
nr = r["engine_native_encrypt_32"] / r["core_native_encrypt_32"]
print(f"  engine/core (vault format)   {vr:8.2f}  (target >= 0.80: {'meets' if vr >= 0.8 else 'BELOW'})")
print(f"  engine/core (native format)  {nr:8.2f}  (target >= 0.80: {'meets' if nr >= 0.8 else 'BELOW'})")
print(f"\nstart-up with {r['keys']:,} keys x {r['versions_per_key']} versions: "
      f"{r['startup_seconds_median']:.3f} s median of 3 (target < 1 s: {'meets' if r['startup_seconds_median'] < 1 else 'BELOW'}); "
      f"setup took {r['setup_seconds']:.1f} s")
PYEOF
