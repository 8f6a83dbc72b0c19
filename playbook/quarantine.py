"""The organisation-level quarantine: a service control policy on the member account that
denies the compromised principals (a role's sessions only those issued before the cut-off)
and the principals the attacker made. An SCP applies to every principal of the account and
cannot be changed from inside it, so an attacker with IAM write there cannot lift it as it
can delete the role's own revocation policy. Quench's own role there and the protected
principals (by name: never by tag, which the attacker could set) are exempt.
"""

import json
import re
from datetime import UTC, datetime
from typing import Any

QUARANTINE_POLICY_PREFIX = "quench-quarantine-"
# AWS's limit on a service control policy's document, in characters.
SCP_MAX_CHARACTERS = 5120


def quarantine_policy_name(case_id: str) -> str:
    """The SCP's name: one per case, so a retry finds the policy it made (128 at most)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "-", case_id)
    return (QUARANTINE_POLICY_PREFIX + slug)[:128]


def principal_arns(
    account_id: str, names: list[str], kinds: tuple[str, ...] = ("user", "role")
) -> list[str]:
    """Users and roles of these names in the account, as `aws:PrincipalArn` matches them:
    at the top level, or under any path (never another name that ends the same)."""
    return [
        f"arn:aws:iam::{account_id}:{kind}/{middle}{name}"
        for name in sorted(set(names))
        for kind in kinds
        for middle in ("", "*/")
    ]


def quarantine_document(
    *,
    role_sessions: list[str],
    principals: list[str],
    cutoff: datetime,
    exempt: list[str],
) -> dict[str, Any]:
    """The SCP: deny everything to the sessions of `role_sessions` (role ARNs) issued before
    `cutoff`, and to `principals` (user or role ARNs) whenever issued; never to `exempt`."""
    # Exempt by ARN only: not by the quench:protected tag, which the attacker, with IAM
    # write in the account, could put on the principals the policy denies.
    unless = {"ArnNotLike": {"aws:PrincipalArn": sorted(set(exempt))}} if exempt else {}
    statements: list[dict[str, Any]] = []
    if role_sessions:
        statements.append(
            {
                "Sid": "QuenchQuarantineOlderSessions",
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {
                    "ArnLike": {"aws:PrincipalArn": sorted(set(role_sessions))},
                    "DateLessThan": {
                        "aws:TokenIssueTime": cutoff.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    },
                    **unless,
                },
            }
        )
    if principals:
        statements.append(
            {
                "Sid": "QuenchQuarantinePrincipals",
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"ArnLike": {"aws:PrincipalArn": sorted(set(principals))}, **unless},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def document_text(document: dict[str, Any]) -> str:
    """The document as Organizations stores it: compact, so it counts against the limit
    as little as it can."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def fits(document: dict[str, Any]) -> bool:
    return len(document_text(document)) <= SCP_MAX_CHARACTERS
