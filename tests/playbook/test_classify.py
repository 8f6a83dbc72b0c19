"""Classification of a credential's CloudTrail records, and the removal plan, on records
written by the lab's CloudTrail writer with known answers."""

from datetime import UTC, datetime, timedelta
from typing import Any

from lab.cloudtrail import Actor, TrailRecorder, assumed_role_identity, iam_user_identity
from playbook.classify import ChangeKind, Group, ResourceKind, changes_by_others, classify, group_of
from playbook.plan import removal_plan

ACCOUNT = "123456789012"
STOLEN = "ASIASTOLENSESSION001"
BACKDOOR_KEY = "AKIABACKDOORKEY00001"
T0 = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)


def _recorder() -> tuple[TrailRecorder, Any]:
    recorder = TrailRecorder(account_id=ACCOUNT, bucket="trail")
    actor = Actor(
        assumed_role_identity(
            account_id=ACCOUNT,
            role_name="web-app-role",
            role_id="AROAEXAMPLE",
            session_name="i-0abc",
            access_key_id=STOLEN,
            issued_at=T0 - timedelta(hours=1),
            ec2_role_delivery=True,
        ),
        "198.51.100.23",
        "aws-cli/2.15.30",
    )
    minute = iter(range(1000))

    def call(service, operation, request=None, response=None, error=None, who=actor):
        recorder.record(
            who,
            service=service,
            operation=operation,
            region="us-east-1",
            at=T0 + timedelta(minutes=next(minute)),
            request=request,
            response=response,
            error_code=error,
        )

    return recorder, call


def _attack_records() -> list[dict[str, Any]]:
    recorder, call = _recorder()
    call("sts", "GetCallerIdentity", response={"Account": ACCOUNT})
    call("iam", "ListUsers", response={"Users": []})
    call("secretsmanager", "GetSecretValue", {"SecretId": "db"}, error="AccessDenied")
    call("iam", "CreateUser", {"UserName": "backup-svc"}, {"User": {"UserName": "backup-svc"}})
    call(
        "iam",
        "AttachUserPolicy",
        {"UserName": "backup-svc", "PolicyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
        {},
    )
    call(
        "iam",
        "CreateAccessKey",
        {"UserName": "backup-svc"},
        {
            "AccessKey": {
                "UserName": "backup-svc",
                "AccessKeyId": BACKDOOR_KEY,
                "SecretAccessKey": "never-kept",
                "Status": "Active",
            }
        },
    )
    call("iam", "CreateLoginProfile", {"UserName": "backup-svc", "Password": "hunter2!"}, {})
    call("iam", "CreateRole", {"RoleName": "ops-support-role"}, {"Role": {}})
    call(
        "iam",
        "AttachRolePolicy",
        {
            "RoleName": "ops-support-role",
            "PolicyArn": "arn:aws:iam::aws:policy/AdministratorAccess",
        },
        {},
    )
    call("iam", "UpdateAssumeRolePolicy", {"RoleName": "audit-readonly"}, {})
    call(
        "lambda",
        "CreateFunction",
        {"FunctionName": "log-rotate", "Code": {"ZipFile": b"PK"}},
        {"FunctionName": "log-rotate"},
    )
    call("lambda", "AddPermission", {"FunctionName": "log-rotate", "StatementId": "public"}, {})
    call(
        "ec2",
        "RunInstances",
        {"ImageId": "ami-1"},
        {"Instances": [{"InstanceId": "i-0miner1"}, {"InstanceId": "i-0miner2"}]},
    )
    call(
        "sts",
        "GetFederationToken",
        {"Name": "ops"},
        {
            "Credentials": {"AccessKeyId": "ASIAFEDERATED0000001", "SessionToken": "t"},
            "FederatedUser": {"Arn": f"arn:aws:sts::{ACCOUNT}:federated-user/ops"},
        },
    )
    call("s3", "GetObject", {"BucketName": "acme", "Key": "orders.csv"})
    call("cloudtrail", "StopLogging", {"Name": "management-events"}, {})
    return recorder.records


def test_calls_fall_into_the_playbooks_groups():
    report = classify(_attack_records())
    assert report.counts == {
        Group.IDENTITY_AND_PERSISTENCE: 8,
        Group.RESOURCE_CREATION: 3,
        Group.DATA_ACCESS: 2,
        Group.COVERING_TRACKS: 1,
        Group.OTHER: 2,
    }
    assert report.failed_calls == 1
    assert report.examples[Group.COVERING_TRACKS] == ["StopLogging"]
    assert group_of("CreateDBInstance") is Group.RESOURCE_CREATION
    assert group_of("CreateSomethingNew") is Group.RESOURCE_CREATION
    assert group_of("DescribeInstances") is Group.OTHER


def test_what_the_attacker_made_changed_and_minted():
    report = classify(_attack_records())
    made = {(r.kind, r.name, r.owner) for r in report.resources}
    assert made == {
        (ResourceKind.USER, "backup-svc", None),
        (
            ResourceKind.USER_POLICY_ATTACHMENT,
            "arn:aws:iam::aws:policy/AdministratorAccess",
            "backup-svc",
        ),
        (ResourceKind.ACCESS_KEY, BACKDOOR_KEY, "backup-svc"),
        (ResourceKind.LOGIN_PROFILE, "backup-svc", "backup-svc"),
        (ResourceKind.ROLE, "ops-support-role", None),
        (
            ResourceKind.ROLE_POLICY_ATTACHMENT,
            "arn:aws:iam::aws:policy/AdministratorAccess",
            "ops-support-role",
        ),
        (ResourceKind.FUNCTION, "log-rotate", None),
        (ResourceKind.FUNCTION_PERMISSION, "public", "log-rotate"),
        (ResourceKind.INSTANCE, "i-0miner1", None),
        (ResourceKind.INSTANCE, "i-0miner2", None),
    }
    assert all(r.made_by == STOLEN for r in report.resources)
    assert [(c.kind, c.target) for c in report.changes] == [
        (ChangeKind.TRUST_POLICY, "audit-readonly"),
        (ChangeKind.LOGGING_STOPPED, "management-events"),
    ]
    assert [(c.access_key_id, c.kind, c.principal) for c in report.new_credentials] == [
        (BACKDOOR_KEY, "access_key", "backup-svc"),
        ("ASIAFEDERATED0000001", "federation_token", f"arn:aws:sts::{ACCOUNT}:federated-user/ops"),
    ]


def test_denied_calls_make_nothing():
    recorder, call = _recorder()
    call("iam", "CreateUser", {"UserName": "denied-user"}, None, error="AccessDenied")
    report = classify(recorder.records)
    assert report.resources == [] and report.failed_calls == 1
    assert report.counts[Group.IDENTITY_AND_PERSISTENCE] == 1


def test_the_removal_plan_follows_dependency_order_and_skips_protected():
    report = classify(_attack_records())
    plan = removal_plan(report.resources, protected_names=frozenset({"ops-support-role"}))
    operations = [step.operation for step in plan]
    assert operations == [
        "remove_function_permission",
        "delete_function",
        "terminate_instance",
        "terminate_instance",
        "delete_access_key",
        "delete_login_profile",
        "detach_user_policy",
        "delete_user",
        "detach_role_policy",
        "delete_role",
    ]
    assert [step.order for step in plan] == list(range(1, len(plan) + 1))
    skipped = [step.describe() for step in plan if step.skipped_reason]
    assert skipped == [
        "detach_role_policy arn:aws:iam::aws:policy/AdministratorAccess of ops-support-role "
        "(skipped: protected)",
        "delete_role ops-support-role (skipped: protected)",
    ]


def test_policy_changes_to_what_the_attacker_did_not_make_are_changes_to_restore():
    recorder, call = _recorder()
    policy = f"arn:aws:iam::{ACCOUNT}:policy/deploy"
    call("iam", "DeleteRolePolicy", {"RoleName": "app", "PolicyName": "guard"}, {})
    call("iam", "DetachUserPolicy", {"UserName": "bob", "PolicyArn": policy}, {})
    call(
        "iam",
        "CreatePolicyVersion",
        {"PolicyArn": policy, "SetAsDefault": True},
        {"PolicyVersion": {"VersionId": "v3"}},
    )
    call("iam", "SetDefaultPolicyVersion", {"PolicyArn": policy, "VersionId": "v3"}, {})
    call(
        "iam",
        "CreatePolicy",
        {"PolicyName": "escalate"},
        {"Policy": {"Arn": f"arn:aws:iam::{ACCOUNT}:policy/escalate"}},
    )

    report = classify(recorder.records)

    assert [(c.kind, c.target, c.detail) for c in report.changes] == [
        (ChangeKind.ROLE_POLICY, "app", "guard"),
        (ChangeKind.USER_POLICY_DETACHED, "bob", policy),
        (ChangeKind.POLICY_VERSION, policy, "v3"),
        (ChangeKind.POLICY_VERSION, policy, ""),
    ]
    assert [(r.kind, r.name) for r in report.resources] == [
        (ResourceKind.MANAGED_POLICY, f"arn:aws:iam::{ACCOUNT}:policy/escalate")
    ]
    assert report.counts[Group.IDENTITY_AND_PERSISTENCE] == 5


def test_failed_calls_are_named_with_their_error_and_counted():
    recorder, call = _recorder()
    call("secretsmanager", "GetSecretValue", {"SecretId": "db"}, error="AccessDenied")
    call("secretsmanager", "GetSecretValue", {"SecretId": "api"}, error="AccessDenied")
    call("iam", "DeleteUser", {"UserName": "ghost"}, error="NoSuchEntity")
    report = classify(recorder.records)
    assert [(f.api, f.error_code, f.calls) for f in report.failures] == [
        ("secretsmanager.amazonaws.com:GetSecretValue", "AccessDenied", 2),
        ("iam.amazonaws.com:DeleteUser", "NoSuchEntity", 1),
    ]
    assert report.failures[0].first_at == recorder.records[0]["eventTime"]
    assert report.failed_calls == 3 and report.data_reads == []


def test_data_access_names_what_was_read_not_only_the_api():
    recorder, call = _recorder()
    call("ssm", "GetParameter", {"Name": "/orders/db-host", "WithDecryption": True})
    call("ssm", "GetParameter", {"Name": "/orders/db-host"})
    call("ssm", "GetParameters", {"Names": ["/a", "/b"]})
    call("secretsmanager", "GetSecretValue", {"SecretId": "prod/db"})
    call("s3", "GetObject", {"BucketName": "acme", "Key": "orders.csv"})
    call("kms", "GenerateDataKey", {"KeyId": "alias/app"})
    report = classify(recorder.records)
    reads = [(r.api.split(":")[1], r.target, r.calls) for r in report.data_reads]
    assert reads == [
        ("GetParameter", "/orders/db-host", 2),
        ("GetParameters", "/a", 1),
        ("GetParameters", "/b", 1),
        ("GetSecretValue", "prod/db", 1),
        ("GetObject", "s3://acme/orders.csv", 1),
        ("GenerateDataKey", "alias/app", 1),
    ]


def test_a_decrypt_names_its_key_from_the_records_resources():
    record = {
        "eventTime": "2026-11-22T07:00:00Z",
        "eventSource": "kms.amazonaws.com",
        "eventName": "Decrypt",
        "requestParameters": {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
        "resources": [{"ARN": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/k-1", "type": "AWS::KMS::Key"}],
        "userIdentity": {"accessKeyId": STOLEN},
    }
    assert [r.target for r in classify([record]).data_reads] == [
        f"arn:aws:kms:us-east-1:{ACCOUNT}:key/k-1"
    ]


def test_changes_by_others_are_those_no_attacker_key_made():
    recorder, call = _recorder()
    admin = Actor(
        iam_user_identity(
            account_id=ACCOUNT,
            user_name="alice-admin",
            user_id="AIDAALICE",
            access_key_id="AKIAALICE",
        ),
        "203.0.113.10",
        "console",
    )
    call("iam", "CreateUser", {"UserName": "new-hire"}, {"User": {}}, who=admin)
    call("iam", "ListUsers", response={"Users": []}, who=admin)  # a read: not a change
    call("iam", "DeleteUser", {"UserName": "x"}, error="AccessDenied", who=admin)  # failed
    call("iam", "CreateUser", {"UserName": "backup-svc"}, {"User": {}})  # the attacker's
    call(
        "ec2",
        "RunInstances",
        {"ImageId": "ami-1"},
        {"Instances": [{"InstanceId": "i-0build"}]},
        who=admin,
    )
    others = changes_by_others(recorder.records, frozenset({STOLEN}))
    assert [(c.event_name, c.target, c.who, c.access_key_id, c.source_ip) for c in others] == [
        (
            "CreateUser",
            "new-hire",
            f"arn:aws:iam::{ACCOUNT}:user/alice-admin",
            "AKIAALICE",
            "203.0.113.10",
        ),
        (
            "RunInstances",
            "i-0build",
            f"arn:aws:iam::{ACCOUNT}:user/alice-admin",
            "AKIAALICE",
            "203.0.113.10",
        ),
    ]
