"""AEAD test peer: Python `cryptography.hazmat.primitives.ciphers.aead`, driven by JSON.

Reads {"ops": [...]} on stdin and writes {"results": [...]} on stdout, one
result per op, in order. All byte strings are hex. Ciphertexts are
`ciphertext || tag` (what both `cryptography` and `AeadKey::seal` produce).

Ops:
  {"op": "seal", "alg", "key", "nonce", "aad", "pt"} -> {"ok": true, "ct"}
  {"op": "open", "alg", "key", "nonce", "aad", "ct"} -> {"ok": true, "pt"} | {"ok": false, "error"}

Algorithms use Lockbox's names: aes256-gcm, aes128-gcm, chacha20-poly1305,
aes256-gcm-siv.
"""

import json
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import (
    AESGCM,
    AESGCMSIV,
    ChaCha20Poly1305,
)

ALGORITHMS = {
    "aes256-gcm": (AESGCM, 32),
    "aes128-gcm": (AESGCM, 16),
    "chacha20-poly1305": (ChaCha20Poly1305, 32),
    "aes256-gcm-siv": (AESGCMSIV, 32),
}


def cipher(op):
    cls, key_len = ALGORITHMS[op["alg"]]
    key = bytes.fromhex(op["key"])
    if len(key) != key_len:
        raise ValueError(f"{op['alg']} needs a {key_len}-byte key")
    return cls(key)


def run(op):
    aead = cipher(op)
    nonce = bytes.fromhex(op["nonce"])
    aad = bytes.fromhex(op["aad"])
    if op["op"] == "seal":
        return {"ok": True, "ct": aead.encrypt(nonce, bytes.fromhex(op["pt"]), aad).hex()}
    if op["op"] == "open":
        try:
            pt = aead.decrypt(nonce, bytes.fromhex(op["ct"]), aad)
        except InvalidTag:
            return {"ok": False, "error": "InvalidTag"}
        return {"ok": True, "pt": pt.hex()}
    raise ValueError(f"unknown op {op['op']!r}")


def main():
    request = json.load(sys.stdin)
    json.dump({"results": [run(op) for op in request["ops"]]}, sys.stdout)


if __name__ == "__main__":
    main()
