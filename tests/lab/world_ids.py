"""The lab's world as a worker sees it, for tests that restart the lab's server: calls as a
case makes them (reads in many regions, changes several at once, new resources after), and
every id in the lab's AWS, to compare before and after."""

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import httpx
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients
from activities.ssm import SsmActivities
from lab import world as lab_world
from lab.world import EC2_TRUST_POLICY, REGION, LabWorld
from models.activities import ProbeInstanceCredentialsInput

# Regions a worker's CloudTrail and EC2 reads reach: each one's EC2 backend is made by
# the first call there, with a default VPC and subnets of random ids.
REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1")


def worker_session(region: str = REGION) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id="AKIAQUENCHLABWORKER1", aws_secret_access_key="x", region_name=region
    )


def probe(url: str, instance_id: str) -> str:
    """The instance's role key, read over SSM from its metadata, as the worker reads it."""
    activities = SsmActivities(AwsClients(worker_session(), REGION, url), poll_seconds=0.05)
    result = ActivityEnvironment().run(
        activities.probe_instance_credentials,
        ProbeInstanceCredentialsInput(instance_id=instance_id, role_name=lab_world.APP_ROLE),
    )
    return str(result.access_key_id)


def image_of(url: str, world: LabWorld) -> str:
    """The image the lab's instance runs: one of Amazon's, found without listing them all
    (seconds to answer and parse)."""
    ec2 = worker_session().client("ec2", endpoint_url=url)
    reservations = ec2.describe_instances(InstanceIds=[world.instance_id])["Reservations"]
    return str(reservations[0]["Instances"][0]["ImageId"])


def worker_reads(url: str, world: LabWorld) -> list[Callable[[], Any]]:
    """Reads and read-like calls, as a case's evidence, triage and watch make them."""
    calls: list[Callable[[], Any]] = []
    for region in REGIONS:
        session = worker_session(region)
        ec2 = session.client("ec2", endpoint_url=url)
        calls += [
            ec2.describe_instances,
            ec2.describe_volumes,
            ec2.describe_vpcs,
            session.client("cloudtrail", endpoint_url=url).describe_trails,
            session.client("sts", endpoint_url=url).get_caller_identity,
        ]
    iam = worker_session().client("iam", endpoint_url=url)
    calls += [
        iam.list_users,
        iam.list_roles,
        lambda: iam.get_role(RoleName=lab_world.APP_ROLE),
        lambda: iam.list_role_policies(RoleName=lab_world.APP_ROLE),
        lambda: iam.list_access_keys(UserName="alice-admin"),
        lambda: probe(url, world.instance_id),
        # moto's own API is never recorded; its seed call moves moto's generator.
        lambda: httpx.post(f"{url}/moto-api/seed?a=7", timeout=30).raise_for_status(),
    ]
    return calls


def worker_changes(url: str, world: LabWorld) -> list[Callable[[], Any]]:
    """Changes a case makes, several at once: snapshots of the volume, new resources."""
    session = worker_session()
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


def run_together(calls: list[Callable[[], Any]]) -> None:
    with ThreadPoolExecutor(8) as pool:
        for done in [pool.submit(call) for call in calls]:
            done.result()


def more_resources(url: str, world: LabWorld) -> LabWorld:
    """What comes after: the user-key scenario's build-bot and its key, a role, an
    instance, a stop+start and another snapshot."""
    session = worker_session()
    ec2 = session.client("ec2", endpoint_url=url)
    iam = session.client("iam", endpoint_url=url)
    world = lab_world.provision_build_bot(url, world)
    iam.create_access_key(UserName=world.build_bot_user)
    iam.create_role(RoleName="after-case", AssumeRolePolicyDocument=json.dumps(EC2_TRUST_POLICY))
    ec2.run_instances(ImageId=image_of(url, world), MinCount=1, MaxCount=1)
    ec2.stop_instances(InstanceIds=[world.instance_id])
    ec2.start_instances(InstanceIds=[world.instance_id])
    volume = ec2.describe_volumes()["Volumes"][-1]["VolumeId"]
    ec2.create_snapshot(VolumeId=volume, Description="after")
    return world


def every_id(url: str, world: LabWorld) -> dict[str, Any]:
    session = worker_session()
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
        ec2 = worker_session(region).client("ec2", endpoint_url=url)
        reservations = ec2.describe_instances()["Reservations"]
        ids[f"instances in {region}"] = sorted(
            (i["InstanceId"], i.get("PrivateIpAddress"), r["ReservationId"])
            for r in reservations
            for i in r["Instances"]
        )
        ids[f"volumes in {region}"] = sorted(
            v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]
        )
        # The account's own snapshots: moto answers `OwnerIds` with every snapshot it made
        # for its thousands of images too (seconds a call to send and parse). Those are made
        # with the region's backend, as its default VPC and subnets are, compared below.
        snapshots = ec2.describe_snapshots(
            Filters=[{"Name": "owner-id", "Values": [world.account_id]}]
        )["Snapshots"]
        ids[f"snapshots in {region}"] = sorted(
            (s["SnapshotId"], s["VolumeId"], s["Description"]) for s in snapshots
        )
        ids[f"vpcs in {region}"] = sorted(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"])
        ids[f"subnets in {region}"] = sorted(
            s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]
        )
    ids["instance role key"] = probe(url, world.instance_id)
    return ids
