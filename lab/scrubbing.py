"""What the lab keeps on disk keeps no secret: the rules its recording of requests and its
checkpoint of moto's state share."""

import base64
import json
import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from activities.redaction import REDACTED, is_secret_field

log = logging.getLogger("quench.lab.aws")

# What the recording must not keep: a session's token (a request header) and passwords
# and secret values in request bodies. Replay needs none of them; idempotency tokens
# (ClientToken) are kept, since replay depends on them.
_SECRET_HEADERS = frozenset({"x-amz-security-token"})
_SECRET_PARAMETERS = frozenset(
    {"password", "newpassword", "oldpassword", "secretstring", "secretaccesskey", "privatekey"}
)
SCRUBBED = "quench-lab-scrubbed"
# Headers that are digests of the body, wrong once it is scrubbed: moto would keep the
# checksum with the replayed object, and boto3 would refuse to read it.
_BODY_DIGEST_HEADERS = ("content-md5", "x-amz-checksum-", "x-amz-sdk-checksum-algorithm")
# S3 requests by their signature's scope, as moto's server routes them.
_S3_SIGNATURE = re.compile(r"Credential=[^/,]+/\d{8}/[^/,]+/s3/aws4_request")


def _secret(name: str) -> bool:
    return name.replace("_", "").lower() in _SECRET_PARAMETERS


def _scrub_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: SCRUBBED if _secret(str(k)) else _scrub_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_json(v) for v in value]
    return value


def _scrub_parameters(raw: bytes) -> bytes:
    """An API call's parameters (form or JSON) without their secret values."""
    try:
        document = json.loads(raw)
    except ValueError:
        pairs = parse_qsl(raw.decode(errors="replace"), keep_blank_values=True)
        if any(_secret(k) for k, _ in pairs):
            return urlencode([(k, SCRUBBED if _secret(k) else v) for k, v in pairs]).encode()
        return raw
    scrubbed = json.dumps(_scrub_json(document)).encode()
    if scrubbed == json.dumps(document).encode():
        return raw  # nothing secret: the bytes stay as sent
    return scrubbed


# An S3 request's body is an object's content (or a bucket's configuration), never API
# parameters: S3 has none that is a secret. Scrubbing it by parameter names changed
# evidence: a CloudTrail record of CreateLoginProfile or CreateAccessKey has a "password" or
# "secretAccessKey" field, already REDACTED by Quench, and the scrubber replaced the value
# and re-serialised the whole document, so the replayed object no longer matched the
# SHA-256 its case recorded (issue 14). Content is judged by the rule Quench's evidence is
# written under (activities/redaction.py): JSON in which no field that rule names holds
# anything but REDACTED is kept byte for byte, as is all of Quench's evidence, since the
# evidence store redacts before it writes. Other JSON is scrubbed by that broader rule, and
# reads back changed after a restart: the price of not keeping a secret. Content that is
# not JSON (the report's Markdown and the investigation's chart, rendered from redacted
# documents; the lab's gzip CloudTrail files, which hide secrets as CloudTrail does) is
# kept as sent, as it was before: reading it as form parameters could only corrupt it.
#
# Keeping evidence bodies in the recording, rather than in a store of bodies by hash that
# is restored after replay, keeps the same bytes on disk, and replays each object as it was
# written: in its place among the other requests, with the same version and no second write
# (which an evidence bucket with Object Lock would refuse).


def _holds_secret(value: Any) -> bool:
    if isinstance(value, dict):
        return any(
            v not in (None, "", REDACTED) if is_secret_field(str(k)) else _holds_secret(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return any(_holds_secret(v) for v in value)
    return False


def _scrub_content(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: SCRUBBED
            if is_secret_field(str(k)) and v not in (None, "", REDACTED)
            else _scrub_content(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub_content(v) for v in value]
    return value


def scrub_s3_content(raw: bytes) -> bytes:
    """An S3 object's content, exactly as sent unless it holds a secret field."""
    try:
        document = json.loads(raw)
    except ValueError:
        return raw
    if not _holds_secret(document):
        return raw
    return json.dumps(_scrub_content(document)).encode()


def scrub_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A recorded request without its secrets, still replayable."""
    headers = {
        k: v for k, v in (entry.get("headers") or {}).items() if k.lower() not in _SECRET_HEADERS
    }
    body = entry.get("body") or ""
    raw = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    if _S3_SIGNATURE.search(authorization):
        scrubbed = scrub_s3_content(raw)
        if scrubbed != raw:
            log.warning(
                "recording %s without its secret fields: it will read back changed after a restart",
                entry.get("url"),
            )
    else:
        scrubbed = _scrub_parameters(raw)
    if scrubbed != raw:
        body = (
            base64.b64encode(scrubbed).decode() if entry.get("body_encoded") else scrubbed.decode()
        )
        headers = {
            k: v for k, v in headers.items() if not k.lower().startswith(_BODY_DIGEST_HEADERS)
        }
        for name in list(headers):
            if name.lower() == "content-length":
                headers[name] = str(len(scrubbed))
            elif name.lower() == "x-amz-content-sha256":
                headers[name] = "UNSIGNED-PAYLOAD"
    return {**entry, "headers": headers, "body": body}
