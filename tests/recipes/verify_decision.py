"""Verify an Assent decision document: the owner's receipt, or a webhook body.

    pip install signedjson
    python verify_decision.py https://consent.example.org receipt.json

Exits 0 and prints the decision when one of Assent's keys signed exactly
this document: its current key, or a key it has rotated out
(`old_verify_keys`) that had not yet expired when the decision was made.
Raises (exit 1) otherwise.
"""
import json
import sys
import urllib.request

from signedjson.key import decode_verify_key_bytes
from signedjson.sign import verify_signed_json
from unpaddedbase64 import decode_base64

assent, path = sys.argv[1], sys.argv[2]
with open(path) as f:
    document = json.load(f)
with urllib.request.urlopen(f"{assent}/_assent/v1/keys") as answer:
    keys = json.load(answer)
server = keys["server_name"]
known = dict(keys["verify_keys"])
known.update(keys.get("old_verify_keys", {}))
signed_with = [k for k in document.get("signatures", {}).get(server, {}) if k in known]
if not signed_with:
    raise SystemExit(f"not signed with any key of {server}")
key_id = signed_with[0]
key = known[key_id]
if "expired_ts" in key and document["decided_at"] > key["expired_ts"]:
    raise SystemExit(f"{key_id} had expired before this decision was made")
verify_key = decode_verify_key_bytes(key_id, decode_base64(key["key"]))
verify_signed_json(document, server, verify_key)
print(document["decision"], document["request_id"], document["decision_id"])
