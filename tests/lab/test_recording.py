"""The lab's moto recording keeps no secret and still replays: session tokens leave the
headers, passwords and secret values leave the bodies, and nothing else changes; S3
objects, evidence above all, are kept byte for byte unless they hold a secret."""

import base64
import hashlib
import json
import zlib
from urllib.parse import parse_qs, urlencode

from activities.evidence import canonical_json
from activities.redaction import redact
from lab.aws_server import SCRUBBED, scrub_entry


def _form(params: dict[str, str], token: str | None = None) -> dict:
    body = urlencode(params)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(len(body)),
    }
    if token:
        headers["X-Amz-Security-Token"] = token
    return {
        "headers": headers,
        "method": "POST",
        "url": "http://lab/",
        "body": body,
        "body_encoded": False,
    }


def test_a_session_token_and_a_console_password_are_scrubbed():
    entry = _form(
        {"Action": "CreateLoginProfile", "UserName": "backup-svc", "Password": "s3cret-Pa55!"},
        token="IQoJb3JpZ2luX2VjEJ-session-token",
    )
    scrubbed = scrub_entry(entry)
    text = json.dumps(scrubbed)
    assert "s3cret-Pa55!" not in text and "session-token" not in text
    params = parse_qs(scrubbed["body"])
    assert params == {
        "Action": ["CreateLoginProfile"],
        "UserName": ["backup-svc"],
        "Password": [SCRUBBED],
    }
    assert scrubbed["headers"]["Content-Length"] == str(len(scrubbed["body"]))
    assert "X-Amz-Security-Token" not in scrubbed["headers"]


def test_idempotency_tokens_and_plain_requests_stay_as_sent():
    entry = _form({"Action": "RunInstances", "ClientToken": "abc-123", "MinCount": "1"})
    assert scrub_entry(entry) == entry


def test_secret_values_in_json_bodies_are_scrubbed():
    document = {"Name": "db", "SecretString": "hunter2", "ClientRequestToken": "t-1"}
    raw = json.dumps(document).encode()
    entry = {
        "headers": {"Content-Length": str(len(raw))},
        "method": "POST",
        "url": "http://lab/",
        "body": base64.b64encode(raw).decode(),
        "body_encoded": True,
    }
    scrubbed = scrub_entry(entry)
    body = json.loads(base64.b64decode(scrubbed["body"]))
    assert body == {"Name": "db", "SecretString": SCRUBBED, "ClientRequestToken": "t-1"}
    assert scrubbed["headers"]["Content-Length"] == str(len(base64.b64decode(scrubbed["body"])))


def _s3_put(key: str, body: bytes, content_type: str = "application/json") -> dict:
    """A PutObject as boto3 sends it to the lab: signed for S3, with the body's digests."""
    digest = hashlib.sha256(body).hexdigest()
    return {
        "headers": {
            "Content-Type": content_type,
            "X-Amz-Meta-Sha256": digest,
            "X-Amz-Checksum-Crc32": base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode(),
            "X-Amz-Sdk-Checksum-Algorithm": "CRC32",
            "X-Amz-Content-Sha256": digest,
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAQUENCHLABWORKER1/20261207/"
            "us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=0f1e",
            "Content-Length": str(len(body)),
        },
        "method": "PUT",
        "url": f"http://lab/quench-lab-evidence/{key}",
        "body": base64.b64encode(body).decode(),
        "body_encoded": True,
    }


def test_redacted_evidence_is_recorded_byte_for_byte():
    # CloudTrail records of the attacker's CreateLoginProfile and CreateAccessKey, as the
    # evidence store writes them: the secret fields are there, REDACTED (issue 14).
    records = [
        {"eventName": "CreateLoginProfile", "requestParameters": {"password": "HIDDEN"}},
        {
            "eventName": "CreateAccessKey",
            "responseElements": {"accessKey": {"secretAccessKey": ""}},
        },
        {"eventName": "AssumeRole", "responseElements": {"credentials": {"sessionToken": "x"}}},
    ]
    body = canonical_json(redact({"records": records}))
    entry = _s3_put("cases/c/evidence/cloudtrail.json", body)
    assert scrub_entry(entry) == entry


def test_object_content_that_is_not_json_is_kept_as_sent():
    markdown = b"# Report\n\n| call | detail |\n| --- | --- |\n| a | ?x=1&password=REDACTED |\n"
    entry = _s3_put("cases/c/evidence/post-incident-report.md", markdown, "text/markdown")
    assert scrub_entry(entry) == entry


def test_an_object_holding_a_secret_is_scrubbed_with_its_digests():
    document = {"AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG"}
    entry = _s3_put("notes/stolen.json", json.dumps(document).encode())
    scrubbed = scrub_entry(entry)
    assert "wJalrXUtnFEMI" not in json.dumps(scrubbed)
    body = base64.b64decode(scrubbed["body"])
    assert json.loads(body) == {"AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": SCRUBBED}
    headers = scrubbed["headers"]
    assert headers["Content-Length"] == str(len(body))
    # The digests of the body with the secret are gone: none is kept, and none is left to
    # contradict the body the replay writes.
    assert headers["X-Amz-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    assert not any(k.lower().startswith("x-amz-checksum-") for k in headers)
    assert "X-Amz-Sdk-Checksum-Algorithm" not in headers
    assert headers["X-Amz-Meta-Sha256"] == entry["headers"]["X-Amz-Meta-Sha256"]
