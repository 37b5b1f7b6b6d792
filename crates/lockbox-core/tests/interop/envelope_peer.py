"""Envelope (lbxe1) peer: an independent parser written from docs/FORMAT.md,
decrypting with Python `cryptography` given the data key.

Reads the vector file (JSON) on stdin; writes
{"results": [{"plaintext", "context", "wrapped_keys"}...], "rejected": [bool...]}.
"""

import base64
import hashlib
import hmac
import json
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV, ChaCha20Poly1305

MAGIC = b"LBXE\x01"
# id -> (name, nonce length); docs/FORMAT.md "Algorithm identifiers".
ALGS = {1: ("aes256-gcm", 12), 3: ("chacha20-poly1305", 12), 4: ("xchacha20-poly1305", 24), 5: ("aes256-gcm-siv", 12)}


def xchacha_open(key, nonce, ct, aad):
    # cryptography has no XChaCha20-Poly1305: HChaCha20 (draft-irtf-cfrg-xchacha
    # section 2.2) derives the subkey, then ChaCha20-Poly1305 with nonce 0000 || nonce[16:24].
    def rotl(v, c):
        return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))

    def qr(s, a, b, c, d):
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 7)

    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    s += list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce[:16]))
    for _ in range(10):
        qr(s, 0, 4, 8, 12); qr(s, 1, 5, 9, 13); qr(s, 2, 6, 10, 14); qr(s, 3, 7, 11, 15)
        qr(s, 0, 5, 10, 15); qr(s, 1, 6, 11, 12); qr(s, 2, 7, 8, 13); qr(s, 3, 4, 9, 14)
    sub = struct.pack("<8I", *(s[0:4] + s[12:16]))
    return ChaCha20Poly1305(sub).decrypt(b"\0\0\0\0" + nonce[16:], ct, aad)


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def parse_and_open(text, data_key):
    if not text.startswith("lbxe1:"):
        raise ValueError("prefix")
    buf = MAGIC + b64url(text[6:])
    pos = len(MAGIC)

    def take(n):
        nonlocal pos
        if pos + n > len(buf):
            raise ValueError("truncated")
        out = buf[pos:pos + n]
        pos += n
        return out

    alg = take(1)[0]
    if alg not in ALGS:
        raise ValueError("algorithm")
    name, nonce_len = ALGS[alg]
    commitment = take(32)
    (n,) = struct.unpack(">H", take(2))
    ctx, last = {}, None
    for _ in range(n):
        (kl,) = struct.unpack(">H", take(2)); k = take(kl).decode()
        (vl,) = struct.unpack(">H", take(2)); v = take(vl).decode()
        if not k or (last is not None and k.encode() <= last.encode()):
            raise ValueError("context order")
        last = k
        ctx[k] = v
    wn = take(1)[0]
    if not 1 <= wn <= 16:
        raise ValueError("wrapped count")
    wrapped = []
    for _ in range(wn):
        pl = take(1)[0]
        if pl == 0:
            raise ValueError("provider")
        p = take(pl).decode()
        (kl,) = struct.unpack(">H", take(2)); kid = take(kl).decode()
        (wl,) = struct.unpack(">H", take(2)); w = take(wl)
        wrapped.append({"provider": p, "key_id": kid, "wrapped": base64.b64encode(w).decode()})
    header = buf[:pos]
    expected = hmac.new(data_key, b"lockbox/v1/envelope-commitment" + bytes([alg]), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, commitment):
        raise ValueError("commitment")
    nonce = take(nonce_len)
    body = buf[pos:]
    if len(body) < 16:
        raise ValueError("truncated")
    if name == "aes256-gcm":
        pt = AESGCM(data_key).decrypt(nonce, body, header)
    elif name == "aes256-gcm-siv":
        pt = AESGCMSIV(data_key).decrypt(nonce, body, header)
    elif name == "chacha20-poly1305":
        pt = ChaCha20Poly1305(data_key).decrypt(nonce, body, header)
    else:
        pt = xchacha_open(data_key, nonce, body, header)
    return pt, ctx, wrapped


doc = json.load(sys.stdin)
results = []
for case in doc["cases"]:
    pt, ctx, wrapped = parse_and_open(case["ciphertext"], base64.b64decode(case["data_key"]))
    results.append({"plaintext": base64.b64encode(pt).decode(), "context": ctx, "wrapped_keys": wrapped})
rejected = []
for case in doc["invalid"]:
    try:
        parse_and_open(case["ciphertext"], base64.b64decode(case["data_key"]))
        rejected.append(False)
    except (ValueError, InvalidTag, UnicodeDecodeError, struct.error, KeyError):
        rejected.append(True)
json.dump({"results": results, "rejected": rejected}, sys.stdout)
