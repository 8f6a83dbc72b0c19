"""The evidence store: JSON documents in the evidence bucket, each with its SHA-256.

Evidence is written once per case and name. A retried capture finds the object already
there and returns its recorded hash instead of writing a second, later version.
"""

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.accounts import acting_in
from activities.aws import (
    ERROR_INVALID_REQUEST,
    ERROR_UNAVAILABLE,
    AwsClients,
    aws_errors,
    error_code,
)
from activities.liveness import heartbeating
from activities.redaction import redact
from models.activities import StoreEvidenceInput, WriteReportInput, WriteReportResult
from models.case import EvidenceRecord
from models.investigation import Investigation
from playbook.report import CaseReport, build_report, render_markdown

SHA256_METADATA = "sha256"
CAPTURED_AT_METADATA = "captured-at"
ACCOUNT_METADATA = "account-id"


def canonical_json(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, indent=2, default=str).encode()


class EvidenceStore:
    """Writes evidence objects under cases/<case id>/ in the evidence bucket."""

    def __init__(self, clients: AwsClients, bucket: str) -> None:
        self._clients = clients
        self.bucket = bucket

    def key_for(self, case_id: str, name: str, suffix: str = "json") -> str:
        if not case_id:
            raise ValueError("evidence needs the case it belongs to")
        return f"cases/{case_id}/evidence/{name}.{suffix}"

    def existing(self, key: str) -> EvidenceRecord | None:
        s3 = self._clients.client("s3")
        with aws_errors(f"look for evidence s3://{self.bucket}/{key}"):
            try:
                head = s3.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                    return None
                raise
        metadata = head.get("Metadata", {})
        if SHA256_METADATA not in metadata:
            return None
        return EvidenceRecord(
            name=key.rsplit("/", 1)[-1].rsplit(".", 1)[0],
            bucket=self.bucket,
            key=key,
            sha256=metadata[SHA256_METADATA],
            size_bytes=int(head["ContentLength"]),
            captured_at=datetime.fromisoformat(metadata[CAPTURED_AT_METADATA]),
            account_id=metadata.get(ACCOUNT_METADATA, ""),
        )

    def read_json(self, key: str) -> Any:
        with aws_errors(f"read evidence s3://{self.bucket}/{key}"):
            body = self._clients.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"]
            return json.loads(body.read())

    def read_verified(self, record: EvidenceRecord) -> bytes:
        """An evidence object's bytes, refused unless they hash to what the case recorded."""
        with aws_errors(f"read evidence {record.uri}"):
            body: bytes = (
                self._clients.client("s3")
                .get_object(Bucket=record.bucket, Key=record.key)["Body"]
                .read()
            )
        if hashlib.sha256(body).hexdigest() != record.sha256:
            raise ApplicationError(
                f"evidence {record.uri} does not match its SHA-256",
                type=ERROR_INVALID_REQUEST,
                non_retryable=True,
            )
        return body

    def put_bytes(
        self,
        case_id: str,
        name: str,
        body: bytes,
        suffix: str,
        content_type: str,
        account_id: str | None = None,
    ) -> EvidenceRecord:
        """Store bytes once under the case's folder, tagged with their hash, when they were
        captured, the case, and the account they are about (by default the account the
        running activity acts in)."""
        key = self.key_for(case_id, name, suffix)
        scope = acting_in()
        account = account_id or (scope.account_id if scope else "")
        tags = {"case-id": case_id, **({ACCOUNT_METADATA: account} if account else {})}
        with aws_errors(f"store evidence s3://{self.bucket}/{key}"):
            digest = hashlib.sha256(body).hexdigest()
            captured_at = datetime.now(UTC)
            request = {
                "Bucket": self.bucket,
                "Key": key,
                "Body": body,
                "ContentType": content_type,
                "Metadata": {
                    SHA256_METADATA: digest,
                    CAPTURED_AT_METADATA: captured_at.isoformat(),
                    **tags,
                },
            }
            s3 = self._clients.client("s3")
            try:
                # Written only if no object has the key: one call, and a retried capture
                # never replaces what an earlier attempt kept.
                s3.put_object(**request, IfNoneMatch="*")
            except ClientError as exc:
                code = error_code(exc)
                if code == "ConditionalRequestConflict":
                    # Another write of the key is in flight: asked again, this one finds it.
                    raise ApplicationError(
                        f"store evidence s3://{self.bucket}/{key}: another write in flight",
                        type=ERROR_UNAVAILABLE,
                    ) from exc
                if code != "PreconditionFailed":
                    raise
                found = self.existing(key)
                if found is not None:
                    return found
                # Something else under the key, not evidence (no hash): replaced.
                s3.put_object(**request)
        return EvidenceRecord(
            name=name,
            bucket=self.bucket,
            key=key,
            sha256=digest,
            size_bytes=len(body),
            captured_at=captured_at,
            account_id=account,
        )

    def put_json(
        self, case_id: str, name: str, document: Any, account_id: str | None = None
    ) -> EvidenceRecord:
        """Store a JSON document, secrets redacted, and return its record."""
        return self.put_bytes(
            case_id,
            name,
            canonical_json(redact(document)),
            "json",
            "application/json",
            account_id,
        )


REPORT_NAME = "post-incident-report"


class EvidenceActivities:
    def __init__(self, store: EvidenceStore) -> None:
        self._store = store

    @activity.defn
    @heartbeating
    def store_evidence(self, input: StoreEvidenceInput) -> EvidenceRecord:
        """Store a document the workflow already holds (the finding) as evidence."""
        return self._store.put_json(input.case_id, input.name, input.document, input.account_id)

    @activity.defn
    @heartbeating
    def write_report(self, input: WriteReportInput) -> WriteReportResult:
        """The post-incident report, as JSON and as Markdown, beside the evidence it cites."""
        # Both forms come from the one redacted document, so they say the same.
        investigation = None
        if input.status.investigation is not None:
            kept = self._store.read_verified(input.status.investigation.investigation)
            investigation = Investigation.model_validate_json(kept)
        report = CaseReport.model_validate(
            redact(
                build_report(input.status, input.written_at, investigation).model_dump(mode="json")
            )
        )
        case_id, account = input.status.folder, input.status.account_id
        document = self._store.put_json(
            case_id, REPORT_NAME, report.model_dump(mode="json"), account
        )
        markdown = self._store.put_bytes(
            case_id,
            REPORT_NAME,
            render_markdown(report).encode(),
            "md",
            "text/markdown; charset=utf-8",
            account,
        )
        return WriteReportResult(json_report=document, markdown_report=markdown)
