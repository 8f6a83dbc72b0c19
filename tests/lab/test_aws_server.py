"""The lab's AWS server as Quench sees it through the real APIs: instance credentials
rotate on stop+start and not on reboot, SSM runs scripts in a sandbox, and the world
survives a restart of the server."""

import json

import boto3
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients
from activities.ssm import SsmActivities
from lab.world import EC2_TRUST_POLICY
from models.activities import ProbeInstanceCredentialsInput
from stack.processes import free_port
from tests.lab.lab_server import start_lab_server

REGION = "us-east-1"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("lab-aws")
    port = free_port()
    process = start_lab_server(state_dir, port)
    session = boto3.Session(
        aws_access_key_id="AKIALABTEST000000001", aws_secret_access_key="x", region_name=REGION
    )
    url = f"http://127.0.0.1:{port}"
    iam = session.client("iam", endpoint_url=url)
    ec2 = session.client("ec2", endpoint_url=url)
    iam.create_role(RoleName="app", AssumeRolePolicyDocument=json.dumps(EC2_TRUST_POLICY))
    iam.create_instance_profile(InstanceProfileName="app-profile")
    iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, IamInstanceProfile={"Name": "app-profile"}
    )["Instances"][0]["InstanceId"]
    state = {"process": process, "port": port, "dir": state_dir}
    yield session, url, instance_id, state
    state["process"].stop()


def _probe(session, url, instance_id) -> str:
    activities = SsmActivities(AwsClients(session, REGION, url), poll_seconds=0.05)
    result = ActivityEnvironment().run(
        activities.probe_instance_credentials,
        ProbeInstanceCredentialsInput(instance_id=instance_id, role_name="app"),
    )
    return result.access_key_id


def test_credentials_rotate_on_stop_and_start_but_not_on_reboot(lab):
    session, url, instance_id, _ = lab
    ec2 = session.client("ec2", endpoint_url=url)
    first = _probe(session, url, instance_id)
    assert first.startswith("ASIA")
    assert _probe(session, url, instance_id) == first
    ec2.reboot_instances(InstanceIds=[instance_id])
    assert _probe(session, url, instance_id) == first
    ec2.stop_instances(InstanceIds=[instance_id])
    with pytest.raises(ApplicationError) as stopped:
        _probe(session, url, instance_id)
    assert stopped.value.type == "SsmAgentUnavailable"
    ec2.start_instances(InstanceIds=[instance_id])
    second = _probe(session, url, instance_id)
    assert second.startswith("ASIA") and second != first
    # The metadata key is a real session of the role in the lab's STS.
    sts = boto3.Session(aws_access_key_id=second, aws_secret_access_key="x").client(
        "sts", endpoint_url=url, region_name=REGION
    )
    assert sts.get_caller_identity()["Arn"].endswith(f":assumed-role/app/{instance_id}")


def test_instance_scripts_run_sandboxed(lab):
    session, url, instance_id, _ = lab
    ssm = session.client("ssm", endpoint_url=url)
    command = ssm.send_command(
        InstanceIds=[instance_id],
        DocumentName="AWS-RunShellScript",
        Parameters={
            "commands": [
                "curl -sS http://example.com/ || echo no-network",
                "curl -sS http://169.254.169.254/latest/meta-data/instance-id || echo needs-token",
                "echo x > escaped.txt || true",
            ]
        },
    )["Command"]
    output = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=instance_id)
    assert "no-network" in output["StandardOutputContent"]
    assert "needs-token" in output["StandardOutputContent"]
    assert "restricted" in output["StandardErrorContent"]


def test_the_world_survives_a_restart(lab):
    session, url, instance_id, state = lab
    before = _probe(session, url, instance_id)
    state["process"].stop()
    state["process"] = start_lab_server(state["dir"], state["port"])
    assert (state["dir"] / "lab-aws.ready").read_text() == "replayed"
    ec2 = session.client("ec2", endpoint_url=url)
    instances = [
        i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
    ]
    assert instances == [instance_id]
    assert _probe(session, url, instance_id) == before
