"""The lab's user-key scenario run after the EC2-role one in one lab AWS, as `starter.py
lab user-key` does on a running stack: what the attack leaves in AWS and in CloudTrail,
the three rounds of eradication it needs, GuardDuty's finding, and no secret kept."""

import gzip
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any

import boto3
import pytest

import lab.attack
import lab.user_key_attack
from config.names import REVOKE_SESSIONS_POLICY_NAME, case_workflow_id
from lab.attack import CORPORATE_IP, OUTSIDE_ACCOUNT
from lab.scenario import (
    ATTACK_FILE,
    CASE_FILE,
    USER_KEY_ATTACK_FILE,
    USER_KEY_CASE_FILE,
    WORLD_FILE,
    LabCase,
    attacker_returns_to,
    run_scenario,
)
from lab.standing import standing
from lab.user_key_attack import CI_IP, TOR_EXIT_IP, UserKeyAttackReport
from lab.world import BUILD_BOT_POLICY, BUILD_BOT_POLICY_NAME, LabWorld, client
from models.finding import GuardDutyEvent, finding_from_guardduty
from playbook.classify import ChangeKind, ResourceKind, classify
from stack.processes import free_port
from tests.lab.lab_server import start_lab_server

TOKEN = "lab-test-token-0123456789"
HEADER = "x-quench-token"
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"


class _Webhook:
    """Quench's webhook as the lab sees it: takes a finding, answers with its case id."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get(HEADER) != TOKEN:
                    self.send_response(401)
                    self.end_headers()
                    return
                events.append(body)
                keys = body["detail"]["resource"]["accessKeyDetails"]
                answer = json.dumps(
                    {
                        "outcome": "new_case",
                        "case_id": case_workflow_id(body["account"], keys["accessKeyId"]),
                    }
                ).encode()
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class _Run:
    url: str
    state_dir: Path
    webhook: _Webhook
    ec2_case: LabCase[lab.attack.AttackReport]
    case: LabCase[UserKeyAttackReport]
    # Every secret the attacks held in memory: secret keys, and the stolen session token.
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def attack(self) -> UserKeyAttackReport:
        return self.case.attack

    def client(self, service: str) -> Any:
        observer = boto3.Session(
            aws_access_key_id="AKIATESTOBSERVER0001",
            aws_secret_access_key="observer",
            region_name="us-east-1",
        )
        return client(observer, service, self.url)

    def delivered(self, log_files: list[str]) -> list[dict[str, Any]]:
        s3 = self.client("s3")
        records = []
        for key in log_files:
            body = s3.get_object(Bucket=self.case.world.cloudtrail_bucket, Key=key)["Body"].read()
            records += json.loads(gzip.decompress(body))["Records"]
        return records

    def records_of(self, access_key_id: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.delivered(self.attack.log_files)
            if r["userIdentity"].get("accessKeyId") == access_key_id
        ]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("lab-scenarios")
    port = free_port()
    server = start_lab_server(state_dir, port)
    webhook = _Webhook()
    url = f"http://127.0.0.1:{port}"
    secrets: dict[str, str] = {}
    original_key_session = lab.user_key_attack.key_session
    original_steal = lab.attack.steal_instance_credentials

    def spy_key_session(access_key: dict[str, Any]) -> boto3.Session:
        secrets[access_key["AccessKeyId"]] = access_key["SecretAccessKey"]
        return original_key_session(access_key)

    def spy_steal(endpoint_url: str, world: LabWorld) -> dict[str, str]:
        stolen = original_steal(endpoint_url, world)
        secrets[stolen["AccessKeyId"]] = stolen["SecretAccessKey"]
        secrets[stolen["AccessKeyId"] + "/token"] = stolen["Token"]
        return stolen

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(lab.user_key_attack, "key_session", spy_key_session)
            patch.setattr(lab.attack, "key_session", spy_key_session)
            patch.setattr(lab.attack, "steal_instance_credentials", spy_steal)
            ec2_case = run_scenario(url, webhook.url, TOKEN, HEADER, state_dir)
            case = run_scenario(url, webhook.url, TOKEN, HEADER, state_dir, "user-key")
        yield _Run(url, state_dir, webhook, ec2_case, case, secrets)
    finally:
        webhook.stop()
        server.stop()


def test_the_attack_leaves_three_generations_in_aws(run):
    attack, world = run.attack, run.case.world
    iam, ec2 = run.client("iam"), run.client("ec2")
    users = {u["UserName"] for u in iam.list_users()["Users"]}
    assert {attack.second_generation_user, attack.third_generation_user} <= users
    assert {"cloud-sync", "metrics-agent"} == {
        attack.second_generation_user,
        attack.third_generation_user,
    }
    keys = {
        user: [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
        for user in ("build-bot", "cloud-sync", "metrics-agent")
    }
    assert keys == {
        "build-bot": [attack.leaked_access_key_id],
        "cloud-sync": [attack.second_generation_access_key_id],
        "metrics-agent": [attack.third_generation_access_key_id],
    }
    assert len(set(attack.access_key_chain)) == 3
    assert all(k.startswith("AKIA") for k in attack.access_key_chain)
    attached = iam.list_attached_user_policies(UserName="cloud-sync")["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["AdministratorAccess"]
    assert iam.list_user_policies(UserName="metrics-agent")["PolicyNames"] == ["metrics"]
    # build-bot is the world's legitimate CI user, with its own policy.
    assert world.build_bot_user in world.legitimate_users
    assert (
        iam.get_user_policy(UserName="build-bot", PolicyName=BUILD_BOT_POLICY_NAME)[
            "PolicyDocument"
        ]
        == BUILD_BOT_POLICY
    )

    instance = ec2.describe_instances(InstanceIds=[attack.attacker_instance_id])["Reservations"][0][
        "Instances"
    ][0]
    assert instance["InstanceType"] == "t3.micro"
    assert instance["State"]["Name"] in {"pending", "running"}
    assert {"Key": "Name", "Value": "metrics-collector"} in instance["Tags"]
    assert attack.attacker_instance_id != world.instance_id

    trust = iam.get_role(RoleName="audit-readonly")["Role"]["AssumeRolePolicyDocument"]
    principals = [s["Principal"]["AWS"] for s in trust["Statement"]]
    assert f"arn:aws:iam::{OUTSIDE_ACCOUNT}:root" in principals
    # The administrator's statement, with its MFA condition, is still there beside it.
    assert attack.prior_trust_policy["Statement"][0] in trust["Statement"]

    trail = run.client("cloudtrail").get_trail_status(Name=world.trail_name)
    assert trail["IsLogging"] is False

    # The legitimate work of the same window is in place.
    assert "new-hire-erin" in users
    erin = iam.list_attached_user_policies(UserName="new-hire-erin")["AttachedPolicies"]
    assert [p["PolicyName"] for p in erin] == ["ReadOnlyAccess"]
    function = run.client("lambda").get_function(FunctionName="orders-api")["Configuration"]
    assert function["CodeSha256"] == attack.legitimate_function_code_sha256


def test_eradication_needs_exactly_three_rounds(run):
    attack = run.attack
    chain = attack.access_key_chain
    for key, next_key in pairwise(chain):
        report = classify(run.records_of(key))
        assert [c.access_key_id for c in report.new_credentials] == [next_key], key
        assert [r.name for r in report.resources if r.kind is ResourceKind.ACCESS_KEY] == [next_key]
    last = classify(run.records_of(chain[-1]))
    assert last.new_credentials == []

    first = classify(run.records_of(chain[0]))
    made = {(r.kind, r.name) for r in first.resources}
    assert (ResourceKind.USER, "cloud-sync") in made
    assert (ResourceKind.USER_POLICY_ATTACHMENT, "arn:aws:iam::aws:policy/AdministratorAccess") in (
        made
    )
    # The role is the account's own: a change to restore, not a resource to remove.
    assert [(c.kind, c.target) for c in first.changes] == [
        (ChangeKind.TRUST_POLICY, "audit-readonly")
    ]
    assert (ResourceKind.ROLE, "audit-readonly") not in made
    assert first.failed_calls == 1  # the refused ListSecrets
    second = classify(run.records_of(chain[1]))
    assert {(r.kind, r.name) for r in second.resources} == {
        (ResourceKind.USER, "metrics-agent"),
        (ResourceKind.ACCESS_KEY, chain[2]),
        (ResourceKind.USER_INLINE_POLICY, "metrics"),
    }
    assert {(r.kind, r.name) for r in last.resources} == {
        (ResourceKind.INSTANCE, attack.attacker_instance_id)
    }
    assert [(c.kind, c.target) for c in last.changes] == [
        (ChangeKind.LOGGING_STOPPED, run.case.world.trail_name)
    ]


def test_each_key_is_used_by_its_own_user_and_the_last_call_goes_unlogged(run):
    attack = run.attack
    users = ["build-bot", "cloud-sync", "metrics-agent"]
    for key, user in zip(attack.access_key_chain, users, strict=True):
        records = run.records_of(key)
        assert {r["userIdentity"]["userName"] for r in records} == {user}
        assert {r["userIdentity"]["type"] for r in records} == {"IAMUser"}
    tor = {
        r["eventName"]
        for key in attack.access_key_chain
        for r in run.records_of(key)
        if r["sourceIPAddress"] == TOR_EXIT_IP
    }
    assert {"GetCallerIdentity", "CreateUser", "RunInstances", "StopLogging"} <= tor
    last = max(
        (r for key in attack.access_key_chain for r in run.records_of(key)),
        key=lambda r: r["eventTime"],
    )
    assert last["eventName"] == "StopLogging"
    assert "ListBuckets" not in {r["eventName"] for r in run.records_of(attack.access_key_chain[2])}
    assert attack.records_not_logged == 1
    assert attack.records_delivered == len(run.delivered(attack.log_files))


def test_build_bots_own_calls_are_read_only_and_hours_before(run):
    attack = run.attack
    records = run.records_of(attack.leaked_access_key_id)
    ci = [r for r in records if r["sourceIPAddress"] == CI_IP]
    tor = [r for r in records if r["sourceIPAddress"] == TOR_EXIT_IP]
    assert ci and tor and len(ci) + len(tor) == len(records)
    assert all(r["readOnly"] for r in ci)
    first_tor = min(_time(r) for r in tor)
    assert max(_time(r) for r in ci) < first_tor - timedelta(hours=2)
    assert classify(ci).resources == [] and classify(ci).changes == []


def test_legitimate_changes_are_recorded_as_their_principals(run):
    records = run.delivered(run.attack.log_files)
    by_event = {(r["eventName"], r["userIdentity"]["userName"]) for r in records}
    assert ("CreateUser", "alice-admin") in by_event
    assert ("AttachUserPolicy", "alice-admin") in by_event
    assert ("UpdateFunctionCode20150331v2", "ci-deployer") in by_event
    deploy = next(r for r in records if r["eventName"] == "UpdateFunctionCode20150331v2")
    ci_deployer_keys = run.client("iam").list_access_keys(UserName="ci-deployer")
    assert (
        deploy["userIdentity"]["accessKeyId"]
        == (ci_deployer_keys["AccessKeyMetadata"][0]["AccessKeyId"])
    )
    assert deploy["requestParameters"]["functionName"] == "orders-api"
    assert deploy["requestParameters"]["zipFile"] == HIDDEN


def test_the_administrators_prior_trust_change_is_logged_two_days_earlier(run):
    attack, world = run.attack, run.case.world
    assert attack.prior_trust_changed_at == attack.started_at - timedelta(days=2)
    day = attack.prior_trust_changed_at.astimezone(UTC)
    prefix = f"AWSLogs/{world.account_id}/CloudTrail/us-east-1/{day:%Y/%m/%d}/"
    earlier = [f for f in attack.log_files if f.startswith(prefix)]
    assert earlier, attack.log_files
    records = run.delivered(earlier)
    updates = [r for r in records if r["eventName"] == "UpdateAssumeRolePolicy"]
    assert len(updates) == 1
    update = updates[0]
    assert update["userIdentity"]["userName"] == "alice-admin"
    assert update["sourceIPAddress"] == CORPORATE_IP
    assert update["requestParameters"]["roleName"] == "audit-readonly"
    assert json.loads(update["requestParameters"]["policyDocument"]) == attack.prior_trust_policy
    assert OUTSIDE_ACCOUNT not in update["requestParameters"]["policyDocument"]
    # The attacker's change comes later, in a file of the attack's own day.
    later = [
        r
        for r in run.records_of(attack.leaked_access_key_id)
        if r["eventName"] == "UpdateAssumeRolePolicy"
    ]
    assert len(later) == 1 and OUTSIDE_ACCOUNT in later[0]["requestParameters"]["policyDocument"]
    assert _time(later[0]) - _time(update) > timedelta(days=2)


def test_the_finding_is_a_tor_finding_on_the_users_key(run):
    attack, world = run.attack, run.case.world
    event = run.webhook.events[-1]
    assert GuardDutyEvent.model_validate(event).detail == attack.finding
    finding = finding_from_guardduty(attack.finding)
    assert finding.type == "UnauthorizedAccess:IAMUser/TorIPCaller"
    assert finding.access_key.access_key_id == attack.leaked_access_key_id
    assert finding.access_key.user_name == "build-bot"
    assert finding.access_key.user_type == "IAMUser"
    assert finding.access_key.principal_id == world.build_bot_user_id == attack.user_id
    iam_user = run.client("iam").get_user(UserName="build-bot")["User"]
    assert finding.access_key.principal_id == iam_user["UserId"]
    assert finding.instance_id is None and finding.instance_profile_arn is None
    assert finding.api_call is not None and finding.api_call.remote_ip is not None
    assert finding.api_call.remote_ip.ip_address == TOR_EXIT_IP
    assert finding.api_call.api == "GetCallerIdentity"
    tor_calls = [
        r
        for r in run.records_of(attack.leaked_access_key_id)
        if r["sourceIPAddress"] == TOR_EXIT_IP
    ]
    assert finding.count == len(tor_calls)
    assert finding.first_seen == min(_time(r) for r in tor_calls)
    assert finding.last_seen == max(_time(r) for r in tor_calls)
    assert run.case.case_id == case_workflow_id(world.account_id, attack.leaked_access_key_id)


def test_no_secret_is_delivered_or_saved(run):
    user_key_secrets = [run.secrets[k] for k in run.attack.access_key_chain if k in run.secrets]
    # The spy saw each attacker key's secret, so the search below means something.
    assert len(user_key_secrets) == 3 and all(len(s) >= 40 for s in user_key_secrets)
    ec2_secrets = [
        v for k, v in run.secrets.items() if k.split("/")[0] not in run.attack.access_key_chain
    ]
    assert len(ec2_secrets) == 3  # the stolen session's secret and token, the backdoor's key

    delivered = json.dumps(run.delivered(run.attack.log_files)) + json.dumps(
        run.delivered(run.ec2_case.attack.log_files)
    )
    created = [
        r["responseElements"]["accessKey"]
        for r in run.delivered(run.attack.log_files)
        if r["eventName"] == "CreateAccessKey"
    ]
    assert [k["secretAccessKey"] for k in created] == [HIDDEN, HIDDEN]
    for secret in user_key_secrets + ec2_secrets:
        assert secret not in delivered
    saved = {
        path.name: path.read_text(errors="replace")
        for path in run.state_dir.iterdir()
        if path.is_file()
    }
    assert {WORLD_FILE, USER_KEY_ATTACK_FILE, USER_KEY_CASE_FILE} <= set(saved)
    for name, text in saved.items():
        for secret in user_key_secrets:
            assert secret not in text, name
    for name in (WORLD_FILE, ATTACK_FILE, CASE_FILE, USER_KEY_ATTACK_FILE, USER_KEY_CASE_FILE):
        for secret in ec2_secrets:
            assert secret not in saved[name], name


def test_both_scenarios_share_the_world_and_resume_without_repeating(run):
    world = LabWorld.model_validate_json((run.state_dir / WORLD_FILE).read_text())
    assert world == run.case.world
    assert world.instance_id == run.ec2_case.world.instance_id
    assert world.build_bot_key_id == run.attack.leaked_access_key_id
    assert world.build_bot_user_id and "build-bot" in world.legitimate_users
    assert json.loads((run.state_dir / ATTACK_FILE).read_text())["scenario"] == "ec2-role"
    assert json.loads((run.state_dir / USER_KEY_ATTACK_FILE).read_text())["scenario"] == "user-key"
    assert run.ec2_case.case_id != run.case.case_id
    sent = len(run.webhook.events)
    assert sent == 2
    users_before = run.client("iam").list_users()["Users"]

    again = run_scenario(run.url, run.webhook.url, TOKEN, HEADER, run.state_dir, "user-key")
    ec2_again = run_scenario(run.url, run.webhook.url, TOKEN, HEADER, run.state_dir)
    assert again == run.case and isinstance(again.attack, UserKeyAttackReport)
    assert ec2_again == run.ec2_case and isinstance(ec2_again.attack, lab.attack.AttackReport)
    assert len(run.webhook.events) == sent
    assert run.client("iam").list_users()["Users"] == users_before


def test_what_still_stands_is_read_from_aws_not_from_the_attack_report(run):
    """What `up` says of a scenario run before: each fact as the lab's AWS has it now."""
    ec2, attack = run.ec2_case.attack, run.attack

    assert standing(run.url, run.ec2_case) == (
        f"stolen key {ec2.stolen_access_key_id}: sessions of web-app-role not revoked yet; "
        f"what the attacker made: user {ec2.backdoor_user}, user {ec2.second_generation_user}, "
        f"role {ec2.backdoor_role}, function {ec2.backdoor_function} still there; "
        "trail management-events not logging"
    )
    assert standing(run.url, run.case) == (
        f"leaked key {attack.leaked_access_key_id} of build-bot active; what the attacker "
        f"made: user {attack.second_generation_user}, user {attack.third_generation_user}, "
        f"instance {attack.attacker_instance_id} still there; {attack.trust_changed_role} "
        f"still trusts {OUTSIDE_ACCOUNT}"
    )

    # What a case does, done by hand: then the same facts read otherwise.
    # (The last test of this file cuts the role's sessions off and starts the trail.)
    iam = run.client("iam")
    run.client("lambda").delete_function(FunctionName=ec2.backdoor_function)
    iam.update_access_key(
        UserName="build-bot", AccessKeyId=attack.leaked_access_key_id, Status="Inactive"
    )
    iam.update_assume_role_policy(
        RoleName=attack.trust_changed_role, PolicyDocument=json.dumps(attack.prior_trust_policy)
    )
    run.client("ec2").terminate_instances(InstanceIds=[attack.attacker_instance_id])

    assert standing(run.url, run.ec2_case) == (
        f"stolen key {ec2.stolen_access_key_id}: sessions of web-app-role not revoked yet; "
        f"what the attacker made: user {ec2.backdoor_user}, user {ec2.second_generation_user}, "
        f"role {ec2.backdoor_role} still there; function {ec2.backdoor_function} removed; "
        "trail management-events not logging"
    )
    assert standing(run.url, run.case).startswith(
        f"leaked key {attack.leaked_access_key_id} of build-bot inactive; "
    )
    assert standing(run.url, run.case).endswith(
        f"still there; instance {attack.attacker_instance_id} removed; "
        f"{attack.trust_changed_role} no longer trusts {OUTSIDE_ACCOUNT}"
    )


def test_a_world_saved_before_build_bot_still_loads():
    saved = {
        "instance_id": "i-0abc",
        "instance_private_ip": "10.0.1.25",
        "role_id": "AROA1",
        "profile_arn": "arn:aws:iam::123456789012:instance-profile/web-app-profile",
        "profile_id": "AIPA1",
        "admin_user_id": "AIDA1",
        "admin_key_id": "AKIA1",
        "legitimate_users": ["alice-admin", "ci-deployer"],
        "legitimate_roles": ["web-app-role", "audit-readonly"],
        "protected_roles": ["break-glass-admin"],
    }
    world = LabWorld.model_validate_json(json.dumps(saved))
    assert (world.build_bot_user, world.build_bot_user_id, world.build_bot_key_id) == (
        "build-bot",
        "",
        "",
    )


def _time(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00"))


def test_the_ec2_attacker_returns_seen_only_while_logging_and_denied_only_once_cut_off(run):
    """Runs last: it starts the trail the attack stopped and cuts the role's sessions off."""
    world, stolen = run.ec2_case.world, run.ec2_case.attack.stolen_access_key_id
    # The trail is still off (the attack stopped it) and nothing is cut off: the calls
    # would work, and CloudTrail writes none of them.
    first = attacker_returns_to(run.url, run.state_dir)
    assert (first.attempts, first.denied, first.log_files) == (3, 0, [])

    run.client("cloudtrail").start_logging(Name=world.trail_name)
    cutoff = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    run.client("iam").put_role_policy(
        RoleName=world.role_name,
        PolicyName=REVOKE_SESSIONS_POLICY_NAME,
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": {
                    "Effect": "Deny",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff}},
                },
            }
        ),
    )
    second = attacker_returns_to(run.url, run.state_dir)
    # In one file, or two when the seconds straddle a five-minute delivery window.
    assert (second.attempts, second.denied) == (3, 2) and second.log_files
    records = run.delivered(second.log_files)
    assert [(r["eventName"], r.get("errorCode")) for r in records] == [
        ("GetCallerIdentity", None),
        ("ListUsers", "AccessDenied"),
        ("ListBuckets", "AccessDenied"),
    ]
    assert {r["userIdentity"]["accessKeyId"] for r in records} == {stolen}
    assert {r["sourceIPAddress"] for r in records} == {lab.attack.THREAT_IP}
    assert all(r["eventTime"] > cutoff for r in records)
    # What `up` says of the scenario now, read from the same AWS.
    now = standing(run.url, run.ec2_case)
    assert f"sessions of {world.role_name} revoked; " in now
    assert now.endswith(f"; trail {world.trail_name} logging")
