#!/usr/bin/env bash
# Field-encryption speed of lockbox-core against the hardware limit
# (`openssl speed -evp aes-256-gcm`) and Python `cryptography`, all measured
# in this one run on this machine. Prints medians and ratios.
#
#   bench/core.sh            (BENCH_RUN_MS=300 per timed run, 7 runs each)
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_RUN_MS="${BENCH_RUN_MS:-300}"

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi

echo "== building (release)" >&2
cargo build --quiet --release -p lockbox-core --example bench_core

echo "== openssl speed -evp aes-256-gcm (median of 5 runs of 1 s per size)" >&2
openssl_rate() { # bytes -> ops/s, median of 5
  for _ in 1 2 3 4 5; do
    openssl speed -mr -seconds 1 -bytes "$1" -evp aes-256-gcm 2>&1 \
      | awk -F: '/^\+R:/ {print $2}'
  done | sort -n | sed -n 3p
}
O16=$(openssl_rate 16); O64=$(openssl_rate 64); O16K=$(openssl_rate 16384)

echo "== lockbox-core" >&2
RUST=$(target/release/examples/bench_core)
echo "== python cryptography" >&2
PY=$(.venv/bin/python bench/py_peer.py)

.venv/bin/python - "$RUST" "$PY" "$O16" "$O64" "$O16K" <<'PYEOF'
import json, sys
r, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
o16, o64, o16k = (float(x) for x in sys.argv[3:6])
o16k_bps = o16k * 16384
def row(name, v, unit="ops/s"):
    print(f"  {name:44} {v:>14,.0f} {unit}")
print(f"\nopenssl speed -evp aes-256-gcm (hardware limit, same run)")
row("16 B", o16); row("64 B", o64); row("16 KiB", o16k); row("16 KiB throughput", o16k_bps / 1e6, "MB/s")
print("\nlockbox native (AES-256-GCM unless named), single thread, medians")
for k in sorted(r):
    if k.endswith("bytes_per_sec"):
        row(k, r[k] / 1e6, "MB/s")
    else:
        row(k, r[k])
print("\nPython cryptography, same inputs")
for k in sorted(p):
    row(k, p[k] / 1e6 if k.endswith("bytes_per_sec") else p[k], "MB/s" if k.endswith("bytes_per_sec") else "ops/s")
enc = r["native_aes256-gcm_encrypt_32_text"]
dec = r["native_aes256-gcm_decrypt_32_text"]
thr = r["native_aes256-gcm_encrypt_1mib_bytes_per_sec"]
checks = [
    ("native 32 B encrypt (text) / Python Fernet encrypt", enc / p["py_fernet_encrypt_32"], 10.0),
    ("native 32 B decrypt (text) / Python Fernet decrypt", dec / p["py_fernet_decrypt_32"], 10.0),
    ("native 32 B encrypt (text) / openssl 64 B rate", enc / o64, 0.40),
    ("native 32 B encrypt (binary) / openssl 64 B rate", r["native_aes256-gcm_encrypt_32_binary"] / o64, 0.40),
    ("native 1 MiB encrypt / openssl 16 KiB throughput", thr / o16k_bps, 0.70),
    ("native 1 MiB decrypt / openssl 16 KiB throughput", r["native_aes256-gcm_decrypt_1mib_bytes_per_sec"] / o16k_bps, 0.70),
    ("native 32 B encrypt (text) / Python AESGCM encrypt", enc / p["py_aesgcm_encrypt_32"], None),
    ("Lockbox Fernet encrypt / Python Fernet encrypt", r["fernet_encrypt_32"] / p["py_fernet_encrypt_32"], None),
    ("Lockbox Fernet decrypt / Python Fernet decrypt", r["fernet_decrypt_32"] / p["py_fernet_decrypt_32"], None),
]
print("\nratios (target)")
for name, ratio, target in checks:
    verdict = "" if target is None else ("  meets target" if ratio >= target else "  BELOW target")
    tgt = "" if target is None else f" (>= {target:g})"
    print(f"  {name:52} {ratio:8.2f}{tgt}{verdict}")
PYEOF
