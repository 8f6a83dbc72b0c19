"""The lab's AWS resumed from its checkpoint, on real servers: the world is the one a full
replay of the recording makes (every id, every S3 object byte for byte) and goes on making
the same ids; a kill -9 at any moment, in a checkpoint's write too, loses nothing; a
checkpoint that cannot be used is replayed around, saying why; and no secret the lab made
is in the checkpoint, while every key still works."""

import hashlib
import json
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from botocore.config import Config

from lab import attack as lab_attack
from lab import checkpoint
from lab import world as lab_world
from lab.aws_server import RECORDING_NAME
from lab.checkpoint import CHECKPOINT_NAME
from lab.scrubbing import SCRUBBED
from lab.world import EC2_TRUST_POLICY, REGION
from stack.processes import ManagedProcess, free_port
from tests.lab.lab_server import discard, start_lab_server, start_lab_servers
from tests.lab.story_secrets import capture_story_secrets
from tests.lab.world_ids import (
    every_id,
    image_of,
    more_resources,
    probe,
    run_together,
    worker_changes,
    worker_reads,
    worker_session,
)

BUCKET = "quench-lab-checkpoint-test"
T = TypeVar("T")


def _url(process: ManagedProcess) -> str:
    return f"http://127.0.0.1:{process.ports[0]}"


def _log(process: ManagedProcess) -> str:
    return process.log_since_start().decode(errors="replace")


def _s3(url: str) -> Any:
    return worker_session().client(
        "s3", endpoint_url=url, config=Config(response_checksum_validation="when_required")
    )


def _write_objects(url: str, prefix: str) -> None:
    """Objects as the lab keeps them: redacted evidence (JSON with secret fields REDACTED),
    JSON holding a secret, Markdown, gzip, bytes that are no text, two versions of one."""
    s3 = _s3(url)
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    evidence = json.dumps(
        {"eventName": "CreateLoginProfile", "requestParameters": {"password": "REDACTED"}},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    stolen = json.dumps({"AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "wJalrXUtnFEMI"})
    bodies = {
        "evidence.json": evidence,
        "stolen.json": stolen.encode(),
        "report.md": b"# Report\n\n| call | detail |\n| --- | --- |\n",
        "trail.json.gz": bytes.fromhex("1f8b0800000000000003abae050043bfa6a302000000"),
        "chart.bin": hashlib.shake_256(prefix.encode()).digest(70_000),
    }
    for name, body in bodies.items():
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}", Body=body)
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/evidence.json", Body=evidence + b"\n")


def _every_object(url: str) -> dict[str, Any]:
    """Every version of every object in every bucket: its bytes' SHA-256, ETag, metadata."""
    s3 = _s3(url)
    objects: dict[str, Any] = {}
    for bucket in sorted(b["Name"] for b in s3.list_buckets()["Buckets"]):
        listed = s3.list_object_versions(Bucket=bucket)
        for version in listed.get("Versions", []):
            got = s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
            objects[f"{bucket}/{version['Key']}@{version['VersionId']}"] = (
                hashlib.sha256(got["Body"].read()).hexdigest(),
                got["ETag"],
                got["Metadata"],
                got["ContentLength"],
            )
    return objects


def _new_resources(url: str, world: lab_world.LabWorld, name: str) -> None:
    """What a case makes after the lab resumed: each draws ids from the request's stream."""
    session = worker_session()
    iam = session.client("iam", endpoint_url=url)
    ec2 = session.client("ec2", endpoint_url=url)
    iam.create_user(UserName=name)
    iam.create_access_key(UserName=name)
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST_POLICY))
    ec2.run_instances(ImageId=image_of(url, world), MinCount=1, MaxCount=1)
    volume = ec2.describe_volumes()["Volumes"][0]["VolumeId"]
    ec2.create_snapshot(VolumeId=volume, Description=name)
    ec2.stop_instances(InstanceIds=[world.instance_id])
    ec2.start_instances(InstanceIds=[world.instance_id])
    # A region no call reached before: its backend is made now, default VPC and all.
    worker_session("sa-east-1").client("ec2", endpoint_url=url).describe_vpcs()
    _write_objects(url, name)


def _the_same(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What differs between two worlds, by name (empty: none)."""
    return {
        k: (before.get(k), after.get(k))
        for k in before.keys() | after.keys()
        if before.get(k) != after.get(k)
    }


def _resumed_and_full_replay_of(
    state_dir: Path, tmp_path: Path, *options: str
) -> list[ManagedProcess]:
    """Two servers started at once on the same recording: one resumed from `state_dir` and
    its checkpoint (`options` its command line's), one from a copy without the checkpoint,
    replayed in full."""
    replayed = tmp_path / f"full-replay-of-{state_dir.name}"
    shutil.copytree(state_dir, replayed, ignore=shutil.ignore_patterns("logs", "pids", "*.ready"))
    (replayed / CHECKPOINT_NAME).unlink(missing_ok=True)
    processes = start_lab_servers((state_dir, free_port(), options), (replayed, free_port(), ()))
    assert "without a checkpoint" in _log(processes[1])
    return processes


def _from_both(ask: Callable[[str], T], urls: tuple[str, str]) -> list[T]:
    """`ask` of each server, both at once (each server is asked in the same order)."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(ask, urls))


def test_a_resumed_lab_is_the_lab_a_full_replay_makes_and_makes_the_same_ids(tmp_path):
    live = tmp_path / "live"
    server = start_lab_server(live, free_port())
    try:
        url = _url(server)
        world = lab_world.seed(url)
        run_together(worker_reads(url, world) + worker_changes(url, world))
        world = more_resources(url, world)
        _write_objects(url, "before")
    finally:
        server.stop()  # SIGTERM, as the stack stops it: a checkpoint of everything
    assert (live / CHECKPOINT_NAME).exists()

    resumed, replayed = _resumed_and_full_replay_of(live, tmp_path)
    try:
        assert "from the checkpoint, 0 requests replayed" in _log(resumed)
        assert (live / "lab-aws.ready").read_text() == "replayed"
        urls = (_url(resumed), _url(replayed))
        ids = _from_both(lambda u: every_id(u, world), urls)
        assert ids[0][f"keys of {world.build_bot_user}"] != []
        assert _the_same(*ids) == {}
        objects = _from_both(_every_object, urls)
        assert sum(key.startswith(BUCKET) for key in objects[0]) == 6
        assert _the_same(*objects) == {}
        # The object that held a secret reads back scrubbed in both. (Every request is read
        # from both: each is recorded, and the ids of those after depend on their count.)
        for u in urls:
            stolen = _s3(u).get_object(Bucket=BUCKET, Key="before/stolen.json")["Body"].read()
            assert json.loads(stolen)["SecretAccessKey"] == SCRUBBED

        # What comes next gets the same ids in both: the id streams go on where they were.
        _from_both(lambda u: _new_resources(u, world, "after-resume"), urls)
        ids = _from_both(lambda u: every_id(u, world), urls)
        assert "user after-resume" in ids[0] and ids[0]["vpcs in us-east-1"] != []
        assert _the_same(*ids) == {}
        assert _the_same(*_from_both(_every_object, urls)) == {}
        vpcs = [
            worker_session("sa-east-1").client("ec2", endpoint_url=u).describe_vpcs()["Vpcs"]
            for u in urls
        ]
        assert vpcs[0] != [] and vpcs[0] == vpcs[1]
    finally:
        discard(resumed)
        discard(replayed)


def _make(url: str, name: str) -> tuple[str, str, str]:
    """A user, its key and an object: what the crash test checks is never lost."""
    config = Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=20)
    iam = worker_session().client("iam", endpoint_url=url, config=config)
    user_id = iam.create_user(UserName=name)["User"]["UserId"]
    key_id = iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
    body = f"{name} {user_id} {key_id}".encode()
    worker_session().client("s3", endpoint_url=url, config=config).put_object(
        Bucket=BUCKET, Key=name, Body=body
    )
    return user_id, key_id, hashlib.sha256(body).hexdigest()


def _held(url: str, made: dict[str, tuple[str, str, str]]) -> dict[str, tuple[str, str, str]]:
    iam = worker_session().client("iam", endpoint_url=url)
    s3 = _s3(url)
    held = {}
    for name in made:
        keys = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
        body = s3.get_object(Bucket=BUCKET, Key=name)["Body"].read()
        held[name] = (
            iam.get_user(UserName=name)["User"]["UserId"],
            keys[0]["AccessKeyId"],
            hashlib.sha256(body).hexdigest(),
        )
    return held


def _kill_when(process: ManagedProcess, moment: str, answered: list[int]) -> bool:
    """SIGKILL the server at a random moment once the writer was answered `_ANSWERED`
    times (`answered[0]`: however slow the machine, such a round leaves something), or as
    soon as a checkpoint's temporary file appears (in the middle of its write); whether
    that file was there when it died."""
    temporary = f"{CHECKPOINT_NAME}.{process.pid}.tmp"
    if moment == "random":
        deadline = time.monotonic() + 60
        while answered[0] < _ANSWERED and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(secrets.randbelow(1000) / 1000)
    else:
        deadline = time.monotonic() + 30
        while not (process.state_dir / temporary).exists() and time.monotonic() < deadline:
            time.sleep(0.0005)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    while process.running():
        time.sleep(0.01)
    return (process.state_dir / temporary).exists()


# Makes answered in a round before its random kill: three rounds make more than 8.
_ANSWERED = 3


def test_a_kill_at_any_moment_loses_nothing_and_resumes_as_a_full_replay(tmp_path):
    """A writer makes users, keys and objects without pause while the server writes a
    checkpoint every few requests, and is killed -9: at random moments, and in the middle
    of a checkpoint's write. After each restart everything the writer was answered for is
    there with its ids and bytes; at the end the world is the one a full replay makes."""
    state_dir = tmp_path / "crashing"
    options = ("--checkpoint-every", "4", "--checkpoint-idle", "0.3")
    made: dict[str, tuple[str, str, str]] = {}
    replayed_after_checkpoint: list[int] = []
    mid_write: list[bool] = []
    for round_number, moment in enumerate(["random", "write", "random", "write", "random"]):
        server = start_lab_server(state_dir, free_port(), *options)
        url = _url(server)
        log = _log(server)
        if round_number == 0:
            _s3(url).create_bucket(Bucket=BUCKET)
        else:
            assert _held(url, made) == made, log
            # A checkpoint the kill left half written was removed, never read.
            assert ("a checkpoint a crash left unfinished" in log) == mid_write[-1], log
            if "from the checkpoint" in log:
                replayed_after_checkpoint.append(int(log.split("checkpoint, ")[1].split()[0]))
        stop = threading.Event()
        answered = [0]

        def write(
            url: str = url,
            round_number: int = round_number,
            stop: threading.Event = stop,
            answered: list[int] = answered,
        ) -> None:
            while not stop.is_set():
                name = f"crash-{round_number}-{answered[0]}"
                try:
                    made[name] = _make(url, name)
                except Exception:
                    return  # the server died under it; unanswered, it may or may not be there
                answered[0] += 1

        writer = threading.Thread(target=write)
        writer.start()
        mid_write.append(_kill_when(server, moment, answered))
        stop.set()
        writer.join()
        server.stop()

    resumed, replayed = _resumed_and_full_replay_of(state_dir, tmp_path, *options)
    try:
        assert "from the checkpoint" in _log(resumed)
        # Each read is recorded, and the ids of what comes after depend on their count:
        # both servers are asked the same.
        urls = (_url(resumed), _url(replayed))
        assert _from_both(lambda u: _held(u, made), urls) == [made, made]
        assert len(made) > 8
        # Checkpoints older than the recording's end were completed by replaying the rest.
        assert any(count > 0 for count in replayed_after_checkpoint), replayed_after_checkpoint
        assert list(state_dir.glob("*.tmp")) == []
        iam = [worker_session().client("iam", endpoint_url=_url(p)) for p in (resumed, replayed)]
        users = [
            sorted((u["UserName"], u["UserId"]) for u in client.list_users()["Users"])
            for client in iam
        ]
        assert users[0] == users[1]
        assert _the_same(*_from_both(_every_object, urls)) == {}
        after = [client.create_user(UserName="after-crashes")["User"]["UserId"] for client in iam]
        assert after[0] == after[1]
    finally:
        discard(resumed)
        discard(replayed)


def _identity(iam: Any, name: str) -> dict[str, str]:
    """A user's name, id and ARN (not its creation time: a replay creates it again)."""
    user = iam.get_user(UserName=name)["User"]
    return {k: user[k] for k in ("UserName", "UserId", "Arn")}


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory):
    """A state directory with a user, a key and objects, stopped (its checkpoint written),
    and its world as a resume from that checkpoint reads it."""
    state_dir = tmp_path_factory.mktemp("small-lab")
    server = start_lab_server(state_dir, free_port())
    try:
        url = _url(server)
        iam = worker_session().client("iam", endpoint_url=url)
        iam.create_user(UserName="kept")
        iam.create_access_key(UserName="kept")
        _write_objects(url, "kept")
    finally:
        server.stop()
    # Read in a copy: reads are recorded too.
    reference = tmp_path_factory.mktemp("small-lab-resumed")
    shutil.copytree(state_dir, reference, dirs_exist_ok=True)
    server = start_lab_server(reference, free_port())
    try:
        assert "from the checkpoint, 0 requests replayed" in _log(server)
        url = _url(server)
        iam = worker_session().client("iam", endpoint_url=url)
        world = {"user": _identity(iam, "kept"), "objects": _every_object(url)}
    finally:
        discard(server)
    return state_dir, world


def _damage(case: str, state_dir: Path) -> None:
    path = state_dir / CHECKPOINT_NAME
    header, payload = path.read_bytes().split(b"\n", 1)
    if case == "a flipped byte":
        path.write_bytes(header + b"\n" + payload[:-9] + bytes([payload[-9] ^ 1]) + payload[-8:])
    elif case == "another moto":
        written = json.loads(header)
        written["fingerprint"]["moto"] = "4.0.0"
        path.write_bytes(json.dumps(written).encode() + b"\n" + payload)
    elif case == "a torn recording":
        with (state_dir / RECORDING_NAME).open("ab") as recording:
            recording.write(b'{"headers": {"Host": "127.0.0.1"}, "method": "PO')
        path.unlink()


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("a flipped byte", "the checkpoint is not used: its content does not match its SHA-256"),
        ("another moto", "the checkpoint is not used: it was written by moto 4.0.0, this is"),
        ("a torn recording", "dropping the half-written last line of"),
    ],
)
def test_what_cannot_be_resumed_from_is_replayed_saying_why(small_lab, tmp_path, case, said):
    original, world = small_lab
    state_dir = tmp_path / "lab"
    shutil.copytree(original, state_dir, ignore=shutil.ignore_patterns("logs", "pids"))
    _damage(case, state_dir)
    server = start_lab_server(state_dir, free_port())
    try:
        log = _log(server)
        assert said in log
        assert "without a checkpoint" in log
        url = _url(server)
        iam = worker_session().client("iam", endpoint_url=url)
        assert _identity(iam, "kept") == world["user"]
        assert _every_object(url) == world["objects"]
        iam.create_user(UserName="next")
    finally:
        server.stop()
    # The stop wrote a checkpoint of its own, which the next start resumes from.
    server = start_lab_server(state_dir, free_port())
    try:
        assert "from the checkpoint, 0 requests replayed" in _log(server)
        iam = worker_session().client("iam", endpoint_url=_url(server))
        assert _identity(iam, "kept") == world["user"]
        iam.get_user(UserName="next")
    finally:
        discard(server)


def test_no_secret_the_lab_made_is_in_the_checkpoint_and_every_key_still_works(
    tmp_path, monkeypatch
):
    """The ec2-role attack steals the instance's session, and makes a user with a console
    password and a key; a service-specific credential and an assumed role's session too.
    None of their secrets is in the checkpoint; after the resume, every key still signs
    (moto verifies no signature), as itself."""
    secrets = capture_story_secrets(monkeypatch)
    state_dir = tmp_path / "lab"
    server = start_lab_server(state_dir, free_port())
    try:
        url = _url(server)
        world = lab_world.seed(url)
        report = lab_attack.run_attack(url, world)
        iam = worker_session().client("iam", endpoint_url=url)
        service = iam.create_service_specific_credential(
            UserName=report.backdoor_user, ServiceName="codecommit.amazonaws.com"
        )["ServiceSpecificCredential"]
        iam.create_role(
            RoleName="assumable",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"AWS": f"arn:aws:iam::{world.account_id}:root"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
        )
        assumed = (
            worker_session()
            .client("sts", endpoint_url=url)
            .assume_role(
                RoleArn=f"arn:aws:iam::{world.account_id}:role/assumable", RoleSessionName="session"
            )["Credentials"]
        )
        instance_key = probe(url, world.instance_id)
    finally:
        server.stop()
    known = {value for values in secrets.values() for value in values}
    known |= {service["ServicePassword"], assumed["SecretAccessKey"], assumed["SessionToken"]}
    assert {"secretaccesskey", "token", "password"} <= set(secrets) and len(known) >= 7

    path = state_dir / CHECKPOINT_NAME
    _, state = checkpoint.read(path, state_dir / RECORDING_NAME)
    stored = [path.read_bytes(), state]
    assert [sorted(s for s in known if s.encode() in b) for b in stored] == [[], []]
    # The test would see them: the checkpoint holds what they belong to.
    assert report.backdoor_access_key_id.encode() in state and instance_key.encode() in state

    server = start_lab_server(state_dir, free_port())
    try:
        url = _url(server)
        assert "from the checkpoint, 0 requests replayed" in _log(server)
        stolen = report.stolen_access_key_id
        sessions = {
            f"user/{report.backdoor_user}": (report.backdoor_access_key_id, None),
            f"assumed-role/{world.role_name}/{world.instance_id}": (stolen, "stolen-token"),
            "assumed-role/assumable/session": (assumed["AccessKeyId"], assumed["SessionToken"]),
        }
        for arn_tail, (key_id, token) in sessions.items():
            sts = boto3.Session(
                aws_access_key_id=key_id,
                aws_secret_access_key="signed with a secret the lab's AWS no longer has",
                aws_session_token=token,
                region_name=REGION,
            ).client("sts", endpoint_url=url)
            assert sts.get_caller_identity()["Arn"].endswith(arn_tail)
        iam = worker_session().client("iam", endpoint_url=url)
        iam.get_login_profile(UserName=report.backdoor_user)
        listed = iam.list_service_specific_credentials(UserName=report.backdoor_user)
        ids = [c["ServiceSpecificCredentialId"] for c in listed["ServiceSpecificCredentials"]]
        assert ids == [service["ServiceSpecificCredentialId"]]
        # The instance serves the same session from its metadata, its secrets scrubbed.
        assert probe(url, world.instance_id) == instance_key
        stolen_again = lab_attack.steal_instance_credentials(url, world)
        assert stolen_again["AccessKeyId"] == instance_key
        assert stolen_again["SecretAccessKey"] == stolen_again["Token"] == SCRUBBED
    finally:
        discard(server)
