"""The seed's scenario with every real piece: the lab attacks, GuardDuty's finding reaches
the webhook, a human approves with the `temporal` CLI, and AWS ends up contained."""

import asyncio
import base64
import gzip
import json
import os
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients
from activities.ssm import SsmActivities
from config import names
from lab import world as lab_world
from lab.attack import CORPORATE_IP, THREAT_IP
from lab.aws_server import RECORDING_NAME, SCRUBBED
from lab.scenario import attacker_returns_to
from models.activities import ProbeInstanceCredentialsInput
from models.case import ActionStatus, Decision, Phase
from stack.binaries import temporal_cli
from tests.e2e.support import (
    approve_until_closed,
    aws,
    check_evidence_and_report,
    open_lab_case,
    run_starter,
    s3_text,
    session,
    wait_for_phase,
)
from tests.support import history_for_the_repo

pytestmark = pytest.mark.e2e
HISTORIES = Path(__file__).resolve().parents[1] / "histories"


def _recorded_ec2_actions(stack, instance_id):
    """The EC2 actions the lab's AWS received for the instance, in order (moto's recorder)."""
    actions = []
    for line in (stack.state_dir / RECORDING_NAME).read_text().splitlines():
        entry = json.loads(line)
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode(errors="replace")
        params = parse_qs(body)
        if params.get("InstanceId.1") == [instance_id]:
            actions.append(params.get("Action", ["?"])[0])
    return actions


async def _signal_through_web_ui(ui_url: str, workflow_id: str, name: str, payload: dict) -> None:
    """Send a signal the way the Web UI's "Send a Signal" does: its own HTTP API, with the
    CSRF cookie it hands out, and the input as plain JSON."""
    async with httpx.AsyncClient(base_url=ui_url, timeout=10) as ui:
        (await ui.get("/")).raise_for_status()
        data = base64.b64encode(json.dumps(payload).encode()).decode()
        encoding = base64.b64encode(b"json/plain").decode()
        response = await ui.post(
            f"/api/v1/namespaces/default/workflows/{workflow_id}/signal/{name}",
            json={
                "signalName": name,
                "input": {"payloads": [{"metadata": {"encoding": encoding}, "data": data}]},
            },
            headers={"X-CSRF-TOKEN": ui.cookies.get("_csrf") or ""},
        )
    assert response.status_code == 200, response.text


async def test_lab_case_is_contained_end_to_end(lab_stack):
    stack = lab_stack
    case, handle, status = await open_lab_case(stack, "ec2-role")
    world, attack = case.world, case.attack
    assert case.case_id == names.case_workflow_id(world.account_id, attack.stolen_access_key_id)
    action = status.pending_actions()[0]
    assert status.phase is Phase.AWAITING_APPROVAL
    # Nothing contained yet: the role has no revocation policy before the approval.
    iam = aws(stack, "iam")
    assert (
        names.REVOKE_SESSIONS_POLICY_NAME
        not in iam.list_role_policies(RoleName=world.role_name)["PolicyNames"]
    )

    await _signal_through_web_ui(
        stack.ui_url,
        case.case_id,
        names.SIGNAL_ADD_NOTE,
        {"author": "responder@example.com", "text": "paged the orders team"},
    )
    approval = json.dumps(
        {"action_id": action.id, "approver": "e2e@example.com", "reason": "threat-list IP"}
    )
    signal = await asyncio.create_subprocess_exec(
        str(temporal_cli()),
        "workflow",
        "signal",
        "--address",
        stack.temporal_address,
        "--workflow-id",
        case.case_id,
        "--name",
        names.SIGNAL_APPROVE,
        "--input",
        approval,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(signal.communicate(), 30)
    assert signal.returncode == 0, stderr.decode()
    # While the case watches, the attacker tries the stolen key again: cut off by the
    # containment (all but GetCallerIdentity, which needs no permission), and seen.
    await wait_for_phase(handle, Phase.WATCHING)
    returned = await asyncio.to_thread(attacker_returns_to, stack.aws_url, stack.state_dir)
    assert (returned.attempts, returned.denied) == (3, 2) and returned.log_files
    # After the watch, each eradication round waits for its own approval, given here with
    # Quench's command line.
    iam = aws(stack, "iam")
    assert attack.backdoor_user in {u["UserName"] for u in iam.list_users()["Users"]}
    approved = await approve_until_closed(stack, handle, case.case_id, ("eradicate-", "recover-"))
    # A decision sent to a closed case is refused, with the reason and exit status 1.
    refused = await run_starter(
        stack,
        "approve",
        case.case_id,
        approved[0],
        "--by",
        "e2e@example.com",
        "--reason",
        "again",
        expect_status=1,
    )
    assert "already completed" in refused
    eradications = [a for a in approved if a.startswith("eradicate-")]
    assert len(eradications) == 2
    async with asyncio.timeout(120):
        result = await handle.result()

    # The case: contained, the approval recorded, rotation verified.
    assert result.phase is Phase.CLOSED and result.outcome == "contained"
    assert [(a.action_id, a.approver, a.decision) for a in result.approvals] == [
        (action_id, "e2e@example.com", Decision.APPROVED) for action_id in [action.id, *approved]
    ]
    # Nothing to approve for recovery: the one change to undo, the trail the attacker
    # stopped, was started again by containment (below).
    assert [a.split("-")[0] for a in approved] == ["eradicate", "eradicate"]
    assert result.actions[0].status is ActionStatus.DONE
    assert [(n.author, n.text) for n in result.notes] == [
        ("responder@example.com", "paged the orders team")
    ]
    assert result.verified_access_key_id not in (None, attack.stolen_access_key_id)
    # The attacker had stopped the trail: containment started it again once the role's
    # sessions were revoked (its last step, naming the trail: the person approving waited
    # for the trails to be read), so the watch read the lab's CloudTrail, never blind,
    # until the (shortened) window was clean.
    assert result.actions[0].steps[0].startswith("Deny all sessions of role")
    assert result.actions[0].steps[-1].startswith(f"Start logging on trail {world.trail_name}:")
    assert world.trail_name in result.trails_restarted
    assert result.watch is not None and result.watch.verdict == "clean"
    assert result.watch.checks >= 2 and result.watch.blind_trails == []
    # The attacker's second try: two calls denied, and a GetCallerIdentity, which AWS
    # answers for any valid key: an attempt too, not a sign containment failed.
    assert (result.watch.denied_attempts, result.watch.effective_calls) == (3, 0)
    assert all(not w.blind_trails for w in result.minted_watches)
    _notified_through_sns(stack, result, [action.id, *approved])

    # The eradication plan, from the lab's CloudTrail: the attacker's persistence and
    # nothing of the administrator's legitimate work done in the same window.
    assert [p.round for p in result.eradication] == [1, 2, 3]
    plan = result.eradication[0]
    planned = {(step.operation, step.resource.name) for step in plan.steps}
    assert {
        ("delete_user", attack.backdoor_user),
        ("delete_access_key", attack.backdoor_access_key_id),
        ("delete_login_profile", attack.backdoor_user),
        ("delete_role", attack.backdoor_role),
        ("delete_function", attack.backdoor_function),
    } <= planned
    assert not any(attack.legitimate_user_created in step.describe() for step in plan.steps)
    assert [c.access_key_id for c in plan.new_credentials] == [attack.backdoor_access_key_id]
    # The trail stopped logging after the backdoor user's own calls: the stolen key's
    # records end before StopLogging, so this round sees no change to the trail yet.
    assert all(step.resource.made_by == attack.stolen_access_key_id for step in plan.steps)

    # AWS: the first round's persistence is gone; legitimate and protected resources stay.
    users = {u["UserName"] for u in iam.list_users()["Users"]}
    roles = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    functions = {f["FunctionName"] for f in aws(stack, "lambda").list_functions()["Functions"]}
    assert attack.backdoor_user not in users
    # The second round found and removed what the backdoor user's own key made.
    assert attack.second_generation_user not in users
    second = {(s.operation, s.resource.name) for s in result.eradication[1].steps}
    assert ("delete_user", attack.second_generation_user) in second
    assert [c.access_key_id for c in result.eradication[1].new_credentials] == [
        attack.second_generation_access_key_id
    ]
    assert result.open_items == []
    # Recovery: the second generation's StopLogging was undone already by containment, and
    # the gap it left runs to that restart.
    assert [(r.change.kind.value, r.outcome) for r in result.recovery] == [
        ("logging_stopped", "already_restored")
    ]
    assert aws(stack, "cloudtrail").get_trail_status(Name=world.trail_name)["IsLogging"] is True
    (gap,) = result.logging_gaps
    assert gap.stopped_by == attack.backdoor_access_key_id
    assert gap.restarted_at == result.trails_restarted[world.trail_name]
    assert gap.stopped_at < gap.restarted_at
    assert attack.backdoor_role not in roles
    assert attack.backdoor_function not in functions
    assert {"alice-admin", "ci-deployer", attack.legitimate_user_created} <= users
    assert {world.role_name, "audit-readonly", "break-glass-admin"} <= roles
    assert "orders-api" in functions
    assert all(
        step.outcome in {"removed", "already_gone"} for p in result.eradication for step in p.steps
    )
    # The backdoor user was captured whole before the first removal took a part of it.
    before = next(r for r in result.evidence if r.name == f"iam-user-{attack.backdoor_user}")
    assert attack.backdoor_access_key_id in s3_text(stack, before)
    assert "AdministratorAccess" in s3_text(stack, before)

    # AWS: the revocation policy with the workflow's cut-off.
    policy = iam.get_role_policy(
        RoleName=world.role_name, PolicyName=names.REVOKE_SESSIONS_POLICY_NAME
    )["PolicyDocument"]
    cutoff = policy["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
    assert result.containment_cutoff is not None
    assert datetime.fromisoformat(cutoff.replace("Z", "+00:00")) == result.containment_cutoff
    assert result.containment_cutoff > attack.finished_at
    assert policy["Statement"][0]["Effect"] == "Deny"

    # The instance was stopped, then started, and runs with a new key.
    ec2 = aws(stack, "ec2")
    instance = ec2.describe_instances(InstanceIds=[world.instance_id])["Reservations"][0][
        "Instances"
    ][0]
    assert instance["State"]["Name"] == "running"
    actions = _recorded_ec2_actions(stack, world.instance_id)
    assert actions.index("StopInstances") < actions.index("StartInstances")
    probe = ActivityEnvironment().run(
        SsmActivities(
            AwsClients(session(), lab_world.REGION, stack.aws_url), 0.1
        ).probe_instance_credentials,
        ProbeInstanceCredentialsInput(instance_id=world.instance_id, role_name=world.role_name),
    )
    assert probe.access_key_id == result.verified_access_key_id

    # Evidence: snapshots tagged with the case's evidence folder (its id, then when and in
    # which run it opened), objects whose bytes hash to the record.
    assert result.folder.startswith(f"{case.case_id}/")
    snapshots = ec2.describe_snapshots(
        OwnerIds=["self"],
        Filters=[{"Name": f"tag:{names.CASE_TAG_KEY}", "Values": [result.folder]}],
    )["Snapshots"]
    volume_ids = {m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"] if "Ebs" in m}
    assert {s["VolumeId"] for s in snapshots} == volume_ids and volume_ids
    s3 = aws(stack, "s3")
    # Every evidence object and the report hash to the SHA-256 recorded in the case; the
    # report lists every action with its approver, and what was removed and restored.
    report = check_evidence_and_report(stack, result)
    assert f"delete_user {attack.backdoor_user}" in report
    assert f"Start logging on trail {world.trail_name}" in report
    assert "Logging gap on trail" in report and "IMDSv2" in report
    # The whole story a reviewer signs: the denied call with its error, the administrator's
    # changes in the same window (judged not the attacker's), the watch's attempts, the
    # cut-off, the new key, the snapshots, and the backdoor function kept before removal.
    assert "| secretsmanager.amazonaws.com:ListSecrets | AccessDenied | 1 |" in report
    assert f"| CreateUser | {attack.legitimate_user_created} | {CORPORATE_IP} |" in report
    assert f"`arn:aws:iam::{world.account_id}:user/alice-admin`" in report
    assert f"- Watch of `{attack.stolen_access_key_id}`: 3 denied attempts from {THREAT_IP}" in (
        report
    )
    cutoff_line = (
        f"- Cut-off: sessions and tokens issued before {result.containment_cutoff.isoformat()}"
    )
    assert cutoff_line in report
    assert f"- New key on the instance after its restart: `{result.verified_access_key_id}`" in (
        report
    )
    assert f"- Instance `{world.instance_id}`: stopped 20" in report
    assert {s.snapshot_id for s in result.snapshots} == {s["SnapshotId"] for s in snapshots}
    for snapshot in snapshots:
        assert f"- EBS snapshot `{snapshot['SnapshotId']}` of volume" in report
    function_kept = f"launched-function-{attack.backdoor_function}"
    assert f"`{function_kept}`" in report
    kept_function = next(r for r in result.evidence if r.name == function_kept)
    assert attack.backdoor_function in s3_text(stack, kept_function)
    assert "already_" not in report
    # The investigation, from the lab's trail: the stolen key's session, the role's call
    # volume against its baseline, the attacker's address as new; its chart is evidence.
    assert result.investigation is not None
    assert (
        result.investigation.principal_arn
        == f"arn:aws:iam::{world.account_id}:role/{world.role_name}"
    )
    assert THREAT_IP in result.investigation.new_source_ips
    assert "## Investigation (from CloudTrail)" in report
    assert f"| `{attack.stolen_access_key_id}` | " in report
    # Investigated again once the rounds found the backdoor user's key: both sessions are
    # in the report, and the later chart is the one beside it.
    assert f"| `{attack.backdoor_access_key_id}` | " in report
    # The call that minted the backdoor key names it in its response: it is the key's
    # first event, made with the stolen key from the attacker's address.
    minted = (
        f"| `{attack.backdoor_access_key_id}` | iam.amazonaws.com:CreateAccessKey | "
        f"arn:aws:sts::{world.account_id}:assumed-role/{world.role_name}/"
    )
    (line,) = [line for line in report.splitlines() if line.startswith(minted, 26)]
    assert line.endswith(f" | {attack.stolen_access_key_id} | {THREAT_IP} | Active |")
    assert result.investigation.credentials[0] == attack.stolen_access_key_id
    assert attack.backdoor_access_key_id in result.investigation.credentials
    chart = "investigation-all-credentials-volume.png"
    assert result.investigation.chart.key.endswith(chart)
    assert f"![API calls an hour against the baseline]({chart})" in report
    kept = {e.name for e in result.evidence}
    assert {"investigation", "investigation-volume", "investigation-all-credentials"} <= kept
    by_name = {record.name: record for record in result.evidence}
    expected = {
        f"iam-role-{world.role_name}": '"trust_policy"',
        f"ec2-instance-{world.instance_id}": world.instance_id,
        f"ebs-snapshots-{world.instance_id}": snapshots[0]["SnapshotId"],
        f"cloudtrail-{attack.stolen_access_key_id.lower()}": attack.stolen_access_key_id,
        f"activity-{attack.stolen_access_key_id.lower()}": attack.backdoor_user,
        f"iam-role-{attack.backdoor_role}": "999988887777",
    }
    for name, text in expected.items():
        assert text in s3_text(stack, by_name[name]), name
    assert any(name.startswith("finding-") for name in by_name)
    trail = next(r for r in result.evidence if r.name.startswith("cloudtrail-"))
    trail_doc = json.loads(s3.get_object(Bucket=trail.bucket, Key=trail.key)["Body"].read())
    event_names = {r["eventName"] for r in trail_doc["records"]}
    assert {"CreateUser", "CreateAccessKey", "CreateFunction20150331"} <= event_names

    # Secrets: none of the stolen session's secret material reached history or evidence.
    history = await handle.fetch_history()
    history_json = history.to_json()
    assert 'SecretAccessKey": "' not in history_json.replace("REDACTED", "")
    for log_file in attack.log_files:
        raw = gzip.decompress(
            s3.get_object(Bucket=world.cloudtrail_bucket, Key=log_file)["Body"].read()
        ).decode()
        assert 'SecretAccessKey": "' not in raw.replace("HIDDEN_DUE_TO_SECURITY_REASONS", "")

    # Nor did they reach the lab's own recording: the stolen session's token and the
    # backdoor's password are scrubbed from it, and the replay still works.
    entries = [
        json.loads(line) for line in (stack.state_dir / RECORDING_NAME).read_text().splitlines()
    ]
    assert not any(name.lower() == "x-amz-security-token" for e in entries for name in e["headers"])
    bodies = [
        base64.b64decode(e["body"]).decode(errors="replace") if e["body_encoded"] else e["body"]
        for e in entries
        if e.get("body")
    ]
    passwords = [parse_qs(body).get("Password") for body in bodies if "Password=" in body]
    assert passwords == [[SCRUBBED]]

    if os.environ.get("QUENCH_RECORD_HISTORIES") == "1":
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / "ec2_role_case.json").write_text(history_for_the_repo(history_json))


def _notified_through_sns(stack, result, decided: list[str]) -> None:
    """People subscribed to the lab's topic heard of each approval the case waited for
    and of its close, with the report and a link to the case in the Web UI."""
    notifications = lab_world.read_notifications(stack.aws_url, result.case_id)
    kinds = [n["MessageAttributes"]["quench_kind"]["Value"] for n in notifications]
    assert sorted(kinds) == sorted(["needs_human"] * len(decided) + ["closed"]), kinds
    assert kinds[-1] == "closed"
    asked = [n for n in notifications if "waits for approval" in n["Subject"]]
    assert sorted(n["Subject"].split()[1] for n in asked) == sorted(decided)
    closing = notifications[-1]
    assert closing["Subject"] == f"Quench: {result.case_id} closed"
    assert result.report.markdown_report.uri in closing["Message"]
    case_url = f"{stack.ui_url}/namespaces/default/workflows/{result.case_id}"
    assert all(case_url in n["Message"] for n in notifications)
