"""The organisation-level quarantine, from the account that administers the organisation's
policies: a service control policy made for the case and attached to its account, then
detached and deleted when the case is done. Both are idempotent: the policy is found by
its name, one per case."""

from typing import Any

from botocore.exceptions import ClientError
from temporalio import activity

from activities.aws import AwsClients, aws_errors, error_code
from activities.liveness import heartbeating
from models.activities import QuarantineInput, QuarantineResult
from playbook.quarantine import document_text

SCP = "SERVICE_CONTROL_POLICY"
QUARANTINE_TAG = "quench:quarantine"


class OrganizationActivities:
    def __init__(self, clients: AwsClients) -> None:
        # The policy account's clients: the role Quench assumes there (activities/accounts.py).
        self._clients = clients

    def _organizations(self) -> Any:
        return self._clients.client("organizations")

    def _find(self, name: str) -> str | None:
        pages = self._organizations().get_paginator("list_policies").paginate(Filter=SCP)
        for page in pages:
            for policy in page["Policies"]:
                if policy["Name"] == name:
                    return str(policy["Id"])
        return None

    def _targets(self, policy_id: str) -> set[str]:
        pages = (
            self._organizations()
            .get_paginator("list_targets_for_policy")
            .paginate(PolicyId=policy_id)
        )
        return {str(t["TargetId"]) for page in pages for t in page["Targets"]}

    @activity.defn
    @heartbeating
    def attach_quarantine(self, input: QuarantineInput) -> QuarantineResult:
        """The case's SCP, made (or brought up to date) and attached to its account."""
        org = self._organizations()
        target, name = input.target_account_id, input.policy_name
        text = document_text(input.document)
        with aws_errors(f"quarantine account {target} with SCP {name}"):
            policy_id = self._find(name)
            if policy_id is None:
                policy_id = str(
                    org.create_policy(
                        Name=name,
                        Description=f"Quench quarantine of account {target}, case {input.case_id}",
                        Type=SCP,
                        Content=text,
                        # The quarantine role may change only policies that carry this tag
                        # (docs/quarantine-role-policy.json), never the organisation's own.
                        Tags=[{"Key": QUARANTINE_TAG, "Value": "true"}],
                    )["Policy"]["PolicySummary"]["Id"]
                )
            else:
                org.update_policy(PolicyId=policy_id, Content=text)
            if target in self._targets(policy_id):
                return QuarantineResult(
                    policy_id=policy_id, changed=False, detail="attached already"
                )
            try:
                org.attach_policy(PolicyId=policy_id, TargetId=target)
            except ClientError as exc:
                if error_code(exc) != "DuplicatePolicyAttachmentException":
                    raise
        return QuarantineResult(policy_id=policy_id, changed=True, detail=f"attached to {target}")

    @activity.defn
    @heartbeating
    def lift_quarantine(self, input: QuarantineInput) -> QuarantineResult:
        """The case's SCP detached from its account and deleted; gone already is done."""
        org = self._organizations()
        target, name = input.target_account_id, input.policy_name
        with aws_errors(f"lift the quarantine of account {target} (SCP {name})"):
            policy_id = self._find(name)
            if policy_id is None:
                return QuarantineResult(policy_id="", changed=False, detail="gone already")
            if target in self._targets(policy_id):
                try:
                    org.detach_policy(PolicyId=policy_id, TargetId=target)
                except ClientError as exc:
                    if error_code(exc) != "PolicyNotAttachedException":
                        raise
            try:
                org.delete_policy(PolicyId=policy_id)
            except ClientError as exc:
                if error_code(exc) != "PolicyNotFoundException":
                    raise
        return QuarantineResult(policy_id=policy_id, changed=True, detail="detached and deleted")
