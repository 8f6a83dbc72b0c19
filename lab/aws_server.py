"""The lab's AWS: moto in server mode, plus the instance world moto lacks.

Run as `python -m lab.aws_server --port 5055 --state-dir .quench`. Everything Quench does
against it goes through the real AWS APIs; only the server side is the lab's.

moto keeps its state in memory. To survive a restart of the stack, the server records
every request (moto's recorder) and replays the recording at the next start; each recorded
request draws moto's random ids from its own seeded stream (`lab/id_streams.py`), so the
replayed world gets the same ids whatever else was called, and how concurrently. The
recording keeps no secret, and keeps S3 objects byte for byte, so evidence reads back with
the hash its case recorded.

Replaying the whole recording grew with every case (28 s for 1,683 requests), so the
server also writes a checkpoint of its state (`lab/checkpoint.py`) every so many requests,
when idle, and when stopped; a restart loads it and replays only what was recorded after.
"""

import argparse
import base64
import dataclasses
import json
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from lab import checkpoint, id_streams
from lab.checkpoint import CHECKPOINT_NAME, CheckpointUnusable, RecordingPlace
from lab.instances import InstanceCredentials, InstanceWorld
from lab.scrubbing import SCRUBBED as SCRUBBED
from lab.scrubbing import scrub_entry as scrub_entry

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


class _Recording:
    """moto's recorder, made to keep no secret and to give each request its own ids.

    moto's recorder writes each request to a scratch file; it moves to the recording
    scrubbed, so no secret of the lab's story is ever on disk. Each recorded request gets
    the next sequence number, kept in its entry, and draws its ids from that number's
    stream; a replayed request carries its number in a header. `place` is the end of the
    recording: where the next request goes, once the recording has been replayed."""

    def __init__(self, recording: Path) -> None:
        self.path = recording
        self.replaying = False
        self.place = RecordingPlace()
        self._lock = threading.Lock()
        self._scratch = recording.with_name(recording.name + ".pending")
        _drop_torn_line(recording)
        if self._scratch.exists():
            # A crash between moto's recorder and the recording: never answered, and not to
            # be recorded with the next request, as if it had been.
            log.warning("dropping %s, a request a crash left unrecorded", self._scratch.name)
            self._scratch.unlink()

    def install(self) -> None:
        from moto.moto_api import recorder

        scratch = self._scratch
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
                with self.path.open("ab") as out:
                    for line in lines:
                        sequence = self.place.entries
                        entry = {**scrub_entry(json.loads(line)), "sequence": sequence}
                        written = (json.dumps(entry) + "\n").encode()
                        out.write(written)
                        id_streams.enter_call(sequence)
                        self.place = self.place.after(written)

        recorder._record_request = recording  # type: ignore[method-assign]

    def replay(self, url: str, start: RecordingPlace) -> int:
        """Send every request recorded after `start` again, in order, each with its
        sequence number; how many were sent. Requests recorded before they had one replay
        as they were recorded, from moto's one seeded generator."""
        self.place = start
        self.replaying = True
        target = urlparse(url)
        try:
            with requests.Session() as http, self.path.open("rb") as lines:
                lines.seek(start.offset)
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
                    else:
                        headers[REPLAY_SEQUENCE_HEADER] = str(sequence)
                        http.request(entry["method"], sent.geturl(), headers=headers, data=data)
                    self.place = self.place.after(line)
        finally:
            self.replaying = False
        return self.place.entries - start.entries

    def sync(self) -> None:
        """The recording so far is on disk, not only in the system's cache."""
        if self.path.exists():
            with self.path.open("rb") as recording:
                os.fsync(recording.fileno())


def _drop_torn_line(recording: Path) -> None:
    """A crash while a request was being recorded can leave its line half written. That
    request was never answered; the rest of the recording replays without it."""
    if not recording.exists() or recording.stat().st_size == 0:
        return
    with recording.open("rb+") as lines:
        lines.seek(-1, os.SEEK_END)
        if lines.read(1) == b"\n":
            return
        end = lines.tell()
        while end > 0:
            start = max(0, end - 64 * 1024)
            lines.seek(start)
            newline = lines.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        log.warning("dropping the half-written last line of %s, left by a crash", recording)
        lines.truncate(end)


def _lab_state(world: InstanceWorld) -> dict[str, Any]:
    """What the lab's server keeps outside moto: each instance's boots and the role
    credentials its metadata serves, without their secrets."""
    return {
        "instance_boots": dict(world.generations),
        "instance_credentials": {
            key: dataclasses.replace(credentials, secret_access_key=SCRUBBED, token=SCRUBBED)
            for key, credentials in world.credentials.items()
        },
    }


def _instance_secrets(world: InstanceWorld) -> set[str]:
    """What an instance's scripts can print that is a secret: its role credentials."""
    return {
        secret
        for credentials in world.credentials.values()
        for secret in (credentials.secret_access_key, credentials.token)
    }


def _resume(checkpoint_path: Path, recording: Path, world: InstanceWorld) -> RecordingPlace | None:
    """Load the checkpoint into moto and the instance world: the place in the recording it
    reaches, or None if there is none to use (the whole recording is replayed)."""
    from lab import moto_state

    checkpoint.remove_leftovers(checkpoint_path)
    try:
        place, state = checkpoint.read(checkpoint_path, recording)
        lab = moto_state.restore(state)
    except CheckpointUnusable as exc:
        if checkpoint_path.exists():
            log.warning("replaying the whole recording: the checkpoint is not used: %s", exc)
        return None
    except Exception as exc:  # written by this code and moto, yet it does not load
        log.warning("replaying the whole recording: the checkpoint does not load: %r", exc)
        return None
    world.generations.update(lab["instance_boots"])
    world.credentials.update(lab["instance_credentials"])
    log.info("loaded the checkpoint after request %d", place.entries)
    return place


def serve(
    host: str,
    port: int,
    state_dir: Path,
    checkpoint_every: int = 1000,
    checkpoint_idle: float = 30.0,
) -> None:
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

    from lab import moto_gaps, moto_state, trust

    moto_gaps.install()
    trust.install()
    trust.install_invitations()
    world = _install_instance_world()
    recorder = _Recording(recording)
    recorder.install()
    id_streams.install(LAB_SEED)
    checkpoint_path = state_dir / CHECKPOINT_NAME
    resumed = _resume(checkpoint_path, recording, world)
    gate = checkpoint.Gate()
    app = checkpoint.gated(DomainDispatcherApplication(create_backend_app), gate)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    # Replay before anyone else can talk to the server, so ids come out the same.
    start = resumed or RecordingPlace()
    if recording.exists() and recording.stat().st_size > start.offset:
        log.info("replaying %s after request %d", recording, start.entries)
    replayed = recorder.replay(f"http://{host}:{port}", start) if recording.exists() else 0
    if recorder.place.entries:
        log.info(
            "lab AWS state restored: %s, %d requests replayed",
            "from the checkpoint" if resumed else "without a checkpoint",
            replayed,
        )
    checkpoints = checkpoint.Checkpointer(
        checkpoint_path,
        gate,
        place=lambda: recorder.place,
        capture=lambda: moto_state.capture(_lab_state(world), _instance_secrets(world)),
        sync_recording=recorder.sync,
        written=resumed,
        every=checkpoint_every,
        idle=checkpoint_idle,
    )
    stopping = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: stopping.set())
    checkpoints.start()
    (state_dir / "lab-aws.ready").write_text("replayed" if recorder.place.entries else "fresh")
    while not stopping.wait(1.0):
        pass
    # Stopped (the stack stops with SIGTERM): no new request, a checkpoint of the last.
    server.shutdown()
    checkpoints.stop()
    checkpoints.checkpoint(wait=5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description="The lab's AWS: moto with instances inside.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--state-dir", type=Path, default=Path(".quench"))
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=1000,
        help="write a checkpoint after this many requests recorded (0: only when idle or stopped)",
    )
    parser.add_argument(
        "--checkpoint-idle",
        type=float,
        default=30.0,
        help="write a checkpoint once no request came for this many seconds",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(args.host, args.port, args.state_dir, args.checkpoint_every, args.checkpoint_idle)


if __name__ == "__main__":
    main()
