#!/usr/bin/env bash
# Envelope encryption with AWS KMS as KEK (a real moto_server on loopback,
# from the test venv): 100 000 encrypts (64 B, one context) with the
# data-key cache (max 1 000 messages per data key) and 100 000 without, in
# this one run. Prints provider calls and medians (5 chunks of N/5 each),
# and the throughput ratio cached / uncached.
#
#   bench/envelope.sh            (BENCH_N=100000)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${BENCH_N:-100000}"

if [[ ! -x .venv/bin/moto_server ]]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi

echo "== building (release)" >&2
cargo build --quiet --release -p lockbox-kms --example bench_envelope

PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
.venv/bin/moto_server -H 127.0.0.1 -p "$PORT" >/dev/null 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/moto-api/" && break
  sleep 0.2
done
ARN=$(.venv/bin/python - "$PORT" <<'PYEOF'
import sys, boto3
k = boto3.client("kms", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing")
print(k.create_key()["KeyMetadata"]["Arn"])
PYEOF
)

echo "== $N envelope encrypts with and without the cache (moto on 127.0.0.1:$PORT)" >&2
OUT=$(target/release/examples/bench_envelope "http://127.0.0.1:$PORT" "$ARN" "$N")

.venv/bin/python - "$OUT" <<'PYEOF'
import json, sys
r = json.loads(sys.argv[1])
print(f"\nenvelope encrypt, AWS KMS = moto_server (loopback), {r['n']:,} messages each, single task")
print(f"  {'':28} {'provider calls':>15} {'encrypts/s (median)':>21} {'total s':>9}")
print(f"  {'with cache (1000 msg/key)':28} {r['cached_provider_calls']:>15,} {r['cached_encrypts_per_sec_median']:>21,.0f} {r['cached_total_secs']:>9.1f}")
print(f"  {'without cache':28} {r['uncached_provider_calls']:>15,} {r['uncached_encrypts_per_sec_median']:>21,.0f} {r['uncached_total_secs']:>9.1f}")
calls = r["cached_provider_calls"]
ratio = r["cached_encrypts_per_sec_median"] / r["uncached_encrypts_per_sec_median"]
print(f"\n  provider calls with cache: {calls} (target <= 100): {'meets target' if calls <= 100 else 'ABOVE target'}")
print(f"  throughput ratio cached / uncached: {ratio:,.1f}x")
PYEOF
