"""The evidence store: redacted JSON, written once per case and name, with its SHA-256."""

import hashlib
import json
from collections.abc import Callable
from typing import Any

from temporalio.testing import ActivityEnvironment

from activities.evidence import EvidenceActivities, EvidenceStore
from activities.redaction import REDACTED
from models.activities import StoreEvidenceInput

CASE = "case-123456789012-ASIAXCSEC6TNGZ6EZUUO"

DOCUMENT_WITH_SECRETS = {
    "Credentials": {
        "AccessKeyId": "ASIAXCSEC6TNGZ6EZUUO",
        "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYsecretKEY",
        "SessionToken": "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKEN",
        "Expiration": "2026-11-22T13:00:00Z",
    },
    "LoginProfile": {"UserName": "alice", "Password": "hunter2-but-longer"},
    "users": [{"name": "bob", "new_password": "correct-horse-battery"}],
    "empty": {"Token": ""},
}
SECRETS = (
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYsecretKEY",
    "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKEN",
    "hunter2-but-longer",
    "correct-horse-battery",
)


def stored_bytes(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_put_json_redacts_secret_fields_before_storing(evidence: EvidenceStore, s3: Any) -> None:
    record = evidence.put_json(CASE, "sts-response", DOCUMENT_WITH_SECRETS)

    body = stored_bytes(s3, record.bucket, record.key)
    for secret in SECRETS:
        assert secret.encode() not in body
    stored = json.loads(body)
    assert stored["Credentials"]["SecretAccessKey"] == REDACTED
    assert stored["Credentials"]["SessionToken"] == REDACTED
    assert stored["LoginProfile"]["Password"] == REDACTED
    assert stored["users"][0]["new_password"] == REDACTED
    # What is not a secret is kept as it was, so the evidence still says whose key it was.
    assert stored["Credentials"]["AccessKeyId"] == "ASIAXCSEC6TNGZ6EZUUO"
    assert stored["LoginProfile"]["UserName"] == "alice"
    assert stored["empty"]["Token"] == ""


def test_put_json_records_the_sha256_and_size_of_the_stored_bytes(
    evidence: EvidenceStore, s3: Any
) -> None:
    record = evidence.put_json(CASE, "sts-response", DOCUMENT_WITH_SECRETS)

    assert record.bucket == evidence.bucket
    assert record.key == f"cases/{CASE}/evidence/sts-response.json"
    body = stored_bytes(s3, record.bucket, record.key)
    assert record.sha256 == hashlib.sha256(body).hexdigest()
    assert record.size_bytes == len(body)
    head = s3.head_object(Bucket=record.bucket, Key=record.key)
    assert head["Metadata"]["sha256"] == record.sha256
    assert head["Metadata"]["case-id"] == CASE
    assert head["ContentType"] == "application/json"


def test_a_second_put_returns_the_first_record_and_keeps_the_first_document(
    evidence: EvidenceStore, s3: Any, evidence_keys: Callable[[], list[str]]
) -> None:
    first = evidence.put_json(CASE, "finding", {"version": 1})
    second = evidence.put_json(CASE, "finding", {"version": 2, "more": "data"})

    assert second == first
    assert evidence_keys() == [first.key]
    assert json.loads(stored_bytes(s3, first.bucket, first.key)) == {"version": 1}


def test_the_same_name_in_another_case_is_separate_evidence(evidence: EvidenceStore) -> None:
    first = evidence.put_json(CASE, "finding", {"version": 1})
    other = evidence.put_json("case-other", "finding", {"version": 2})

    assert other.key != first.key
    assert other.sha256 != first.sha256


def test_existing_is_none_for_an_object_written_by_something_else(
    evidence: EvidenceStore, s3: Any
) -> None:
    key = evidence.key_for(CASE, "finding")
    s3.put_object(Bucket=evidence.bucket, Key=key, Body=b"{}")

    assert evidence.existing(key) is None
    assert evidence.existing(evidence.key_for(CASE, "never-written")) is None


def test_store_evidence_activity_stores_the_document_once(
    evidence: EvidenceStore,
    s3: Any,
    activity_env: ActivityEnvironment,
    evidence_keys: Callable[[], list[str]],
) -> None:
    activities = EvidenceActivities(evidence)
    request = StoreEvidenceInput(
        case_id=CASE, name="finding", document={"id": "f-1", "Password": "p4ss-w0rd-value"}
    )

    first = activity_env.run(activities.store_evidence, request)
    again = activity_env.run(activities.store_evidence, request)

    assert again == first
    assert evidence_keys() == [first.key]
    assert json.loads(stored_bytes(s3, first.bucket, first.key)) == {
        "id": "f-1",
        "Password": REDACTED,
    }
