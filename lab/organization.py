"""The lab's organisation (lab/accounts.toml): Quench runs in the security account, the
lab's own 123456789012; two member accounts run the same StackSet-made application as
the security account (web-app-role on an instance, by the same names); a third is managed
but never got Quench's role; and findings of any other account are not Quench's to act on.

Member accounts are seeded the way Organizations reaches an account it made, here by
moto's account header; Quench itself reaches them only through the QuenchResponder role
it assumes, which the lab's STS checks against the role's trust (lab/trust.py).
"""

import json
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import boto3
from pydantic import BaseModel

from activities.iam import policy_cutoff
from config.names import REVOKE_SESSIONS_POLICY_NAME as REVOKE_SESSIONS_POLICY
from lab.attack import (
    ATTACKER_AGENT,
    RETURN_CALLS,
    STOLEN_SESSION_AGE,
    THREAT_IP,
    steal_instance_credentials,
)
from lab.calls import Caller, Clock, ScenarioReport
from lab.cloudtrail import Actor, TrailRecorder, assumed_role_identity, iam_user_identity
from lab.guardduty import instance_role_finding
from lab.world import (
    ACCOUNT_ID,
    APP_PROFILE,
    APP_ROLE,
    EC2_TRUST_POLICY,
    REGION,
    LabWorld,
    admin_session,
    client,
)

ACCOUNTS_FILE = Path(__file__).with_name("accounts.toml")
ORGANIZATION_ID = "o-quenchlab01"
MANAGEMENT_ACCOUNT = "101010101010"
QUARANTINE_ROLE = "QuenchQuarantine"
QUARANTINE_POLICY = Path(__file__).resolve().parents[1] / "docs" / "quarantine-role-policy.json"
ORG_TRAIL_BUCKET = "quench-lab-org-trail"
RESPONDER_ROLE = "QuenchResponder"
EXTERNAL_ID = "quench-lab-external-id"
MEMBERS = {"111111111111": "web-prod", "222222222222": "web-staging"}
SCENARIO_ACCOUNT = "111111111111"  # the cross-account scenario's: web-prod
WITHOUT_RESPONDER_ROLE = "333333333333"
NOT_MANAGED = "999999999999"
MEMBER_POLICY = Path(__file__).resolve().parents[1] / "docs" / "member-role-policy.json"
BACKDOOR_USER = "svc-metrics"


class Member(BaseModel):
    """One member account's application, as the lab made it."""

    account_id: str
    name: str
    instance_id: str
    instance_private_ip: str
    role_name: str = APP_ROLE
    role_id: str
    profile_arn: str
    profile_id: str

    def as_world(self) -> LabWorld:
        """The account as a lab world, for the attack's helpers (which read these fields)."""
        return LabWorld(
            account_id=self.account_id,
            cloudtrail_bucket=ORG_TRAIL_BUCKET,
            instance_id=self.instance_id,
            instance_private_ip=self.instance_private_ip,
            role_id=self.role_id,
            profile_arn=self.profile_arn,
            profile_id=self.profile_id,
            admin_user_id="",
            admin_key_id="",
            legitimate_users=[],
            legitimate_roles=[APP_ROLE, RESPONDER_ROLE],
            protected_roles=[],
        )


class CrossAccountAttackReport(ScenarioReport):
    """What the attacker did with a member account's stolen session; it holds no secret."""

    scenario: Literal["cross-account"] = "cross-account"
    account_id: str
    account_name: str
    role_name: str
    instance_id: str
    stolen_access_key_id: str
    backdoor_user: str
    backdoor_access_key_id: str


def in_account(account_id: str, service: str, endpoint_url: str) -> Any:
    """A client acting in a member account as the organisation's own access to it."""
    api = client(admin_session(), service, endpoint_url)

    def to_account(request: Any, **_: Any) -> None:
        request.headers["x-moto-account-id"] = account_id

    api.meta.events.register("before-sign.*.*", to_account)
    return api


def responder_trust(security_account: str = ACCOUNT_ID) -> dict[str, Any]:
    """docs/member-role-trust-policy.json, filled in for the lab."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{security_account}:root"},
                "Action": ["sts:AssumeRole", "sts:SetSourceIdentity"],
                "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}},
            }
        ],
    }


def seed_member(endpoint_url: str, account_id: str) -> Member:
    """The member account's responder role and application, made if missing."""
    iam = in_account(account_id, "iam", endpoint_url)
    ec2 = in_account(account_id, "ec2", endpoint_url)
    _quench_role(
        iam,
        RESPONDER_ROLE,
        "Quench's incident response, from the security account",
        MEMBER_POLICY.read_text().replace("<cloudtrail-bucket>", ORG_TRAIL_BUCKET),
    )
    try:
        role = iam.get_role(RoleName=APP_ROLE)["Role"]
        profile = iam.get_instance_profile(InstanceProfileName=APP_PROFILE)["InstanceProfile"]
    except iam.exceptions.NoSuchEntityException:
        role = iam.create_role(
            RoleName=APP_ROLE, AssumeRolePolicyDocument=json.dumps(EC2_TRUST_POLICY)
        )["Role"]
        iam.put_role_policy(
            RoleName=APP_ROLE,
            PolicyName="orders-app",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}],
                }
            ),
        )
        profile = iam.create_instance_profile(InstanceProfileName=APP_PROFILE)["InstanceProfile"]
        iam.add_role_to_instance_profile(InstanceProfileName=APP_PROFILE, RoleName=APP_ROLE)
    running = [
        instance
        for reservation in ec2.describe_instances(
            Filters=[{"Name": "tag:Name", "Values": ["orders-web-1"]}]
        )["Reservations"]
        for instance in reservation["Instances"]
        if instance["State"]["Name"] != "terminated"
    ]
    if running:
        instance = running[0]
    else:
        image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        instance = ec2.run_instances(
            ImageId=image_id,
            InstanceType="t3.micro",
            MinCount=1,
            MaxCount=1,
            IamInstanceProfile={"Name": APP_PROFILE},
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "orders-web-1"}]}
            ],
        )["Instances"][0]
    return Member(
        account_id=account_id,
        name=MEMBERS.get(account_id, "web-dev"),
        instance_id=instance["InstanceId"],
        instance_private_ip=instance.get("PrivateIpAddress", "10.0.1.25"),
        role_id=role["RoleId"],
        profile_arn=profile["Arn"],
        profile_id=profile["InstanceProfileId"],
    )


def seed_organization(endpoint_url: str) -> dict[str, Member]:
    """The organisation (its management account, with the role Quench assumes there for
    the quarantine), the organisation trail's bucket, each member's application, and the
    managed account without Quench's role: by account id."""
    s3 = client(admin_session(), "s3", endpoint_url)
    if ORG_TRAIL_BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=ORG_TRAIL_BUCKET)
    _seed_management(endpoint_url)
    members = {account: seed_member(endpoint_url, account) for account in MEMBERS}
    members[WITHOUT_RESPONDER_ROLE] = _without_responder(endpoint_url)
    return members


def _seed_management(endpoint_url: str) -> None:
    org = in_account(MANAGEMENT_ACCOUNT, "organizations", endpoint_url)
    try:
        org.describe_organization()
    except org.exceptions.AWSOrganizationsNotInUseException:
        org.create_organization(FeatureSet="ALL")
    joined = {a["Id"] for a in org.list_accounts()["Accounts"]}
    for account in [*MEMBERS, WITHOUT_RESPONDER_ROLE]:
        if account not in joined:
            org.invite_account_to_organization(Target={"Id": account, "Type": "ACCOUNT"})
    _quench_role(
        in_account(MANAGEMENT_ACCOUNT, "iam", endpoint_url),
        QUARANTINE_ROLE,
        "Quench's quarantine of member accounts, from the security account",
        QUARANTINE_POLICY.read_text(),
    )


def _quench_role(iam: Any, name: str, description: str, policy: str) -> None:
    """A role Quench assumes from the security account, made if missing."""
    try:
        iam.get_role(RoleName=name)
    except iam.exceptions.NoSuchEntityException:
        iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(responder_trust()),
            Description=description,
        )
        iam.put_role_policy(RoleName=name, PolicyName="quench", PolicyDocument=policy)


def quarantined(
    endpoint_url: str, account_id: str, principal_arn: str, issued_at: datetime
) -> bool:
    """Whether a service control policy attached to the account denies this principal's
    session issued then: the organisation's own check, for the lab's attacker (moto
    enforces no policy). Reads Deny statements of the shape Quench writes."""
    org = in_account(MANAGEMENT_ACCOUNT, "organizations", endpoint_url)
    attached = org.list_policies_for_target(TargetId=account_id, Filter="SERVICE_CONTROL_POLICY")
    for summary in attached["Policies"]:
        content = org.describe_policy(PolicyId=summary["Id"])["Policy"]["Content"]
        for statement in json.loads(content).get("Statement", []):
            if statement.get("Effect") == "Deny" and _denies(statement, principal_arn, issued_at):
                return True
    return False


def _denies(statement: dict[str, Any], principal_arn: str, issued_at: datetime) -> bool:
    condition = statement.get("Condition") or {}
    matches = (condition.get("ArnLike") or {}).get("aws:PrincipalArn", ["*"])
    spared = (condition.get("ArnNotLike") or {}).get("aws:PrincipalArn", [])
    before = (condition.get("DateLessThan") or {}).get("aws:TokenIssueTime")
    if not any(fnmatchcase(principal_arn, pattern) for pattern in matches):
        return False
    if any(fnmatchcase(principal_arn, pattern) for pattern in spared):
        return False
    return before is None or issued_at < datetime.fromisoformat(before.replace("Z", "+00:00"))


def _without_responder(endpoint_url: str) -> Member:
    member = seed_member(endpoint_url, WITHOUT_RESPONDER_ROLE)
    iam = in_account(WITHOUT_RESPONDER_ROLE, "iam", endpoint_url)
    try:
        iam.delete_role_policy(RoleName=RESPONDER_ROLE, PolicyName="quench")
        iam.delete_role(RoleName=RESPONDER_ROLE)
    except iam.exceptions.NoSuchEntityException:
        pass
    return member


def attack_member(
    endpoint_url: str, member: Member, now: datetime | None = None
) -> CrossAccountAttackReport:
    """The member's instance credentials stolen and used from the threat list: discovery,
    then a backdoor user with a key; the records delivered to the organisation trail."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(minutes=20)
    stolen = _steal(endpoint_url, member)
    identity = assumed_role_identity(
        account_id=member.account_id,
        role_name=member.role_name,
        role_id=member.role_id,
        session_name=member.instance_id,
        access_key_id=stolen["AccessKeyId"],
        issued_at=start - STOLEN_SESSION_AGE,
        ec2_role_delivery=True,
    )
    recorder = TrailRecorder(
        account_id=member.account_id, bucket=ORG_TRAIL_BUCKET, organization_id=ORGANIZATION_ID
    )
    session = boto3.Session(
        aws_access_key_id=stolen["AccessKeyId"],
        aws_secret_access_key=stolen["SecretAccessKey"],
        aws_session_token=stolen["Token"],
        region_name=REGION,
    )
    attacker = Caller(
        recorder, Actor(identity, THREAT_IP, ATTACKER_AGENT), session, endpoint_url, Clock(start)
    )
    attacker("sts", "GetCallerIdentity")
    attacker("iam", "ListUsers")
    attacker("iam", "CreateUser", UserName=BACKDOOR_USER)
    backdoor_key = attacker("iam", "CreateAccessKey", UserName=BACKDOOR_USER)["AccessKey"]
    calls = [r for r in recorder.records if r["sourceIPAddress"] == THREAT_IP]
    times = sorted(datetime.fromisoformat(r["eventTime"].replace("Z", "+00:00")) for r in calls)
    delivered = len(recorder.records)
    files = recorder.deliver(client(admin_session(), "s3", endpoint_url))
    finding = instance_role_finding(
        account_id=member.account_id,
        region=REGION,
        access_key_id=stolen["AccessKeyId"],
        principal_id=f"{member.role_id}:{member.instance_id}",
        role_name=member.role_name,
        instance_id=member.instance_id,
        instance_profile_arn=member.profile_arn,
        instance_profile_id=member.profile_id,
        remote_ip=THREAT_IP,
        api="GetCallerIdentity",
        service_name="sts.amazonaws.com",
        user_agent=ATTACKER_AGENT,
        first_seen=times[0],
        last_seen=times[-1],
        count=len(calls),
        finding_id=f"lab-member-{member.account_id}",
    )
    return CrossAccountAttackReport(
        account_id=member.account_id,
        account_name=member.name,
        role_name=member.role_name,
        instance_id=member.instance_id,
        stolen_access_key_id=stolen["AccessKeyId"],
        backdoor_user=BACKDOOR_USER,
        backdoor_access_key_id=backdoor_key["AccessKeyId"],
        started_at=start,
        finished_at=times[-1],
        log_files=files,
        records_delivered=delivered,
        records_not_logged=recorder.dropped,
        finding=finding,
    )


def run_cross_account_attack(endpoint_url: str, world: LabWorld) -> CrossAccountAttackReport:
    """The cross-account scenario's attack: the organisation seeded (if not yet), then
    web-prod's instance credentials stolen and used."""
    members = seed_organization(endpoint_url)
    return attack_member(endpoint_url, members[SCENARIO_ACCOUNT])


def _steal(endpoint_url: str, member: Member) -> dict[str, str]:
    """The instance's role credentials, read over SSM in the member account."""
    ssm = in_account(member.account_id, "ssm", endpoint_url)
    return steal_instance_credentials(endpoint_url, member.as_world(), ssm=ssm)


def iam_state(endpoint_url: str, account_id: str) -> dict[str, Any]:
    """An account's users (with their keys' status) and roles (with their inline policies),
    to show that a case elsewhere changed nothing here."""
    iam = in_account(account_id, "iam", endpoint_url)
    users = {}
    for user in iam.list_users()["Users"]:
        keys = iam.list_access_keys(UserName=user["UserName"])["AccessKeyMetadata"]
        users[user["UserName"]] = sorted((k["AccessKeyId"], k["Status"]) for k in keys)
    roles = {}
    for role in iam.list_roles()["Roles"]:
        names = iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
        roles[role["RoleName"]] = {
            name: iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
            for name in names
        }
    return {"users": users, "roles": roles}


class MemberReturnReport(BaseModel):
    """The cross-account attacker's return during the watch; it holds no secret."""

    account_id: str
    stolen_access_key_id: str
    revocation_deleted: bool  # the backdoor user's key deleted the role's revocation policy
    attempts: int
    denied: int
    denied_by_quarantine: int
    log_files: list[str]


def attacker_returns_to_member(
    endpoint_url: str, attack: CrossAccountAttackReport, now: datetime | None = None
) -> MemberReturnReport:
    """The attacker comes back to the member account: the backdoor user's key (which the
    case has not yet reached: eradication follows the watch) deletes the role's
    AWSRevokeOlderSessions policy, then the stolen session tries again. Each call is
    refused as AWS would: the key inactive or gone, the revocation policy cutting the
    session off, or the organisation's quarantine denying the principal. The keys' secrets
    are the attacker's, not the lab's: the lab makes the deletion itself and writes every
    call to the organisation trail as the attacker's."""
    # CloudTrail writes whole seconds: the next one, so no call falls before containment.
    now = now or datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    account = attack.account_id
    iam = in_account(account, "iam", endpoint_url)
    recorder = TrailRecorder(
        account_id=account, bucket=ORG_TRAIL_BUCKET, organization_id=ORGANIZATION_ID
    )
    clock = Clock(now, timedelta(seconds=1))
    issued_at = attack.started_at - STOLEN_SESSION_AGE
    backdoor_arn = f"arn:aws:iam::{account}:user/{attack.backdoor_user}"
    try:
        backdoor = iam.get_user(UserName=attack.backdoor_user)["User"]
        keys = iam.list_access_keys(UserName=attack.backdoor_user)["AccessKeyMetadata"]
    except iam.exceptions.NoSuchEntityException:
        backdoor, keys = {"UserId": "AIDAGONE"}, []
    key_works = any(
        k["AccessKeyId"] == attack.backdoor_access_key_id and k["Status"] == "Active" for k in keys
    )
    cut_off = _revocation_cutoff(iam, attack.role_name)
    deleted = False
    if cut_off is not None:
        fenced = quarantined(endpoint_url, account, backdoor_arn, now)
        refused = not key_works or fenced
        if not refused:
            iam.delete_role_policy(RoleName=attack.role_name, PolicyName=REVOKE_SESSIONS_POLICY)
            deleted = True
            cut_off = None
        actor = Actor(
            iam_user_identity(
                account_id=account,
                user_name=attack.backdoor_user,
                user_id=str(backdoor["UserId"]),
                access_key_id=attack.backdoor_access_key_id,
            ),
            THREAT_IP,
            ATTACKER_AGENT,
        )
        request = {"roleName": attack.role_name, "policyName": REVOKE_SESSIONS_POLICY}
        by = (
            "with an explicit deny in a service control policy"
            if fenced
            else "with an inactive or deleted key"
            if not key_works
            else None
        )
        recorder.attempt(actor, "iam", "DeleteRolePolicy", clock.next(), by, request, REGION)
    identity = assumed_role_identity(
        account_id=account,
        role_name=attack.role_name,
        role_id=str(iam.get_role(RoleName=attack.role_name)["Role"]["RoleId"]),
        session_name=attack.instance_id,
        access_key_id=attack.stolen_access_key_id,
        issued_at=issued_at,
        ec2_role_delivery=True,
    )
    role_arn = f"arn:aws:iam::{account}:role/{attack.role_name}"
    by_quarantine = quarantined(endpoint_url, account, role_arn, issued_at)
    revoked = cut_off is not None and issued_at < cut_off
    denied = blocked = 0
    for service, operation in RETURN_CALLS:
        # GetCallerIdentity needs no permission: AWS answers it whatever denies the rest.
        refused = (revoked or by_quarantine) and (service, operation) != (
            "sts",
            "GetCallerIdentity",
        )
        denied += refused
        blocked += refused and by_quarantine and not revoked
        by = (
            None
            if not refused
            else "with an explicit deny in an identity-based policy"
            if revoked
            else "with an explicit deny in a service control policy"
        )
        actor = Actor(identity, THREAT_IP, ATTACKER_AGENT)
        recorder.attempt(actor, service, operation, clock.next(), by, region=REGION)
    files = recorder.deliver(client(admin_session(), "s3", endpoint_url))
    return MemberReturnReport(
        account_id=account,
        stolen_access_key_id=attack.stolen_access_key_id,
        revocation_deleted=deleted,
        attempts=len(RETURN_CALLS),
        denied=denied,
        denied_by_quarantine=blocked,
        log_files=files,
    )


def _revocation_cutoff(iam: Any, role_name: str) -> datetime | None:
    try:
        document = iam.get_role_policy(RoleName=role_name, PolicyName=REVOKE_SESSIONS_POLICY)[
            "PolicyDocument"
        ]
    except iam.exceptions.NoSuchEntityException:
        return None
    if isinstance(document, str):
        document = json.loads(unquote(document))
    return policy_cutoff(document)
