"""Fernet test peer: Python `cryptography`'s Fernet/MultiFernet, driven by JSON.

Reads {"ops": [...]} on stdin and writes {"results": [...]} on stdout, one
result per op, in order. Bytes travel as standard base64 ("pt"); keys and
tokens as the text Fernet itself uses.

Ops:
  {"op": "generate_key"}                                   -> {"key"}
  {"op": "encrypt", "key", "pt", "time"}                    -> {"token"}
  {"op": "encrypt_parts", "key", "pt", "time", "iv"(hex)}   -> {"token"}
  {"op": "decrypt", "keys", "token", "ttl"?, "now"?}        -> {"ok", "pt"?, "error"?}
      ttl null: Fernet.decrypt(token) (no time checks in Python);
      ttl set:  decrypt_at_time(token, ttl, now).
      One key uses Fernet, several MultiFernet.
  {"op": "extract_timestamp", "keys", "token"}              -> {"ok", "timestamp"?}
  {"op": "rotate", "keys", "token"}                         -> {"ok", "token"?}
"""

import base64
import json
import sys

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


def make(keys):
    fernets = [Fernet(k.encode()) for k in keys]
    return fernets[0] if len(fernets) == 1 else MultiFernet(fernets)


def guarded(fn):
    try:
        return {"ok": True, **fn()}
    except InvalidToken:
        return {"ok": False, "error": "InvalidToken"}


def run(op):
    kind = op["op"]
    if kind == "generate_key":
        return {"key": Fernet.generate_key().decode()}
    if kind == "encrypt":
        f = Fernet(op["key"].encode())
        token = f.encrypt_at_time(base64.b64decode(op["pt"]), op["time"])
        return {"token": token.decode()}
    if kind == "encrypt_parts":
        # Private API, but the only way to fix the IV; cryptography is pinned
        # in tests/requirements.txt.
        f = Fernet(op["key"].encode())
        token = f._encrypt_from_parts(
            base64.b64decode(op["pt"]), op["time"], bytes.fromhex(op["iv"])
        )
        return {"token": token.decode()}
    if kind == "decrypt":
        f = make(op["keys"])
        token = op["token"].encode()
        if op.get("ttl") is None:
            return guarded(lambda: {"pt": base64.b64encode(f.decrypt(token)).decode()})
        return guarded(
            lambda: {
                "pt": base64.b64encode(
                    f.decrypt_at_time(token, op["ttl"], op["now"])
                ).decode()
            }
        )
    if kind == "extract_timestamp":
        f = make(op["keys"])
        return guarded(lambda: {"timestamp": f.extract_timestamp(op["token"].encode())})
    if kind == "rotate":
        fernets = [Fernet(k.encode()) for k in op["keys"]]
        m = MultiFernet(fernets)
        return guarded(lambda: {"token": m.rotate(op["token"].encode()).decode()})
    raise ValueError(f"unknown op {kind!r}")


def main():
    request = json.load(sys.stdin)
    json.dump({"results": [run(op) for op in request["ops"]]}, sys.stdout)


if __name__ == "__main__":
    main()
