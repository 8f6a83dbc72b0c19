"""The lab's AWS account as it was before the attack: the seed's account 123456789012 with
an application instance, a trail, buckets, and legitimate people and roles."""

import io
import json
import zipfile
from typing import Any

import boto3
from pydantic import BaseModel

from config.names import PROTECTED_TAG_KEY

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
CLOUDTRAIL_BUCKET = f"quench-lab-cloudtrail-{ACCOUNT_ID}"
EVIDENCE_BUCKET = f"quench-lab-evidence-{ACCOUNT_ID}"
APP_BUCKET = "acme-orders-data"
TRAIL_NAME = "management-events"
APP_ROLE = "web-app-role"
APP_PROFILE = "web-app-profile"
PROTECTED_TAG = PROTECTED_TAG_KEY
# Where the lab's cases notify, and the queue subscribed to it that stands in for people.
NOTIFY_TOPIC = "quench-lab-cases"
NOTIFY_TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:{NOTIFY_TOPIC}"
NOTIFY_INBOX = "quench-lab-inbox"

EC2_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
# The root cause the lab tells: an application role with far more than it needs.
_APP_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:*", "ssm:GetParameter*"], "Resource": "*"},
        {
            "Sid": "LegacyDeployTooling",
            "Effect": "Allow",
            "Action": ["iam:*", "lambda:*", "cloudtrail:*", "ec2:Describe*"],
            "Resource": "*",
        },
    ],
}


BUILD_BOT_USER = "build-bot"
BUILD_BOT_POLICY_NAME = "ci-build"
# Broader than a build needs, as CI users' policies tend to become.
BUILD_BOT_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "CiBuildAndDeploy",
            "Effect": "Allow",
            "Action": ["iam:*", "ec2:*", "lambda:*", "cloudtrail:*", "sts:*"],
            "Resource": "*",
        }
    ],
}


class LabWorld(BaseModel):
    """Ids of what the lab created, saved so a restarted stack finds its world again."""

    account_id: str = ACCOUNT_ID
    region: str = REGION
    cloudtrail_bucket: str = CLOUDTRAIL_BUCKET
    evidence_bucket: str = EVIDENCE_BUCKET
    trail_name: str = TRAIL_NAME
    instance_id: str
    instance_private_ip: str
    role_name: str = APP_ROLE
    role_id: str
    profile_name: str = APP_PROFILE
    profile_arn: str
    profile_id: str
    admin_user: str = "alice-admin"
    admin_user_id: str
    admin_key_id: str
    legitimate_users: list[str]
    legitimate_roles: list[str]
    protected_roles: list[str]
    # The CI user, made when the user-key scenario first needs it; saved worlds from before
    # it existed load with these defaults. The key's secret is never saved.
    build_bot_user: str = BUILD_BOT_USER
    build_bot_user_id: str = ""
    build_bot_key_id: str = ""


def admin_session() -> boto3.Session:
    """The lab operator's own session (moto accepts any key)."""
    return boto3.Session(
        aws_access_key_id="AKIALABOPERATOR00001",
        aws_secret_access_key="lab-operator-secret",
        region_name=REGION,
    )


def client(session: boto3.Session, service: str, endpoint_url: str) -> Any:
    return session.client(service, endpoint_url=endpoint_url, region_name=REGION)  # type: ignore[call-overload]


def ensure_notifications(endpoint_url: str) -> str:
    """The cases' SNS topic and an SQS queue subscribed to it (made if missing); the
    queue's URL."""
    session = admin_session()
    sns, sqs = client(session, "sns", endpoint_url), client(session, "sqs", endpoint_url)
    topic_arn = sns.create_topic(Name=NOTIFY_TOPIC)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=NOTIFY_INBOX)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    subscribed = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    if all(s["Endpoint"] != queue_arn for s in subscribed):
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return str(queue_url)


def read_notifications(endpoint_url: str, case_id: str) -> list[dict[str, Any]]:
    """A case's notifications waiting in the lab's inbox (SNS envelopes, oldest first),
    taken off it; other cases' stay for their readers."""
    sqs = client(admin_session(), "sqs", endpoint_url)
    queue_url = sqs.get_queue_url(QueueName=NOTIFY_INBOX)["QueueUrl"]
    taken: list[dict[str, Any]] = []
    others: list[str] = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            envelope = json.loads(message["Body"])
            attributes = envelope.get("MessageAttributes", {})
            if attributes.get("quench_case_id", {}).get("Value") == case_id:
                taken.append(envelope)
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            else:
                others.append(message["ReceiptHandle"])
    for handle in others:
        sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0)
    return sorted(taken, key=lambda envelope: str(envelope["Timestamp"]))


def lambda_zip(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", source)
    return buffer.getvalue()


def seed(endpoint_url: str) -> LabWorld:
    """Create the account's resources before the attack."""
    session = admin_session()
    s3 = client(session, "s3", endpoint_url)
    iam = client(session, "iam", endpoint_url)
    ec2 = client(session, "ec2", endpoint_url)
    cloudtrail = client(session, "cloudtrail", endpoint_url)
    lam = client(session, "lambda", endpoint_url)

    for bucket in (CLOUDTRAIL_BUCKET, EVIDENCE_BUCKET, APP_BUCKET):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=APP_BUCKET, Key="orders/2026-11-21.csv", Body=b"order,amount\n1,10\n")
    cloudtrail.create_trail(
        Name=TRAIL_NAME, S3BucketName=CLOUDTRAIL_BUCKET, IsMultiRegionTrail=True
    )
    cloudtrail.start_logging(Name=TRAIL_NAME)

    role = iam.create_role(
        RoleName=APP_ROLE,
        AssumeRolePolicyDocument=json.dumps(EC2_TRUST_POLICY),
        Description="Orders web application",
        Tags=[{"Key": "app", "Value": "orders"}],
    )["Role"]
    iam.put_role_policy(
        RoleName=APP_ROLE, PolicyName="orders-app", PolicyDocument=json.dumps(_APP_POLICY)
    )
    iam.attach_role_policy(
        RoleName=APP_ROLE, PolicyArn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    )
    profile = iam.create_instance_profile(InstanceProfileName=APP_PROFILE)["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName=APP_PROFILE, RoleName=APP_ROLE)

    # Legitimate people and roles, which the response must never touch.
    admin = iam.create_user(UserName="alice-admin")["User"]
    iam.attach_user_policy(
        UserName="alice-admin", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"
    )
    admin_key = iam.create_access_key(UserName="alice-admin")["AccessKey"]
    iam.create_user(UserName="ci-deployer")
    iam.create_access_key(UserName="ci-deployer")
    iam.create_role(
        RoleName="audit-readonly",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    iam.create_role(
        RoleName="break-glass-admin",
        AssumeRolePolicyDocument=json.dumps(EC2_TRUST_POLICY),
        Tags=[{"Key": PROTECTED_TAG, "Value": "true"}],
    )
    lam.create_function(
        FunctionName="orders-api",
        Runtime="python3.12",
        Role=role["Arn"],
        Handler="handler.handle",
        Code={"ZipFile": lambda_zip("def handle(event, context):\n    return {'ok': True}\n")},
    )

    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(
        ImageId=image_id,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        IamInstanceProfile={"Name": APP_PROFILE},
        BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8, "VolumeType": "gp3"}}
        ],
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "orders-web-1"}]}
        ],
    )["Instances"][0]
    return LabWorld(
        instance_id=instance["InstanceId"],
        instance_private_ip=instance.get("PrivateIpAddress", "10.0.1.25"),
        role_id=role["RoleId"],
        profile_arn=profile["Arn"],
        profile_id=profile["InstanceProfileId"],
        admin_user_id=admin["UserId"],
        admin_key_id=admin_key["AccessKeyId"],
        legitimate_users=["alice-admin", "ci-deployer"],
        legitimate_roles=[APP_ROLE, "audit-readonly"],
        protected_roles=["break-glass-admin"],
    )


def provision_build_bot(endpoint_url: str, world: LabWorld) -> LabWorld:
    """The CI user `build-bot` with its policy, in the world if not yet there.

    It is made on first need, not by the seed, so that the EC2-role scenario's ids stay
    as they were (moto draws them from one seeded sequence) and a world saved before
    build-bot existed gets it the same way. Idempotent.
    """
    if world.build_bot_user_id:
        return world
    iam = client(admin_session(), "iam", endpoint_url)
    try:
        user = iam.get_user(UserName=world.build_bot_user)["User"]
    except iam.exceptions.NoSuchEntityException:
        user = iam.create_user(
            UserName=world.build_bot_user, Tags=[{"Key": "team", "Value": "platform"}]
        )["User"]
    iam.put_user_policy(
        UserName=world.build_bot_user,
        PolicyName=BUILD_BOT_POLICY_NAME,
        PolicyDocument=json.dumps(BUILD_BOT_POLICY),
    )
    users = world.legitimate_users
    return world.model_copy(
        update={
            "build_bot_user_id": user["UserId"],
            # The response deactivates its key and keeps the user.
            "legitimate_users": [*users, world.build_bot_user]
            if world.build_bot_user not in users
            else users,
        }
    )
