"""The lab's second scenario with every real piece: a CI user's long-term key leaks and is
used from a Tor exit; its key makes a user with a key, whose key makes another. Quench
contains the key, needs three eradication rounds to get every generation, restores the
trust policy and the trail, and leaves everything legitimate as it was."""

import asyncio
import hashlib
import json

import pytest

from activities.recovery import normalized_policy
from config import names
from lab.attack import CORPORATE_IP
from lab.user_key_attack import CI_IP
from models.case import ActionStatus, Phase
from tests.e2e.support import (
    approve_until_closed,
    aws,
    check_evidence_and_report,
    open_lab_case,
    run_starter,
    temporal_cli,
    wait_for,
)

pytestmark = pytest.mark.e2e


async def test_leaked_user_key_is_contained_and_three_generations_eradicated(lab_stack):
    stack = lab_stack
    case, handle, status = await open_lab_case(stack, "user-key")
    world, attack = case.world, case.attack
    assert case.case_id == names.case_workflow_id(world.account_id, attack.leaked_access_key_id)
    iam = aws(stack, "iam")
    (contain,) = status.pending_actions()
    assert contain.id.startswith("contain-key-")
    # Before the approval the leaked key still works: evidence only.
    keys = iam.list_access_keys(UserName=attack.user_name)["AccessKeyMetadata"]
    assert {k["AccessKeyId"]: k["Status"] for k in keys}[attack.leaked_access_key_id] == "Active"

    # Malformed decisions sent with the real temporal CLI are refused and kept; the case
    # goes on answering, and is approved and closed below.
    malformed = [
        [],
        ["--input", '{"action_id": "' + contain.id + '"}'],
        ["--input", '{"action_id": "a"}', "--input", '{"action_id": "b"}'],
    ]
    for inputs in malformed:
        await temporal_cli(
            stack, "workflow", "signal", "--workflow-id", case.case_id, "--name", "approve", *inputs
        )
    refused = (await wait_for(handle, lambda s: len(s.refused) == len(malformed))).refused
    assert [r.reason.split(":")[0] for r in refused] == ["malformed input"] * 3
    assert "got 0" in refused[0].reason and "reason" in refused[1].reason
    assert "got 2" in refused[2].reason and refused[1].action_id == contain.id

    approved = await approve_until_closed(
        stack, handle, case.case_id, ("contain-key-", "remove-console-", "eradicate-", "recover-")
    )
    async with asyncio.timeout(120):
        result = await handle.result()
    assert result.phase is Phase.CLOSED and result.outcome == "contained"
    # Containment, a removal for each generation (the third launched an instance), and
    # the recovery, each approved with Quench's command line.
    assert [a.rsplit("-", 1)[0] for a in approved] == [
        "contain-key",
        "eradicate",
        "eradicate",
        "eradicate",
        "recover",
    ]

    # Containment: the key deactivated, never deleted; older tokens of the user denied.
    keys = iam.list_access_keys(UserName=attack.user_name)["AccessKeyMetadata"]
    assert {k["AccessKeyId"]: k["Status"] for k in keys}[attack.leaked_access_key_id] == (
        "Inactive"
    )
    assert (
        names.REVOKE_USER_TOKENS_POLICY_NAME
        in iam.list_user_policies(UserName=attack.user_name)["PolicyNames"]
    )
    assert result.watch is not None and result.watch.verdict == "clean"

    # Three rounds, one for each generation of key, the last finding nothing new.
    assert [p.access_key_ids for p in result.eradication] == [[k] for k in attack.access_key_chain]
    assert [[c.access_key_id for c in p.new_credentials] for p in result.eradication] == [
        [attack.second_generation_access_key_id],
        [attack.third_generation_access_key_id],
        [],
    ]
    steps = [step for p in result.eradication for step in p.steps]
    assert all(step.outcome in {"removed", "already_gone", "kept"} for step in steps)
    # The role's own policy and the policy it already had are not the attacker's to remove.
    kept = sorted(s.resource.name for s in steps if s.outcome == "kept")
    assert kept == sorted([attack.role_policy_name, attack.role_policy_attached_before])

    # AWS: nothing the attacker made remains.
    users = {u["UserName"] for u in iam.list_users()["Users"]}
    assert attack.second_generation_user not in users
    assert attack.third_generation_user not in users
    ec2 = aws(stack, "ec2")
    (instance,) = [
        i
        for r in ec2.describe_instances(InstanceIds=[attack.attacker_instance_id])["Reservations"]
        for i in r["Instances"]
    ]
    assert instance["State"]["Name"] in {"shutting-down", "terminated"}

    # Recovery: the trust policy back to the administrator's version, the trail logging.
    trust = iam.get_role(RoleName=attack.trust_changed_role)["Role"]["AssumeRolePolicyDocument"]
    assert normalized_policy(trust) == normalized_policy(attack.prior_trust_policy)
    assert attack.outside_account not in json.dumps(trust)
    trust_step = next(r for r in result.recovery if r.change.kind.value == "trust_policy")
    assert trust_step.outcome == "restored" and trust_step.source is not None
    assert "alice-admin" in trust_step.source
    role_policy = iam.get_role_policy(
        RoleName=attack.trust_changed_role, PolicyName=attack.role_policy_name
    )["PolicyDocument"]
    assert normalized_policy(role_policy) == normalized_policy(attack.prior_role_policy)
    role_attached = iam.list_attached_role_policies(RoleName=attack.trust_changed_role)
    assert [p["PolicyArn"] for p in role_attached["AttachedPolicies"]] == [
        attack.role_policy_attached_before
    ]
    assert aws(stack, "cloudtrail").get_trail_status(Name=world.trail_name)["IsLogging"] is True
    (gap,) = result.logging_gaps
    assert gap.stopped_by == attack.third_generation_access_key_id
    assert gap.restarted_at is not None
    recover = next(a for a in result.actions if a.id.startswith("recover-"))
    assert recover.status is ActionStatus.DONE

    # Everything legitimate, even what changed in the same window, is as its owners left it.
    assert {
        "alice-admin",
        "ci-deployer",
        attack.user_name,
        attack.legitimate_user_created,
    } <= users
    attached = iam.list_attached_user_policies(UserName=attack.legitimate_user_created)
    assert [p["PolicyName"] for p in attached["AttachedPolicies"]] == ["ReadOnlyAccess"]
    roles = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    assert {world.role_name, "audit-readonly", "break-glass-admin"} <= roles
    function = aws(stack, "lambda").get_function(FunctionName=attack.legitimate_function_updated)
    assert function["Configuration"]["CodeSha256"] == attack.legitimate_function_code_sha256

    # The report: every action with its approver, every hash, what was removed and restored.
    report = check_evidence_and_report(stack, result)
    assert f"delete_user {attack.third_generation_user}" in report
    assert f"Restore the trust policy of role {attack.trust_changed_role}" in report
    assert "long-term access key" in report and attack.tor_exit_ip in report
    # Others' changes in the same window, judged not the attacker's, for a human to
    # confirm: the administrator's new user and the CI deployer's function update.
    assert f"| CreateUser | {attack.legitimate_user_created} | {CORPORATE_IP} |" in report
    assert f"| UpdateFunctionCode20150331v2 | {attack.legitimate_function_updated} | {CI_IP} |" in (
        report
    )
    assert "| secretsmanager.amazonaws.com:ListSecrets | AccessDenied |" in report
    # The attacker's instance is kept as evidence before its termination.
    launched = [e for e in result.evidence if e.name.startswith("launched-instance-")]
    assert [e.name for e in launched] == [f"launched-instance-{attack.attacker_instance_id}"]
    assert result.report is not None
    assert hashlib.sha256(report.encode()).hexdigest() == result.report.markdown_report.sha256
    # The same report through Quench's command line, checked against the case's hash.
    printed = await run_starter(
        stack,
        "report",
        case.case_id,
        "--lab",
        "--lab-aws-port",
        str(stack.config.lab_aws_port),
        "--temporal-port",
        str(stack.config.temporal_port),
    )
    assert printed == report
