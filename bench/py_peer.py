"""Python `cryptography` on the same inputs as bench_core: Fernet and AESGCM.

Prints JSON: median ops/s (single thread) of each operation.
"""
import json
import os
import sys
import time

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

REPEATS = 7
RUN_S = float(os.environ.get("BENCH_RUN_MS", "300")) / 1000.0


def ops_per_sec(f):
    batch = 1
    while True:
        t = time.perf_counter()
        for _ in range(batch):
            f()
        if time.perf_counter() - t >= 0.001:
            break
        batch *= 2
    rates = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < RUN_S:
            for _ in range(batch):
                f()
            n += batch
        rates.append(n / (time.perf_counter() - t))
    rates.sort()
    return rates[REPEATS // 2]


field = b"\x42" * 32
mib = b"\x17" * (1 << 20)
ctx = b"tenant=acme;table=users;column=ssn;row=42"
fer = Fernet(Fernet.generate_key())
tok = fer.encrypt(field)
gcm = AESGCM(AESGCM.generate_key(bit_length=256))
nonce = os.urandom(12)
ct = gcm.encrypt(nonce, field, ctx)
big = gcm.encrypt(nonce, mib, ctx)

out = {
    "py_fernet_encrypt_32": ops_per_sec(lambda: fer.encrypt(field)),
    "py_fernet_decrypt_32": ops_per_sec(lambda: fer.decrypt(tok)),
    "py_aesgcm_encrypt_32": ops_per_sec(lambda: gcm.encrypt(os.urandom(12), field, ctx)),
    "py_aesgcm_decrypt_32": ops_per_sec(lambda: gcm.decrypt(nonce, ct, ctx)),
    "py_aesgcm_encrypt_1mib_bytes_per_sec": (1 << 20) * ops_per_sec(lambda: gcm.encrypt(os.urandom(12), mib, ctx)),
    "py_aesgcm_decrypt_1mib_bytes_per_sec": (1 << 20) * ops_per_sec(lambda: gcm.decrypt(nonce, big, ctx)),
}
for k, v in out.items():
    print(f"{k:40} {v:>14.0f}", file=sys.stderr)
print(json.dumps(out))
