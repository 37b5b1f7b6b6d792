"""Every method of hvac's Transit class, and the sys calls hvac makes,
against a running Lockbox server. Usage: VAULT_ADDR=... VAULT_TOKEN=... python hvac_suite.py
Prints `N passed, M failed` last; exits non-zero on any failure."""
import base64
import os
import sys
import traceback

import hvac
from hvac import exceptions

ADDR = os.environ["VAULT_ADDR"]
TOKEN = os.environ["VAULT_TOKEN"]
client = hvac.Client(url=ADDR, token=TOKEN)
transit = client.secrets.transit
results = []


def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


def case(fn):
    try:
        fn()
        results.append((fn.__name__, None))
    except Exception:  # noqa: BLE001 - report every failure
        results.append((fn.__name__, traceback.format_exc()))
    return fn


def raises(exc, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except exc:
        return
    raise AssertionError(f"{fn.__name__} did not raise {exc.__name__}")


@case
def sys_calls():
    assert client.sys.is_initialized() is True
    assert client.sys.is_sealed() is False
    status = client.sys.read_seal_status()
    assert status["sealed"] is False and status["initialized"] is True
    health = client.sys.read_health_status(method="GET")
    assert health["initialized"] is True and health["sealed"] is False
    assert client.is_authenticated()
    me = client.auth.token.lookup_self()
    assert "root" in me["data"]["policies"]


@case
def create_read_list_keys():
    for name, typ in [("hv-aes", "aes256-gcm96"), ("hv-chacha", "chacha20-poly1305"),
                      ("hv-ed", "ed25519"), ("hv-p256", "ecdsa-p256"), ("hv-p384", "ecdsa-p384"),
                      ("hv-rsa", "rsa-2048")]:
        transit.create_key(name=name, key_type=typ)
        k = transit.read_key(name=name)["data"]
        assert k["type"] == typ and k["latest_version"] == 1, k
    # hvac checks key_type against its own list, which lacks these: use its adapter.
    for name, typ in [("hv-aes128", "aes128-gcm96"), ("hv-hmac", "hmac")]:
        client.adapter.post(f"/v1/transit/keys/{name}", json={"type": typ})
        assert transit.read_key(name=name)["data"]["type"] == typ
    transit.create_key(name="hv-conv", derived=True, convergent_encryption=True)
    assert transit.read_key(name="hv-conv")["data"]["derived"] is True
    keys = transit.list_keys()["data"]["keys"]
    assert "hv-aes" in keys and "hv-rsa" in keys, keys
    raises(exceptions.InvalidPath, transit.read_key, name="hv-missing")


@case
def encrypt_decrypt_rewrap_rotate():
    ct = transit.encrypt_data(name="hv-aes", plaintext=b64("hello hvac"))["data"]["ciphertext"]
    assert ct.startswith("vault:v1:")
    assert base64.b64decode(transit.decrypt_data(name="hv-aes", ciphertext=ct)["data"]["plaintext"]) == b"hello hvac"
    transit.rotate_key(name="hv-aes")
    assert transit.read_key(name="hv-aes")["data"]["latest_version"] == 2
    re = transit.rewrap_data(name="hv-aes", ciphertext=ct)["data"]["ciphertext"]
    assert re.startswith("vault:v2:")
    assert base64.b64decode(transit.decrypt_data(name="hv-aes", ciphertext=re)["data"]["plaintext"]) == b"hello hvac"
    # derived + convergent with context: deterministic
    ctx = b64("tenant-1")
    a = transit.encrypt_data(name="hv-conv", plaintext=b64("same"), context=ctx)["data"]["ciphertext"]
    b = transit.encrypt_data(name="hv-conv", plaintext=b64("same"), context=ctx)["data"]["ciphertext"]
    assert a == b
    assert base64.b64decode(transit.decrypt_data(name="hv-conv", ciphertext=a, context=ctx)["data"]["plaintext"]) == b"same"
    # errors
    raises(exceptions.InvalidRequest, transit.encrypt_data, name="hv-aes", plaintext="***not base64***")
    raises(exceptions.InvalidRequest, transit.decrypt_data, name="hv-aes", ciphertext="vault:v1:AAAA")
    raises(exceptions.InvalidRequest, transit.decrypt_data, name="hv-missing", ciphertext=ct)


@case
def batches():
    items = [{"plaintext": b64(f"row {i}"), "reference": f"r{i}"} for i in range(5)]
    out = transit.encrypt_data(name="hv-aes", plaintext=None, batch_input=items)["data"]["batch_results"]
    assert [o["reference"] for o in out] == [f"r{i}" for i in range(5)]
    dec = transit.decrypt_data(name="hv-aes", ciphertext=None,
                               batch_input=[{"ciphertext": o["ciphertext"], "reference": o["reference"]} for o in out])
    assert [base64.b64decode(d["plaintext"]) for d in dec["data"]["batch_results"]] == [f"row {i}".encode() for i in range(5)]
    rw = transit.rewrap_data(name="hv-aes", ciphertext=None, batch_input=[{"ciphertext": o["ciphertext"]} for o in out])
    assert all(r["ciphertext"].startswith("vault:v2:") for r in rw["data"]["batch_results"])
    # one bad item: 400 with per-item errors
    raises(exceptions.InvalidRequest, transit.encrypt_data, name="hv-aes", plaintext=None,
           batch_input=[{"plaintext": b64("ok")}, {"plaintext": "!!"}])


@case
def update_config_trim_delete():
    transit.create_key(name="hv-life")
    transit.rotate_key(name="hv-life")
    transit.rotate_key(name="hv-life")
    transit.update_key_configuration(name="hv-life", min_decryption_version=2, deletion_allowed=True)
    k = transit.read_key(name="hv-life")["data"]
    assert k["min_decryption_version"] == 2 and k["deletion_allowed"] is True
    transit.trim_key(name="hv-life", min_version=2)
    assert transit.read_key(name="hv-life")["data"]["min_available_version"] == 2
    transit.delete_key(name="hv-life")
    assert "hv-life" not in transit.list_keys()["data"]["keys"]
    raises(exceptions.InvalidRequest, transit.delete_key, name="hv-aes")  # deletion not allowed


@case
def export_backup_restore():
    transit.create_key(name="hv-exp", exportable=True, allow_plaintext_backup=True)
    exp = transit.export_key(name="hv-exp", key_type="encryption-key")["data"]["keys"]
    assert len(base64.b64decode(exp["1"])) == 32
    latest = transit.export_key(name="hv-exp", key_type="encryption-key", version="latest")["data"]["keys"]
    assert list(latest) == ["1"]
    raises(exceptions.InvalidRequest, transit.export_key, name="hv-aes", key_type="encryption-key")
    backup = transit.backup_key(name="hv-exp")["data"]["backup"]
    transit.restore_key(backup=backup, name="hv-exp-restored")
    ct = transit.encrypt_data(name="hv-exp", plaintext=b64("portable"))["data"]["ciphertext"]
    assert base64.b64decode(transit.decrypt_data(name="hv-exp-restored", ciphertext=ct)["data"]["plaintext"]) == b"portable"


@case
def datakey_random_hash():
    dk = transit.generate_data_key(name="hv-aes", key_type="plaintext", bits=256)["data"]
    assert len(base64.b64decode(dk["plaintext"])) == 32
    assert base64.b64decode(transit.decrypt_data(name="hv-aes", ciphertext=dk["ciphertext"])["data"]["plaintext"]) == base64.b64decode(dk["plaintext"])
    for bits in (128, 512):
        w = transit.generate_data_key(name="hv-aes", key_type="wrapped", bits=bits)["data"]
        assert "plaintext" not in w or not w.get("plaintext")
    r = transit.generate_random_bytes(n_bytes=16, output_format="hex")["data"]["random_bytes"]
    assert len(r) == 32
    r = transit.generate_random_bytes(n_bytes=24)["data"]["random_bytes"]
    assert len(base64.b64decode(r)) == 24
    import hashlib
    for alg, fn in [("sha2-224", hashlib.sha224), ("sha2-256", hashlib.sha256), ("sha2-384", hashlib.sha384), ("sha2-512", hashlib.sha512)]:
        s = transit.hash_data(hash_input=b64("abc"), algorithm=alg, output_format="hex")["data"]["sum"]
        assert s == fn(b"abc").hexdigest(), alg
    # hvac's own list lacks SHA-3: the same endpoint through its adapter.
    for alg, fn in [("sha3-224", hashlib.sha3_224), ("sha3-256", hashlib.sha3_256), ("sha3-384", hashlib.sha3_384), ("sha3-512", hashlib.sha3_512)]:
        s = client.adapter.post(f"/v1/transit/hash/{alg}", json={"input": b64("abc"), "format": "hex"})["data"]["sum"]
        assert s == fn(b"abc").hexdigest(), alg
    s = transit.hash_data(hash_input=b64("abc"), algorithm="sha2-256", output_format="base64")["data"]["sum"]
    assert base64.b64decode(s) == hashlib.sha256(b"abc").digest()


@case
def hmac_sign_verify():
    for name in ("hv-hmac", "hv-aes"):
        mac = transit.generate_hmac(name=name, hash_input=b64("message"))["data"]["hmac"]
        assert mac.startswith("vault:v")
        assert transit.verify_signed_data(name=name, hash_input=b64("message"), hmac=mac)["data"]["valid"] is True
        assert transit.verify_signed_data(name=name, hash_input=b64("other"), hmac=mac)["data"]["valid"] is False
    for name, kw in [("hv-ed", {}), ("hv-p256", {}), ("hv-p256", {"marshaling_algorithm": "jws"}),
                     ("hv-p384", {"hash_algorithm": "sha2-384"}), ("hv-rsa", {}),
                     ("hv-rsa", {"signature_algorithm": "pkcs1v15"})]:
        sig = transit.sign_data(name=name, hash_input=b64("signed"), **kw)["data"]["signature"]
        assert transit.verify_signed_data(name=name, hash_input=b64("signed"), signature=sig, **kw)["data"]["valid"] is True, (name, kw)
        assert transit.verify_signed_data(name=name, hash_input=b64("forged"), signature=sig, **kw)["data"]["valid"] is False, (name, kw)
    # batches with references
    out = transit.sign_data(name="hv-ed", batch_input=[{"input": b64("a"), "reference": "x"}, {"input": b64("b"), "reference": "y"}])
    res = out["data"]["batch_results"]
    assert [r["reference"] for r in res] == ["x", "y"]
    # hvac's verify_signed_data has no batch_input: the same request through its adapter
    ver = client.adapter.post("/v1/transit/verify/hv-ed", json={"batch_input": [
        {"input": b64("a"), "signature": res[0]["signature"], "reference": "x"},
        {"input": b64("a"), "signature": res[1]["signature"], "reference": "y"}]})
    assert [r["valid"] for r in ver["data"]["batch_results"]] == [True, False]


@case
def init_and_unseal_a_new_server():
    addr = os.environ.get("VAULT_ADDR_UNINITIALIZED")
    assert addr, "the harness starts a second, uninitialized server"
    fresh = hvac.Client(url=addr)
    assert fresh.sys.is_initialized() is False
    out = fresh.sys.initialize(secret_shares=5, secret_threshold=3)
    keys, token = out["keys"], out["root_token"]
    assert len(keys) == 5 and token
    assert fresh.sys.is_sealed() is True
    raises(exceptions.VaultDown, hvac.Client(url=addr, token=token).secrets.transit.list_keys)
    st = fresh.sys.submit_unseal_key(keys[0])
    assert st["sealed"] is True and st["progress"] == 1
    raises(exceptions.InvalidRequest, fresh.sys.submit_unseal_key, keys[0][:-2] + "zz")  # corrupt share
    st = fresh.sys.submit_unseal_keys(keys[2:4])
    assert st["sealed"] is False, st
    c = hvac.Client(url=addr, token=token)
    c.secrets.transit.create_key(name="after-unseal")
    ct = c.secrets.transit.encrypt_data(name="after-unseal", plaintext=b64("x"))["data"]["ciphertext"]
    assert base64.b64decode(c.secrets.transit.decrypt_data(name="after-unseal", ciphertext=ct)["data"]["plaintext"]) == b"x"
    raises(exceptions.InvalidRequest, fresh.sys.initialize, 3, 2)  # already initialized


@case
def mounts():
    client.sys.enable_secrets_engine(backend_type="transit", path="payments-transit")
    listed = client.sys.list_mounted_secrets_engines()
    data = listed.get("data", listed)
    assert "transit/" in data and "payments-transit/" in data, list(data)
    raises(exceptions.InvalidRequest, client.sys.enable_secrets_engine, backend_type="transit", path="payments-transit")
    raises(exceptions.InvalidRequest, client.sys.enable_secrets_engine, backend_type="kv", path="kv")
    # Same key name, two mounts: two different keys.
    other = client.secrets.transit
    other.create_key(name="hv-aes", mount_point="payments-transit")
    ct = other.encrypt_data(name="hv-aes", plaintext=b64("scoped"), mount_point="payments-transit")["data"]["ciphertext"]
    assert ct.startswith("vault:v1:")  # the default mount's hv-aes is at v2 by now
    raises(exceptions.InvalidRequest, transit.decrypt_data, name="hv-aes", ciphertext=ct)
    assert other.list_keys(mount_point="payments-transit")["data"]["keys"] == ["hv-aes"]
    raises(exceptions.InvalidRequest, client.sys.disable_secrets_engine, path="payments-transit")  # has keys
    other.update_key_configuration(name="hv-aes", deletion_allowed=True, mount_point="payments-transit")
    other.delete_key(name="hv-aes", mount_point="payments-transit")
    client.sys.disable_secrets_engine(path="payments-transit")
    data = client.sys.list_mounted_secrets_engines()
    assert "payments-transit/" not in data.get("data", data)


@case
def bad_token_is_forbidden():
    bad = hvac.Client(url=ADDR, token="not-a-token")
    raises(exceptions.Forbidden, bad.secrets.transit.list_keys)
    raises(exceptions.Forbidden, bad.secrets.transit.encrypt_data, name="hv-aes", plaintext=b64("x"))


@case
def tokens_and_policies():
    # Policies through hvac's sys API (HCL text), tokens through auth.token.
    client.secrets.transit.create_key(name="hv-scoped")
    client.sys.create_or_update_acl_policy(
        name="hv-app",
        policy='path "transit/encrypt/hv-scoped" { capabilities = ["update"] }\n'
        'path "transit/decrypt/hv-scoped" { capabilities = ["update"] }',
    )
    assert "hv-app" in client.sys.list_acl_policies()["data"]["keys"]
    assert "hv-scoped" in client.sys.read_acl_policy(name="hv-app")["data"]["policy"]
    tok = client.auth.token.create(policies=["hv-app"], ttl="1h", renewable=True)
    scoped = hvac.Client(url=ADDR, token=tok["auth"]["client_token"])
    assert scoped.is_authenticated()
    me = scoped.auth.token.lookup_self()["data"]
    assert me["policies"] == ["hv-app"] and me["accessor"] == tok["auth"]["accessor"]
    ct = scoped.secrets.transit.encrypt_data(name="hv-scoped", plaintext=b64("scoped"))["data"]["ciphertext"]
    assert scoped.secrets.transit.decrypt_data(name="hv-scoped", ciphertext=ct)["data"]["plaintext"] == b64("scoped")
    # Outside its policy: Forbidden.
    raises(exceptions.Forbidden, scoped.secrets.transit.encrypt_data, name="hv-aes", plaintext=b64("x"))
    raises(exceptions.Forbidden, scoped.secrets.transit.list_keys)
    raises(exceptions.Forbidden, scoped.auth.token.create, policies=["admin"], ttl="1h")
    renewed = scoped.auth.token.renew_self(increment="2h")
    assert renewed["auth"]["lease_duration"] > 3600
    looked = client.auth.token.lookup_accessor(tok["auth"]["accessor"])["data"]
    assert looked["display_name"]
    scoped.auth.token.revoke_self()
    raises(exceptions.Forbidden, scoped.secrets.transit.encrypt_data, name="hv-scoped", plaintext=b64("x"))
    client.sys.delete_acl_policy(name="hv-app")
    raises(exceptions.InvalidPath, client.sys.read_acl_policy, name="hv-app")


@case
def sealed_server_is_down():
    # Last: seal, then everything but sys answers 503 (hvac's VaultDown).
    client.sys.seal()
    assert client.sys.is_sealed() is True
    raises(exceptions.VaultDown, transit.encrypt_data, name="hv-aes", plaintext=b64("x"))


failed = [(n, t) for n, t in results if t]
for n, t in failed:
    print(f"FAILED {n}\n{t}")
print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
