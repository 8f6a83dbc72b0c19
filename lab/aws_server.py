"""The lab's AWS: moto in server mode, plus the instance world moto lacks.

Run as `python -m lab.aws_server --port 5055 --state-dir .quench`. Everything Quench does
against it goes through the real AWS APIs; only the server side is the lab's.

moto keeps its state in memory. To survive a restart of the stack, the server records
every request (moto's recorder) and replays the recording at the next start; each recorded
request draws moto's random ids from its own seeded stream (`lab/id_streams.py`), so the
replayed world gets the same ids whatever else was called, and how concurrently. The
recording keeps no secret, and keeps S3 objects byte for byte, so evidence reads back with
the hash its case recorded.
"""

import argparse
import base64
import json
import logging
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

import requests

from activities.redaction import REDACTED, is_secret_field
from lab import id_streams
from lab.instances import InstanceCredentials, InstanceWorld

LAB_SEED = 20241717
RECORDING_NAME = "lab-aws.recording.jsonl"
# A replayed request carries its place in the recording, so it draws from its own stream.
REPLAY_SEQUENCE_HEADER = "X-Quench-Lab-Replay-Sequence"
log = logging.getLogger("quench.lab.aws")


def _install_instance_world() -> InstanceWorld:
    """Patch moto so instances have a metadata service and an SSM agent."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import Instance
    from moto.ssm import models as ssm_models
    from moto.ssm.exceptions import SSMException
    from moto.sts.models import sts_backends

    def mint(instance_id: str, role_arn: str) -> InstanceCredentials:
        account_id = role_arn.split(":")[4]
        # The key is minted by whichever SSM call reads the metadata first: it is named
        # after the instance's boot, not after that call.
        boot = world.generations.get(instance_id, 0)
        with id_streams.named(f"instance-credentials/{instance_id}/{boot}"):
            assumed = sts_backends[account_id]["aws"].assume_role(
                region_name="us-east-1",
                role_session_name=instance_id,
                role_arn=role_arn,
                policy="",
                duration=21600,
                external_id="",
            )
        return InstanceCredentials(
            access_key_id=assumed.access_key_id,
            secret_access_key=assumed.secret_access_key,
            token=assumed.session_token,
            issued_at=datetime.now(UTC).replace(microsecond=0),
        )

    world = InstanceWorld(mint=mint)

    original_start = Instance.start

    def start(self: Any) -> Any:
        previous = original_start(self)
        # A start after a stop lands on a new host with new role credentials.
        if previous.name == "stopped":
            world.started_from_stopped(self.id)
        return previous

    Instance.start = start  # type: ignore[method-assign]

    def find_instance(account_id: str, region: str, instance_id: str) -> Any:
        try:
            return ec2_backends[account_id][region].get_instance(instance_id)
        except Exception:
            return None

    def role_arn_of(account_id: str, region: str, instance_id: str) -> str | None:
        backend = ec2_backends[account_id][region]
        association = backend.iam_instance_profile_associations.get(instance_id)
        if association is None or not association.iam_instance_profile.roles:
            return None
        return str(association.iam_instance_profile.roles[0].arn)

    original_send = ssm_models.SimpleSystemManagerBackend.send_command

    def send_command(self: Any, **kwargs: Any) -> Any:
        # SSM refuses instances whose agent is not online, as a stopped instance's is not.
        for instance_id in kwargs.get("instance_ids") or []:
            instance = find_instance(self.account_id, self.region_name, instance_id)
            if instance is None or not instance.is_running():
                raise SSMException(
                    "InvalidInstanceId", "Instances not in a valid state for account"
                )
        return original_send(self, **kwargs)

    ssm_models.SimpleSystemManagerBackend.send_command = send_command  # type: ignore[method-assign,assignment]

    original_invocation = ssm_models.Command.invocation_response

    def invocation_response(self: Any, instance_id: str, plugin_name: str) -> dict[str, Any]:
        response = original_invocation(self, instance_id, plugin_name)
        if self.document_name != "AWS-RunShellScript":
            return response
        result = world.run_shell_script(
            instance_id,
            role_arn_of(self.account_id, self.backend_region, instance_id),
            list(self.parameters.get("commands", [])),
        )
        status = "Success" if result.exit_code == 0 else "Failed"
        response.update(
            {
                "ResponseCode": result.exit_code,
                "Status": status,
                "StatusDetails": status,
                "StandardOutputContent": result.stdout[:24000],
                "StandardErrorContent": result.stderr[:8000],
            }
        )
        return response

    ssm_models.Command.invocation_response = invocation_response  # type: ignore[method-assign]
    return world


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


def _scrub_s3_body(raw: bytes) -> bytes:
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
        scrubbed = _scrub_s3_body(raw)
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


class _Recording:
    """moto's recorder, made to keep no secret and to give each request its own ids.

    moto's recorder writes each request to a scratch file; it moves to the recording
    scrubbed, so no secret of the lab's story is ever on disk. Each recorded request gets
    the next sequence number, kept in its entry, and draws its ids from that number's
    stream; a replayed request carries its number in a header."""

    def __init__(self, recording: Path) -> None:
        self.path = recording
        self.replaying = False
        self._lock = threading.Lock()
        self._next = _entries_in(recording)

    def install(self) -> None:
        from moto.moto_api import recorder

        scratch = self.path.with_name(self.path.name + ".pending")
        record = recorder._record_request

        def recording(request: Any, body: bytes | None = None) -> None:
            if self.replaying:
                sequence = request.headers.get(REPLAY_SEQUENCE_HEADER)
                id_streams.enter_call(int(sequence) if sequence is not None else None)
                return
            with self._lock:
                recorder._location = str(scratch)
                try:
                    record(request, body)
                finally:
                    recorder._location = str(self.path)
                if not scratch.exists():
                    id_streams.enter_call(None)
                    return
                lines = scratch.read_text().splitlines()
                scratch.unlink()
                with self.path.open("a") as out:
                    for line in lines:
                        entry = {**scrub_entry(json.loads(line)), "sequence": self._next}
                        out.write(json.dumps(entry) + "\n")
                        id_streams.enter_call(self._next)
                        self._next += 1

        recorder._record_request = recording  # type: ignore[method-assign]

    def replay(self, url: str) -> None:
        """Send every recorded request again, in order, each with its sequence number.
        Requests recorded before they had one replay as they were recorded, from moto's
        one seeded generator."""
        log.info("replaying %s to restore the lab's AWS state", self.path)
        self.replaying = True
        target = urlparse(url)
        try:
            with requests.Session() as http, self.path.open() as lines:
                for line in lines:
                    entry = json.loads(line)
                    body = entry.get("body") or ""
                    data = base64.b64decode(body) if entry.get("body_encoded") else body
                    headers = dict(entry.get("headers") or {})
                    if headers.get("Transfer-Encoding", "") == "chunked":
                        del headers["Transfer-Encoding"]
                    recorded = urlparse(entry["url"])
                    sent = recorded._replace(scheme=target.scheme, netloc=target.netloc)
                    sequence = entry.get("sequence")
                    if sequence is None:
                        with id_streams.legacy_replay():
                            http.request(entry["method"], sent.geturl(), headers=headers, data=data)
                        continue
                    headers[REPLAY_SEQUENCE_HEADER] = str(sequence)
                    http.request(entry["method"], sent.geturl(), headers=headers, data=data)
        finally:
            self.replaying = False
        log.info("lab AWS state restored")


def _entries_in(recording: Path) -> int:
    if not recording.exists():
        return 0
    with recording.open() as lines:
        return sum(1 for _ in lines)


def serve(host: str, port: int, state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    recording = state_dir / RECORDING_NAME
    os.environ["MOTO_RECORDER_FILEPATH"] = str(recording)
    os.environ["MOTO_ENABLE_RECORDING"] = "True"
    os.environ["MOTO_PORT"] = str(port)
    # AdministratorAccess and the other AWS managed policies exist only with this set,
    # and moto reads it when its IAM backend first loads.
    os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler
    from werkzeug.serving import make_server

    from lab import moto_gaps, trust

    moto_gaps.install()
    trust.install()
    trust.install_invitations()
    _install_instance_world()
    recorder = _Recording(recording)
    recorder.install()
    id_streams.install(LAB_SEED)
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    if recording.exists() and recording.stat().st_size > 0:
        # Replay before anyone else can talk to the server, so ids come out the same.
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        recorder.replay(f"http://{host}:{port}")
        (state_dir / "lab-aws.ready").write_text("replayed")
        thread.join()
    else:
        (state_dir / "lab-aws.ready").write_text("fresh")
        server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="The lab's AWS: moto with instances inside.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--state-dir", type=Path, default=Path(".quench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(args.host, args.port, args.state_dir)


if __name__ == "__main__":
    main()
