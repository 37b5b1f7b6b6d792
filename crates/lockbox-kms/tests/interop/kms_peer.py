"""boto3 (the official AWS SDK for Python) as an independent KMS peer.

Reads one JSON request on stdin, prints one JSON answer:
  {"op": "create_key", "endpoint": URL}                    -> {"arn": ...}
  {"op": "decrypt", "endpoint", "blob_b64", "context"}     -> {"plaintext_b64", "key_id"}
  {"op": "disable_key", "endpoint", "key_id"}              -> {}
  {"op": "sigv4", "method", "url", "headers", "signed_headers", "body_b64", "region", "access_key", "secret_key"}
      -> {"authorization": the Authorization header botocore computes for that request}
"""
import base64
import json
import sys

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

req = json.load(sys.stdin)
op = req["op"]


def kms():
    return boto3.client(
        "kms",
        endpoint_url=req["endpoint"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


if op == "create_key":
    out = {"arn": kms().create_key()["KeyMetadata"]["Arn"]}
elif op == "decrypt":
    kwargs = {"CiphertextBlob": base64.b64decode(req["blob_b64"])}
    if req.get("context"):
        kwargs["EncryptionContext"] = req["context"]
    r = kms().decrypt(**kwargs)
    out = {"plaintext_b64": base64.b64encode(r["Plaintext"]).decode(), "key_id": r["KeyId"]}
elif op == "disable_key":
    # moto 5.2.5 accepts only the bare key id here (an ARN gives a 500).
    kms().disable_key(KeyId=req["key_id"].split("/")[-1])
    out = {}
elif op == "sigv4":
    # Only the headers the request says it signed (botocore signs all it is given).
    signed = req["signed_headers"].split(";")
    headers = {k: v for k, v in req["headers"].items() if k.lower() in signed}
    r = AWSRequest(method=req["method"], url=req["url"], data=base64.b64decode(req["body_b64"]), headers=headers)
    auth = SigV4Auth(Credentials(req["access_key"], req["secret_key"]), "kms", req["region"])
    r.context["timestamp"] = headers["x-amz-date"]
    auth._modify_request_before_signing(r)  # noqa: SLF001 (add_auth without its clock)
    canonical = auth.canonical_request(r)
    sts = auth.string_to_sign(r, canonical)
    auth._inject_signature_to_request(r, auth.signature(sts, r))  # noqa: SLF001
    out = {"authorization": r.headers["Authorization"]}
else:
    raise SystemExit(f"unknown op {op}")
json.dump(out, sys.stdout)
