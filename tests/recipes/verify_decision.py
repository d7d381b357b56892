"""Verify an Assent decision document: the owner's receipt, or a webhook body.

    pip install signedjson
    python verify_decision.py https://consent.example.org receipt.json

Exits 0 and prints the decision when Assent's key signed exactly this
document; raises (exit 1) otherwise.
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
(key_id, key), = keys["verify_keys"].items()
verify_key = decode_verify_key_bytes(key_id, decode_base64(key["key"]))
verify_signed_json(document, server, verify_key)
print(document["decision"], document["request_id"], document["decision_id"])
