#!/usr/bin/env python3
"""Writes docs/openapi.json, the OpenAPI 3.0 description of Lockbox's HTTP API.

The endpoint table below is the source; run this after changing the API:
    python3 scripts/gen-openapi.py
The server embeds docs/openapi.json and serves it at /v1/openapi.json."""
import json
import pathlib
import sys

B64 = {"type": "string", "format": "byte", "description": "standard base64"}
S = {"type": "string"}
I = {"type": "integer", "minimum": 0, "maximum": 4294967295}
BOOL = {"type": "boolean"}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}}


def obj(props, required=()):
    o = {"type": "object", "properties": props}
    if required:
        o["required"] = list(required)
    return o


def batch(item):
    return {"type": "array", "description": "at most 10 000 items", "items": item}


ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}}
ENVELOPE = {"description": "success (Vault envelope)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}}
PLAIN = {"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}}
NOCONTENT = {"description": "no content"}


def op(summary, body=None, ok=ENVELOPE, params=(), auth=True, extra=None):
    o = {"summary": summary, "responses": {"200": ok, "400": ERR, "403": ERR, "404": ERR, "405": ERR, "413": ERR, "503": ERR}}
    if ok is NOCONTENT:
        o["responses"] = {"204": NOCONTENT, **{k: v for k, v in o["responses"].items() if k != "200"}}
    if extra:
        o["responses"].update(extra)
    if params:
        o["parameters"] = list(params)
    if body is not None:
        o["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    if not auth:
        o["security"] = []
    return o


def path_param(name, schema=None):
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


ENV_CTX = {"type": "object", "additionalProperties": {"type": "string"}, "description": "encryption context: string values"}
enc_item = obj({"plaintext": B64, "context": B64, "associated_data": B64, "key_version": I, "reference": S})
dec_item = obj({"ciphertext": S, "context": B64, "associated_data": B64, "reference": S})
create = obj({"type": {"type": "string", "enum": ["aes256-gcm96", "aes128-gcm96", "chacha20-poly1305", "xchacha20-poly1305",
                                                   "aes256-gcm-siv", "hmac", "ed25519", "ecdsa-p256", "ecdsa-p384",
                                                   "rsa-2048", "rsa-3072", "rsa-4096"]},
              "derived": BOOL, "convergent_encryption": BOOL, "exportable": BOOL, "allow_plaintext_backup": BOOL,
              "auto_rotate_period": {"oneOf": [I, S]}})
config = obj({"min_decryption_version": I, "min_encryption_version": I, "deletion_allowed": BOOL, "exportable": BOOL,
              "allow_plaintext_backup": BOOL, "auto_rotate_period": {"oneOf": [I, S]}})
sign_body = obj({"input": B64, "hash_algorithm": {"type": "string", "enum": ["sha2-256", "sha2-384", "sha2-512"]},
                 "signature_algorithm": {"type": "string", "enum": ["pss", "pkcs1v15"]},
                 "marshaling_algorithm": {"type": "string", "enum": ["asn1", "jws"]}, "key_version": I,
                 "batch_input": batch(obj({"input": B64, "reference": S}))})
verify_body = obj({"input": B64, "signature": S, "hmac": S, "hash_algorithm": S, "algorithm": S,
                   "signature_algorithm": S, "marshaling_algorithm": S,
                   "batch_input": batch(obj({"input": B64, "signature": S, "hmac": S, "reference": S}))})
record_spec = {"key": S, "index_key": S, "tenant": S, "context_template": S,
               "fields": {"type": "array", "items": S}, "blind_index": {"type": "array", "items": S},
               "normalize": {"type": "array", "items": {"type": "string", "enum": ["trim", "case_fold", "nfc"]}},
               "truncation": {"type": "integer", "minimum": 8, "maximum": 32}}

paths = {
    "/v1/sys/health": {"get": op("health: 200 unsealed, 503 sealed, 501 not initialized", ok=PLAIN, auth=False,
                                 extra={"501": PLAIN})},
    "/v1/sys/seal-status": {"get": op("seal status", ok=PLAIN, auth=False)},
    "/v1/sys/init": {"get": op("whether initialized", ok=PLAIN, auth=False),
                     "put": op("initialize with Shamir shares", obj({"secret_shares": {"type": "integer", "minimum": 1, "maximum": 255},
                                                                       "secret_threshold": {"type": "integer", "minimum": 1, "maximum": 255}},
                                                                      ["secret_shares", "secret_threshold"]), ok=PLAIN, auth=False)},
    "/v1/sys/unseal": {"put": op("give one unseal share", obj({"key": S, "reset": BOOL}), ok=PLAIN, auth=False)},
    "/v1/sys/seal": {"put": op("seal", ok=NOCONTENT)},
    "/v1/sys/mounts": {"get": op("list Transit mounts", ok=PLAIN)},
    "/v1/sys/mounts/{path}": {"post": op("enable a Transit mount", obj({"type": {"type": "string", "enum": ["transit"]}}, ["type"]),
                                         ok=NOCONTENT, params=[path_param("path")]),
                              "delete": op("disable a Transit mount (no live keys)", ok=NOCONTENT, params=[path_param("path")])},
    "/v1/auth/token/lookup-self": {"get": op("the token's own information"), "post": op("the token's own information")},
    "/v1/auth/token/create": {"post": op("create a token (answer in auth)", obj({"policies": {"type": "array", "items": S}, "ttl": {"oneOf": [I, S]},
                                                                                 "explicit_max_ttl": {"oneOf": [I, S]}, "renewable": BOOL,
                                                                                 "display_name": S, "meta": {"type": "object", "additionalProperties": S},
                                                                                 "rate_limit": I}))},
    "/v1/auth/token/lookup": {"post": op("look a token up", obj({"token": S}, ["token"]))},
    "/v1/auth/token/lookup-accessor": {"post": op("look a token up by accessor", obj({"accessor": S}, ["accessor"]))},
    "/v1/auth/token/renew": {"post": op("renew a token", obj({"token": S, "increment": {"oneOf": [I, S]}}, ["token"]))},
    "/v1/auth/token/renew-self": {"post": op("renew the token in use", obj({"increment": {"oneOf": [I, S]}}))},
    "/v1/auth/token/renew-accessor": {"post": op("renew a token by accessor", obj({"accessor": S, "increment": {"oneOf": [I, S]}}, ["accessor"]))},
    "/v1/auth/token/revoke": {"post": op("revoke a token", obj({"token": S}, ["token"]), ok=NOCONTENT)},
    "/v1/auth/token/revoke-accessor": {"post": op("revoke a token by accessor", obj({"accessor": S}, ["accessor"]), ok=NOCONTENT)},
    "/v1/sys/policies/acl": {"get": op("list policies (?list=true; also LIST)",
                                       params=[{"name": "list", "in": "query", "required": False, "schema": {"type": "string", "enum": ["true"]}}])},
    "/v1/sys/policies/acl/{name}": {"get": op("read a policy", params=[NAME]),
                                    "put": op("write a policy (HCL/JSON text, or a built-in role over some keys)",
                                              obj({"policy": S, "role": {"type": "string", "enum": ["app", "operator", "auditor", "admin"]}, "keys": S}),
                                              ok=NOCONTENT, params=[NAME]),
                                    "delete": op("delete a policy", ok=NOCONTENT, params=[NAME])},
    "/v1/sys/policy": {"get": op("list policies (Vault's older path)")},
    "/v1/sys/policy/{name}": {"get": op("read a policy (older path)", params=[NAME]),
                              "put": op("write a policy (older path)", obj({"policy": S}), ok=NOCONTENT, params=[NAME])},
    "/v1/sys/audit": {"get": op("audit sinks and health")},
    "/v1/sys/audit/verify": {"post": op("verify the audit trail of every sink")},
    "/v1/sys/audit/query": {"post": op("query the store audit sink", obj({"key": S, "since": {"type": "integer"}, "until": {"type": "integer"},
                                                                         "outcome": {"type": "string", "enum": ["ok", "error"]}, "segment": S,
                                                                         "limit": {"type": "integer", "minimum": 1, "maximum": 100000}}))},
    "/v1/sys/audit-hash": {"post": op("HMAC of a value under the audit key", obj({"input": S}, ["input"]))},
    "/v1/sys/metrics": {"get": op("Prometheus metrics", ok={"description": "Prometheus text format",
                                                             "content": {"text/plain": {"schema": {"type": "string"}}}},
                                  params=[{"name": "format", "in": "query", "required": False, "schema": {"type": "string", "enum": ["prometheus"]}}])},
    "/v1/sys/events": {"post": op("record a re-encryption event", obj({"event": {"type": "string", "enum": ["REENCRYPTION_STARTED", "REENCRYPTION_COMPLETED"]},
                                                                      "data": {"type": "object"}}, ["event"]), ok=NOCONTENT)},
    "/v1/openapi.json": {"get": op("this document", ok=PLAIN, auth=False)},
    "/v1/transit/keys": {"get": op("list keys (?list=true; also the LIST verb)",
                                   params=[{"name": "list", "in": "query", "required": False, "schema": {"type": "string", "enum": ["true"]}}])},
    "/v1/transit/keys/{name}": {"get": op("read a key", params=[NAME]), "post": op("create a key", create, params=[NAME]),
                                "delete": op("delete a key (needs deletion_allowed)", ok=NOCONTENT, params=[NAME])},
    "/v1/transit/keys/{name}/config": {"post": op("configure a key", config, params=[NAME])},
    "/v1/transit/keys/{name}/rotate": {"post": op("rotate a key", params=[NAME])},
    "/v1/transit/keys/{name}/trim": {"post": op("trim old versions", obj({"min_available_version": I}, ["min_available_version"]), params=[NAME])},
    "/v1/transit/encrypt/{name}": {"post": op("encrypt (vault:vN:)", obj({**enc_item["properties"], "type": S, "convergent_encryption": BOOL,
                                                                          "batch_input": batch(enc_item), "partial_failure_response_code": I}), params=[NAME])},
    "/v1/transit/decrypt/{name}": {"post": op("decrypt", obj({**dec_item["properties"], "batch_input": batch(dec_item),
                                                               "partial_failure_response_code": I}), params=[NAME])},
    "/v1/transit/rewrap/{name}": {"post": op("rewrap under the latest version", obj({"ciphertext": S, "context": B64, "key_version": I,
                                                                                     "batch_input": batch(dec_item)}), params=[NAME])},
    "/v1/transit/datakey/{type}/{name}": {"post": op("generate a data key", obj({"bits": {"type": "integer", "enum": [128, 256, 512]},
                                                                                 "context": B64, "key_version": I}),
                                                     params=[path_param("type", {"type": "string", "enum": ["plaintext", "wrapped"]}), NAME])},
    "/v1/transit/random": {"post": op("random bytes", obj({"bytes": {"type": "integer", "minimum": 1, "maximum": 131072},
                                                          "format": {"type": "string", "enum": ["base64", "hex"]}}))},
    "/v1/transit/random/{bytes}": {"post": op("random bytes", obj({"format": {"type": "string", "enum": ["base64", "hex"]}}),
                                              params=[path_param("bytes", {"type": "integer", "minimum": 1, "maximum": 131072})])},
    "/v1/transit/hash": {"post": op("hash", obj({"input": B64, "algorithm": {"type": "string", "enum": ["sha2-224", "sha2-256", "sha2-384", "sha2-512", "sha3-224", "sha3-256", "sha3-384", "sha3-512"]},
                                                 "format": {"type": "string", "enum": ["hex", "base64"]}}, ["input"]))},
    "/v1/transit/hmac/{name}": {"post": op("HMAC", obj({"input": B64, "algorithm": S, "key_version": I,
                                                         "batch_input": batch(obj({"input": B64, "reference": S}))}), params=[NAME])},
    "/v1/transit/sign/{name}": {"post": op("sign", sign_body, params=[NAME])},
    "/v1/transit/verify/{name}": {"post": op("verify a signature or HMAC", verify_body, params=[NAME])},
    "/v1/transit/export/{type}/{name}": {"get": op("export key material (exportable keys)",
                                                   params=[path_param("type", {"type": "string", "enum": ["encryption-key", "signing-key", "hmac-key", "public-key"]}), NAME])},
    "/v1/transit/backup/{name}": {"get": op("back a key up (allow_plaintext_backup)", params=[NAME])},
    "/v1/transit/restore/{name}": {"post": op("restore a backup", obj({"backup": S, "force": BOOL}, ["backup"]), ok=NOCONTENT, params=[NAME])},
    "/v1/transit/cache-config": {"get": op("key cache size"), "post": op("set the key cache size", obj({"size": I}), ok=NOCONTENT)},
    "/v1/lockbox/encrypt/{name}": {"post": op("encrypt in the native lbx1: format", obj({"plaintext": B64, "context": B64,
                                                                                        "batch_input": batch(obj({"plaintext": B64, "context": B64, "reference": S}))}), params=[NAME])},
    "/v1/lockbox/decrypt": {"post": op("decrypt a native ciphertext (the key is in its header)",
                                       obj({"ciphertext": S, "context": B64, "batch_input": batch(obj({"ciphertext": S, "context": B64, "reference": S}))}))},
    "/v1/lockbox/records/encrypt": {"post": op("encrypt fields of a record, with blind indexes", obj({**record_spec, "record": {"type": "object"}}, ["key", "record"]))},
    "/v1/lockbox/records/decrypt": {"post": op("decrypt fields of a record", obj({**record_spec, "record": {"type": "object"}}, ["key", "record"]))},
    "/v1/lockbox/records/search": {"post": op("blind index values of a term under every active version",
                                              obj({**record_spec, "field": S, "value": {}}, ["key", "field", "value"]))},
    "/v1/lockbox/envelope/encrypt": {"post": op("envelope encryption (lbxe1:): a data key per message, wrapped by a named key or a tenant's key",
                                                obj({"key": S, "tenant": S, "plaintext": B64, "context": ENV_CTX}, ["plaintext"]))},
    "/v1/lockbox/envelope/decrypt": {"post": op("decrypt an lbxe1: envelope (context, if given, must equal the stored one)",
                                                obj({"key": S, "tenant": S, "ciphertext": S, "context": ENV_CTX}, ["ciphertext"]))},
    "/v1/lockbox/keys/{name}/restore": {"post": op("undelete a key", ok=NOCONTENT, params=[NAME])},
    "/v1/lockbox/keys/{name}/destroy": {"post": op("destroy a key (crypto-shredding)", ok=NOCONTENT, params=[NAME])},
    "/v1/lockbox/keys/{name}/backup": {"post": op("encrypted backup (passphrase)", obj({"passphrase": {"type": "string", "minLength": 12}}), params=[NAME])},
    "/v1/lockbox/keys/{name}/import": {"post": op("import key material", obj({"type": S, "keys": {"type": "object", "additionalProperties": B64},
                                                                               "derived": BOOL, "convergent_encryption": BOOL, "exportable": BOOL,
                                                                               "allow_plaintext_backup": BOOL}, ["keys"]), ok=NOCONTENT, params=[NAME])},
    "/v1/lockbox/restore/{name}": {"post": op("restore a (possibly encrypted) backup", obj({"backup": S, "passphrase": S}, ["backup"]), params=[NAME])},
}

doc = {
    "openapi": "3.0.3",
    "info": {"title": "Lockbox", "version": "0.1.0",
             "description": "Vault-Transit-compatible API and Lockbox's native API. See docs/API.md for examples."},
    "servers": [{"url": "http://127.0.0.1:8200"}],
    "security": [{"vaultToken": []}],
    "components": {
        "securitySchemes": {"vaultToken": {"type": "apiKey", "in": "header", "name": "X-Vault-Token"}},
        "schemas": {
            "Errors": obj({"errors": {"type": "array", "items": S}}, ["errors"]),
            "Envelope": obj({"request_id": S, "lease_id": S, "renewable": BOOL, "lease_duration": {"type": "integer"},
                             "data": {"type": "object", "nullable": True}, "wrap_info": {"nullable": True},
                             "warnings": {"nullable": True}, "auth": {"nullable": True}}),
        },
    },
    "paths": paths,
}
out = pathlib.Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
if "--check" in sys.argv:
    if out.read_text() != text:
        sys.exit("docs/openapi.json is out of date: run python3 scripts/gen-openapi.py")
    print(f"{out.name} is up to date: {len(paths)} paths")
else:
    out.write_text(text)
    print(f"wrote {out.name}: {len(paths)} paths")
