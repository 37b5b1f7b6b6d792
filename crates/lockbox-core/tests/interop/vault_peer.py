"""Independent re-implementation of HashiCorp Vault Transit's symmetric
ciphertext format, written from Vault's sdk/helper/keysutil/policy.go
(GetKey, DeriveKey, EncryptWithFactory, SymmetricEncryptRaw,
DecryptWithFactory, SymmetricDecryptRaw) with the `cryptography` package.
It shares no code with Lockbox.

Reads one JSON document on stdin:

    {"ops": [op, ...]}

where every op has
    "op":         "encrypt" | "decrypt"
    "key_type":   "aes128-gcm96" | "aes256-gcm96" | "chacha20-poly1305"
    "keys":       {"<version>": "<base64 raw key>", ...}   (as Vault's export)
    "derived":    bool
    "convergent": bool                    (convergent version 3)
    "context":    base64                  (HKDF info for derived keys)
    "aad":        base64                  (AEAD associated data)
and
    encrypt: "version": int, "plaintext": base64,
             "nonce_mode": "vault" (default) | "lockbox"
    decrypt: "ciphertext": "vault:vN:..."

"nonce_mode": "lockbox" computes the convergent nonce the way Lockbox does
when the associated data is not empty (Vault itself ignores the associated
data there); with empty associated data both modes are Vault's.

Writes {"results": [{"ok": <ciphertext or base64 plaintext>} |
{"error": "<message>"}, ...]} on stdout.
"""

import base64
import hashlib
import hmac
import json
import os
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ENC_KEY_BYTES = {"aes128-gcm96": 16, "aes256-gcm96": 32, "chacha20-poly1305": 32}
NONCE_SIZE = 12
LOCKBOX_AAD_NONCE_LABEL = b"lockbox/v1/convergent-aad-nonce-key"


class VaultError(Exception):
    pass


def b64d(s):
    return base64.b64decode(s, validate=True)


def new_aead(key_type, key):
    if key_type == "chacha20-poly1305":
        return ChaCha20Poly1305(key)
    return AESGCM(key)


def get_key(op, version, num_bytes):
    """Vault's Policy.GetKey: the raw key, or HKDF-SHA256(key, salt=nil, info=context)."""
    raw = op["keys"].get(str(version))
    if raw is None:
        raise VaultError("no such key version")
    key = b64d(raw)
    if not op["derived"]:
        return key
    context = b64d(op.get("context", ""))
    if len(context) == 0:
        raise VaultError("missing 'context' for key derivation")
    return HKDF(algorithm=hashes.SHA256(), length=num_bytes, salt=None, info=context).derive(key)


def hmac_sha256(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()


def encrypt(op):
    key_type = op["key_type"]
    version = op["version"]
    plaintext = b64d(op["plaintext"])
    aad = b64d(op.get("aad", ""))
    enc_bytes = ENC_KEY_BYTES[key_type]
    # convergentVersion(ver) > 2: derive 32 more bytes for the HMAC key.
    hmac_bytes = 32 if op["convergent"] else 0
    key = get_key(op, version, enc_bytes + hmac_bytes)
    enc_key = key[:enc_bytes]
    if op["convergent"]:
        hmac_key = key[enc_bytes:]
        assert len(hmac_key) == 32
        if op.get("nonce_mode", "vault") == "lockbox" and len(aad) > 0:
            aad_key = hmac_sha256(hmac_key, LOCKBOX_AAD_NONCE_LABEL)
            nonce = hmac_sha256(aad_key, len(aad).to_bytes(8, "big") + aad + plaintext)[:NONCE_SIZE]
        else:
            nonce = hmac_sha256(hmac_key, plaintext)[:NONCE_SIZE]
    else:
        nonce = os.urandom(NONCE_SIZE)
    sealed = new_aead(key_type, enc_key).encrypt(nonce, plaintext, aad if aad else None)
    return "vault:v%d:%s" % (version, base64.b64encode(nonce + sealed).decode("ascii"))


def decrypt(op):
    value = op["ciphertext"]
    prefix, sep = "vault:v", ":"
    if not value.startswith(prefix):
        raise VaultError("invalid ciphertext: no prefix")
    parts = value[len(prefix):].split(sep, 1)
    if len(parts) != 2:
        raise VaultError("invalid ciphertext: wrong number of fields")
    try:
        version = int(parts[0])
    except ValueError:
        raise VaultError("invalid ciphertext: version number could not be decoded")
    if version == 0:
        version = 1
    try:
        decoded = b64d(parts[1])
    except ValueError:
        raise VaultError("invalid ciphertext: could not decode base64")
    key = get_key(op, version, ENC_KEY_BYTES[op["key_type"]])
    if len(decoded) < NONCE_SIZE:
        raise VaultError("invalid ciphertext length")
    nonce, sealed = decoded[:NONCE_SIZE], decoded[NONCE_SIZE:]
    aad = b64d(op.get("aad", ""))
    try:
        plain = new_aead(op["key_type"], key).decrypt(nonce, sealed, aad if aad else None)
    except (InvalidTag, ValueError):
        raise VaultError("cipher: message authentication failed")
    return base64.b64encode(plain).decode("ascii")


def main():
    request = json.load(sys.stdin)
    results = []
    for op in request["ops"]:
        try:
            if op["op"] == "encrypt":
                results.append({"ok": encrypt(op)})
            elif op["op"] == "decrypt":
                results.append({"ok": decrypt(op)})
            else:
                results.append({"error": "unknown op %r" % op["op"]})
        except VaultError as e:
            results.append({"error": str(e)})
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
