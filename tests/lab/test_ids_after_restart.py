"""Every id in the lab's AWS is the same after a restart of its server, whatever calls a
worker made in between: reads in many regions, calls answered concurrently, calls moto
does not record, and SSM commands that mint an instance's credentials. (A full ec2-role
case, then the user-key scenario, then `up` again: the lab's AWS had another key for
build-bot than the scenario had saved.)"""

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients
from activities.ssm import SsmActivities
from lab import world as lab_world
from lab.aws_server import RECORDING_NAME
from lab.world import EC2_TRUST_POLICY, REGION, LabWorld
from models.activities import ProbeInstanceCredentialsInput
from stack.processes import free_port
from tests.lab.lab_server import start_lab_server

# Regions a worker's CloudTrail and EC2 reads reach: each one's EC2 backend is made by
# the first call there, with a default VPC and subnets of random ids.
REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1")


def _session(region: str = REGION) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id="AKIAQUENCHLABWORKER1", aws_secret_access_key="x", region_name=region
    )


def _probe(url: str, instance_id: str) -> str:
    """The instance's role key, read over SSM from its metadata, as the worker reads it."""
    activities = SsmActivities(AwsClients(_session(), REGION, url), poll_seconds=0.05)
    result = ActivityEnvironment().run(
        activities.probe_instance_credentials,
        ProbeInstanceCredentialsInput(instance_id=instance_id, role_name=lab_world.APP_ROLE),
    )
    return str(result.access_key_id)


def _worker_reads(url: str, world: LabWorld) -> list[Callable[[], Any]]:
    """Reads and read-like calls, as a case's evidence, triage and watch make them."""
    calls: list[Callable[[], Any]] = []
    for region in REGIONS:
        session = _session(region)
        ec2 = session.client("ec2", endpoint_url=url)
        calls += [
            ec2.describe_instances,
            ec2.describe_volumes,
            ec2.describe_vpcs,
            session.client("cloudtrail", endpoint_url=url).describe_trails,
            session.client("sts", endpoint_url=url).get_caller_identity,
        ]
    iam = _session().client("iam", endpoint_url=url)
    calls += [
        iam.list_users,
        iam.list_roles,
        lambda: iam.get_role(RoleName=lab_world.APP_ROLE),
        lambda: iam.list_role_policies(RoleName=lab_world.APP_ROLE),
        lambda: iam.list_access_keys(UserName="alice-admin"),
        lambda: _probe(url, world.instance_id),
        # moto's own API is never recorded; its seed call moves moto's generator.
        lambda: httpx.post(f"{url}/moto-api/seed?a=7", timeout=30).raise_for_status(),
    ]
    return calls


def _worker_changes(url: str, world: LabWorld) -> list[Callable[[], Any]]:
    """Changes a case makes, several at once: snapshots of the volume, new resources."""
    session = _session()
    ec2 = session.client("ec2", endpoint_url=url)
    iam = session.client("iam", endpoint_url=url)
    volume = ec2.describe_volumes()["Volumes"][0]["VolumeId"]

    def snapshot(n: int) -> Callable[[], Any]:
        return lambda: ec2.create_snapshot(VolumeId=volume, Description=f"case {n}")

    def user(n: int) -> Callable[[], Any]:
        def make() -> None:
            iam.create_user(UserName=f"concurrent-{n}")
            iam.create_access_key(UserName=f"concurrent-{n}")

        return make

    return [snapshot(n) for n in range(4)] + [user(n) for n in range(4)]


def _run_together(calls: list[Callable[[], Any]]) -> None:
    with ThreadPoolExecutor(8) as pool:
        for done in [pool.submit(call) for call in calls]:
            done.result()


def _more_resources(url: str, world: LabWorld) -> LabWorld:
    """What comes after: the user-key scenario's build-bot and its key, a role, an
    instance, a stop+start and another snapshot."""
    session = _session()
    ec2 = session.client("ec2", endpoint_url=url)
    iam = session.client("iam", endpoint_url=url)
    world = lab_world.provision_build_bot(url, world)
    iam.create_access_key(UserName=world.build_bot_user)
    iam.create_role(RoleName="after-case", AssumeRolePolicyDocument=json.dumps(EC2_TRUST_POLICY))
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    ec2.stop_instances(InstanceIds=[world.instance_id])
    ec2.start_instances(InstanceIds=[world.instance_id])
    volume = ec2.describe_volumes()["Volumes"][-1]["VolumeId"]
    ec2.create_snapshot(VolumeId=volume, Description="after")
    return world


def _every_id(url: str, world: LabWorld) -> dict[str, Any]:
    session = _session()
    iam = session.client("iam", endpoint_url=url)
    ids: dict[str, Any] = {}
    for user in iam.list_users()["Users"]:
        name = user["UserName"]
        ids[f"user {name}"] = user["UserId"]
        keys = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
        ids[f"keys of {name}"] = sorted(k["AccessKeyId"] for k in keys)
    for role in iam.list_roles()["Roles"]:
        ids[f"role {role['RoleName']}"] = role["RoleId"]
    for profile in iam.list_instance_profiles()["InstanceProfiles"]:
        ids[f"instance profile {profile['InstanceProfileName']}"] = profile["InstanceProfileId"]
    for region in REGIONS:
        ec2 = _session(region).client("ec2", endpoint_url=url)
        reservations = ec2.describe_instances()["Reservations"]
        ids[f"instances in {region}"] = sorted(
            (i["InstanceId"], i.get("PrivateIpAddress"), r["ReservationId"])
            for r in reservations
            for i in r["Instances"]
        )
        ids[f"volumes in {region}"] = sorted(
            v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]
        )
        snapshots = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        ids[f"snapshots in {region}"] = sorted(
            (s["SnapshotId"], s["VolumeId"], s["Description"]) for s in snapshots
        )
        ids[f"vpcs in {region}"] = sorted(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"])
        ids[f"subnets in {region}"] = sorted(
            s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]
        )
    ids["instance role key"] = _probe(url, world.instance_id)
    return ids


@pytest.fixture
def lab(tmp_path):
    port = free_port()
    state = {"process": start_lab_server(tmp_path, port)}
    yield tmp_path, port, state
    state["process"].stop()


def test_every_id_is_the_same_after_the_lab_restarts(lab):
    state_dir, port, state = lab
    url = f"http://127.0.0.1:{port}"
    world = lab_world.seed(url)
    _run_together(_worker_reads(url, world) + _worker_changes(url, world))
    world = _more_resources(url, world)
    before = _every_id(url, world)
    assert before[f"keys of {world.build_bot_user}"] != []
    # The case's snapshots, among those moto made for its images.
    made = [s for s in before[f"snapshots in {REGION}"] if s[2].startswith(("case ", "after"))]
    assert len(made) == 5

    state["process"].stop()
    state["process"] = start_lab_server(state_dir, port)

    assert (state_dir / "lab-aws.ready").read_text() == "replayed"
    after = _every_id(url, world)
    changed = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys()}
    assert {k: v for k, v in changed.items() if v[0] != v[1]} == {}


def test_a_recording_made_before_calls_had_their_own_ids_keeps_its_ids(lab):
    """A state directory recorded before each call drew from its own stream replays its
    calls from moto's one seeded generator, in order, as they were made; calls recorded
    after it draw from their own streams."""
    state_dir, port, state = lab
    url = f"http://127.0.0.1:{port}"
    iam = _session().client("iam", endpoint_url=url)
    iam.create_user(UserName="old-user")
    state["process"].stop()
    recording = state_dir / RECORDING_NAME
    entries = [json.loads(line) for line in recording.read_text().splitlines()]
    assert [e["sequence"] for e in entries] == list(range(len(entries)))
    recording.write_text("".join(json.dumps(_without_sequence(e)) + "\n" for e in entries))
    state["process"] = start_lab_server(state_dir, port)
    legacy_id = iam.get_user(UserName="old-user")["User"]["UserId"]
    iam.create_user(UserName="new-user")
    new_id = iam.get_user(UserName="new-user")["User"]["UserId"]

    state["process"].stop()
    state["process"] = start_lab_server(state_dir, port)
    assert iam.get_user(UserName="old-user")["User"]["UserId"] == legacy_id
    assert iam.get_user(UserName="new-user")["User"]["UserId"] == new_id


def _without_sequence(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "sequence"}
