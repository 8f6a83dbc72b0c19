"""The accounts Quench manages, read from one TOML file (QUENCH_ACCOUNTS_FILE).

A finding names the account where the credential lives; Quench acts there and nowhere
else, by assuming the account's role, or with its own credentials in its own account.
An account not listed is not managed: its findings are ignored, and nothing is touched.
"""

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from models.case import ActionKind, approved_by_people

ACCOUNT_ID_PATTERN = r"^\d{12}$"
ROLE_NAME_PATTERN = r"^[A-Za-z0-9_+=,.@-]{1,64}$"
# A role ARN, or a template of one with {account_id} where the account goes.
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::(\d{12}|\{account_id\}):role/[A-Za-z0-9_+=,.@/-]{1,512}$"
ORG_ID_PATTERN = r"^o-[a-z0-9]{10,32}$"


class _Strict(BaseModel):
    # A misspelt key in a security tool's settings is an error, not a silent default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrailSource(_Strict):
    """Where an account's CloudTrail records are read."""

    # Athena reads the QUENCH_ATHENA_* table, so it is the QUENCH_CLOUDTRAIL_SOURCE only.
    source: Literal["s3", "lookup"] = "s3"
    bucket: str | None = None
    prefix: str = ""
    # An organisation trail writes every account's files under
    # AWSLogs/<org id>/<account>/CloudTrail/; an account's own trail under AWSLogs/<account>/.
    organization_id: str | None = Field(default=None, pattern=ORG_ID_PATTERN)
    # Whose credentials read the bucket: Quench's own (an organisation trail's bucket,
    # usually in a log-archive account that grants the security account read), or the
    # role Quench assumes in the account (a trail of the account's own).
    read_as: Literal["quench", "account"] = "quench"
    regions: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> "TrailSource":
        if self.source == "s3" and not self.bucket:
            raise ValueError("an s3 trail source needs its bucket")
        return self


class ApprovalOverrides(_Strict):
    """The approval policy of one account, where it differs from QUENCH_* settings."""

    approvers: dict[ActionKind, list[str]] | None = None
    two_person_actions: list[ActionKind] | None = None
    no_approval_actions: list[ActionKind] | None = None
    approval_deadline_seconds: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    auto_contain_min_severity: float | None = Field(default=None, ge=0, le=10)

    @field_validator("no_approval_actions")
    @classmethod
    def _people_approve_some(cls, kinds: list[ActionKind] | None) -> list[ActionKind] | None:
        return None if kinds is None else approved_by_people(kinds)


class Account(_Strict):
    id: str = Field(pattern=ACCOUNT_ID_PATTERN)
    name: str = Field(default="", max_length=64)
    # Quench's own account: it acts there with its own credentials, assuming no role. The
    # worker checks at start that its credentials are this account's.
    own_credentials: bool = False
    # The role Quench assumes there: a name in that account, or an ARN (template).
    role_name: str | None = Field(default=None, pattern=ROLE_NAME_PATTERN)
    role_arn: str | None = Field(default=None, pattern=ROLE_ARN_PATTERN)
    # Not a secret by AWS's design, yet no business of logs: kept out of repr().
    external_id: str | None = Field(default=None, min_length=2, max_length=1224, repr=False)
    cloudtrail: TrailSource | None = None
    # Never contained, removed or changed in this account, beside QUENCH_PROTECTED_NAMES.
    protected_names: list[str] = Field(default_factory=list)
    approvals: ApprovalOverrides = Field(default_factory=ApprovalOverrides)

    @model_validator(mode="after")
    def _one_role(self) -> "Account":
        if self.role_name and self.role_arn:
            raise ValueError(f"account {self.id}: give role_name or role_arn, not both")
        if self.own_credentials and (self.role_name or self.role_arn or self.external_id):
            raise ValueError(f"account {self.id}: own_credentials assumes no role")
        written = (self.role_arn or "").split(":")[4:5]
        if written and written != ["{account_id}"] and written != [self.id]:
            # A copy-paste slip would act in the other account while the case names this one.
            raise ValueError(
                f"account {self.id}: role_arn is a role in account {written[0]}, not {self.id}"
            )
        return self

    def role(self) -> str | None:
        """The ARN of the role Quench assumes here; None: its own credentials."""
        if self.own_credentials:
            return None
        if self.role_arn:
            return self.role_arn.replace("{account_id}", self.id)
        if self.role_name:
            return f"arn:aws:iam::{self.id}:role/{self.role_name}"
        return None

    @property
    def label(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id


class Defaults(_Strict):
    """What every account has unless it says otherwise, key by key."""

    role_name: str | None = Field(default=None, pattern=ROLE_NAME_PATTERN)
    role_arn: str | None = Field(default=None, pattern=ROLE_ARN_PATTERN)
    # Not a secret by AWS's design, yet no business of logs: kept out of repr().
    external_id: str | None = Field(default=None, min_length=2, max_length=1224, repr=False)
    cloudtrail: TrailSource | None = None

    @model_validator(mode="after")
    def _a_template(self) -> "Defaults":
        if self.role_name and self.role_arn:
            raise ValueError("defaults: give role_name or role_arn, not both")
        if self.role_arn and "{account_id}" not in self.role_arn:
            raise ValueError(
                "defaults: role_arn must be a template with {account_id}: a fixed ARN would "
                "send every account's changes to one account"
            )
        return self


class Organization(_Strict):
    """The organisation Quench may quarantine member accounts of, with a service control
    policy attached from the account that administers the organisation's policies."""

    id: str = Field(pattern=ORG_ID_PATTERN)
    # The management account, or a delegated administrator for service control policies.
    policy_account: str = Field(pattern=ACCOUNT_ID_PATTERN)
    role_name: str | None = Field(default=None, pattern=ROLE_NAME_PATTERN)
    role_arn: str | None = Field(default=None, pattern=ROLE_ARN_PATTERN)
    # Not a secret by AWS's design, yet no business of logs: kept out of repr().
    external_id: str | None = Field(default=None, min_length=2, max_length=1224, repr=False)

    @model_validator(mode="after")
    def _one_role(self) -> "Organization":
        if bool(self.role_name) == bool(self.role_arn):
            raise ValueError("organization: give role_name or role_arn (one of them)")
        written = (self.role_arn or "").split(":")[4:5]
        if written and written not in (["{account_id}"], [self.policy_account]):
            raise ValueError(
                f"organization: role_arn is a role in account {written[0]}, not the "
                f"policy account {self.policy_account}"
            )
        return self

    def policy_administrator(self) -> Account:
        """The policy account, as the role Quench assumes there to attach and detach SCPs."""
        return Account(
            id=self.policy_account,
            name="organization policies",
            role_name=self.role_name,
            role_arn=self.role_arn,
            external_id=self.external_id,
        )


class AccountsFile(_Strict):
    defaults: Defaults = Field(default_factory=Defaults)
    account: list[Account] = Field(default_factory=list)
    organization: Organization | None = None

    @model_validator(mode="after")
    def _each_once(self) -> "AccountsFile":
        seen: set[str] = set()
        for account in self.account:
            if account.id in seen:
                raise ValueError(f"account {account.id} is listed twice")
            seen.add(account.id)
        return self

    def resolved(self) -> list[Account]:
        """Each account with the defaults filled in, key by key, where it gave nothing:
        the role (name or ARN), the ExternalId, the trail. Quench's own account
        (own_credentials) takes no role and no ExternalId."""
        if not self.account:
            raise ValueError("it lists no account ([[account]] tables)")
        defaults = self.defaults
        resolved = []
        for account in self.account:
            update: dict[str, object] = {}
            if not account.own_credentials:
                if not (account.role_name or account.role_arn):
                    update |= {"role_name": defaults.role_name, "role_arn": defaults.role_arn}
                if account.external_id is None:
                    update["external_id"] = defaults.external_id
            if account.cloudtrail is None:
                update["cloudtrail"] = defaults.cloudtrail
            resolved.append(account.model_copy(update=update))
        for account in resolved:
            if account.role() is None and not account.own_credentials:
                raise ValueError(
                    f"account {account.id}: name the role Quench assumes there "
                    "(role_name or role_arn, here or in [defaults]), or own_credentials = true"
                )
        return resolved


class AccountsError(ValueError):
    pass


def load_accounts(path: Path) -> tuple[list[Account], Organization | None]:
    """The managed accounts from a TOML file, each with the file's defaults filled in, and
    the organisation Quench may quarantine them in, if the file names one."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise AccountsError(f"QUENCH_ACCOUNTS_FILE: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AccountsError(f"QUENCH_ACCOUNTS_FILE: {path} is not TOML: {exc}") from None
    try:
        parsed = AccountsFile.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(error, data) for error in exc.errors()]
        raise AccountsError(f"QUENCH_ACCOUNTS_FILE: {path}: {'; '.join(problems)}") from None
    try:
        return parsed.resolved(), parsed.organization
    except ValueError as exc:
        raise AccountsError(f"QUENCH_ACCOUNTS_FILE: {path}: {exc}") from None


def _problem(error: Any, data: dict[str, Any]) -> str:
    """One validation error, its place named as a person reads the file: `account
    111111111111: role_arn: ...` rather than `account.0.role_arn`."""
    loc = [str(part) for part in error["loc"]]
    message = str(error["msg"]).removeprefix("Value error, ")
    if len(loc) >= 2 and loc[0] == "account" and loc[1].isdigit():
        entries = data.get("account") or []
        index = int(loc[1])
        entry = entries[index] if isinstance(entries, list) and index < len(entries) else {}
        name = entry.get("id") if isinstance(entry, dict) else None
        loc = [f"account {name}" if isinstance(name, str) else f"[[account]] {index + 1}"]
        loc += [str(part) for part in error["loc"][2:]]
    where = ": ".join(loc)
    return f"{where}: {message}" if where else message


def session_label(case_id: str) -> str:
    """The case id as an STS session name or source identity allows (2-64 of [\\w+=,.@-])."""
    label = re.sub(r"[^\w+=,.@-]", "-", case_id)[:64]
    return label if len(label) >= 2 else f"quench-{label}"
