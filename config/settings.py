"""Settings for every Quench process, read from QUENCH_* environment variables (or `.env`).

Validated at start: a process refuses to run with an unsafe or incomplete configuration.
"""

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from activities.faults import FaultPlan, parse_fault_plan
from codec.aesgcm import AesGcmCodec, CodecKeyError, parse_keys
from codec.server import check_token
from config.accounts import (
    ACCOUNT_ID_PATTERN,
    Account,
    AccountsError,
    Organization,
    load_accounts,
)
from config.names import SCAN_TASK_QUEUE, TASK_QUEUE
from models.case import ActionKind, CasePolicy, QuarantinePolicy, approved_by_people
from playbook.quarantine import principal_arns

# The lab's security account, where Quench runs (moto's default account).
LAB_ACCOUNT_ID = "123456789012"

# Only the lab may run with this token; anywhere else a real secret must be configured.
LAB_WEBHOOK_TOKEN = "quench-lab-token"

# The GuardDuty finding types that mean a credential may be in someone else's hands
# (shell-style patterns on the type): every IAMUser finding, and the families that name
# the access key whatever the resource (S3 findings carry the key that made the calls).
CREDENTIAL_FINDING_TYPES = (
    "*:IAMUser/*",
    "*/InstanceCredentialExfiltration*",
    "*/MaliciousIPCaller*",
    "*/TorIPCaller*",
    "*/AnomalousBehavior*",
    "*/RootCredentialUsage*",
    "*/ShortTermRootCredentialUsage*",
    "*/CloudTrailLoggingDisabled*",
    "AttackSequence:IAM/CompromisedCredentials",
)
SNS_TOPIC_ARN_PATTERN = r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$"


class Settings(BaseSettings):
    # Errors name the setting, never its value: some values are secrets.
    model_config = SettingsConfigDict(
        env_prefix="QUENCH_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    # AWS. No endpoint means real AWS with the default credential chain.
    aws_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    # The accounts Quench manages: a TOML file (see README, "Many accounts"), or, for one
    # account, the worker's own account's id. The lab manages its own account by default.
    accounts_file: Path | None = None
    account_id: str | None = Field(default=None, pattern=ACCOUNT_ID_PATTERN)

    # Where CloudTrail delivers its log files, and which regions to read.
    cloudtrail_source: Literal["s3", "lookup", "athena"] = "s3"
    cloudtrail_bucket: str | None = None
    cloudtrail_prefix: str = ""
    cloudtrail_regions: list[str] = Field(default_factory=list)
    # The Athena source: the trail's table (made by the worker when missing, given the
    # trail's bucket), the workgroup its queries run in, and where their results go.
    athena_database: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,255}$")
    athena_table: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,255}$")
    athena_workgroup: str = Field(default="primary", pattern=r"^[A-Za-z0-9._-]{1,128}$")
    athena_output_location: str | None = Field(
        default=None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s']*)?$"
    )

    # Evidence is written here, under cases/<case id>/.
    evidence_bucket: str | None = None

    # Temporal.
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = TASK_QUEUE
    scan_task_queue: str = SCAN_TASK_QUEUE
    temporal_ui_url: str = "http://127.0.0.1:8233"
    # A Temporal behind TLS: on with a client certificate (mTLS) or an API key (Temporal
    # Cloud takes either), or by temporal_tls for server-side TLS alone.
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_api_key: SecretStr | None = None

    # The finding webhook.
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(default=8787, ge=1, le=65535)
    webhook_token: SecretStr | None = None
    # More accepted tokens (a JSON list), so a new key can be rolled out before the old
    # one is withdrawn.
    webhook_extra_tokens: list[SecretStr] = Field(default_factory=list)
    webhook_token_header: str = Field(
        default="x-quench-token", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9-]+$"
    )
    # How long a delivery may wait for its case to take the finding before the sender is
    # told to retry (503): a worker must run the case's update handler.
    webhook_accept_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # SNS topics whose subscription the webhook confirms and whose messages it takes.
    sns_topic_arns: list[str] = Field(default_factory=list)

    # Which findings open or join a case: shell-style patterns on the finding type (the
    # deny list wins), a minimum severity, and whether archived findings count.
    finding_types_allow: list[str] = Field(default_factory=lambda: list(CREDENTIAL_FINDING_TYPES))
    finding_types_deny: list[str] = Field(default_factory=list)
    min_severity: float = Field(default=0.0, ge=0, le=10)
    ignore_archived: bool = True

    # The containment watch (playbook 2.3), fixed into each case when it opens.
    watch_seconds: int = Field(default=30 * 60, ge=1)
    check_every_seconds: int = Field(default=5 * 60, ge=1)
    delivery_lag_seconds: int = Field(default=15 * 60, ge=0)
    compromise_margin_seconds: int = Field(default=3600, ge=0)
    protected_names: list[str] = Field(default_factory=list)
    max_eradication_rounds: int = Field(default=5, ge=1, le=50)
    # How far back CloudTrail is searched for what the attacker's changes replaced.
    restore_lookback_seconds: int = Field(default=30 * 24 * 3600, ge=3600, le=90 * 24 * 3600)
    # The approval policy: who may decide each kind of action (JSON, e.g.
    # {"eradicate": ["alice", "bob"]}; a kind not listed, anyone), and which kinds need two
    # different approvers (JSON list, e.g. ["eradicate"]).
    approvers: dict[ActionKind, list[str]] = Field(default_factory=dict)
    two_person_actions: list[ActionKind] = Field(default_factory=list)
    # How long an approval may wait before the case escalates, and per kind of action
    # (JSON, e.g. {"contain": 600}); containment of findings at least this severe proceeds
    # on its own at the deadline (unset: it always waits for a human).
    approval_deadline_seconds: int = Field(default=30 * 60, ge=1, le=7 * 24 * 3600)
    approval_deadlines: dict[ActionKind, int] = Field(default_factory=dict)
    auto_contain_min_severity: float | None = Field(default=None, ge=0, le=10)
    # Kinds of action that run without approval (JSON list, e.g. ["contain-key"]).
    no_approval_actions: list[ActionKind] = Field(default_factory=list)
    # Every new case a dry run: it reads, plans and asks as a real one, and changes
    # nothing in AWS until a person approves going live (README, "Switching Quench on
    # safely"). A case can be made a dry run on its own; never real while this is set.
    dry_run: bool = False
    # Signed decisions: each approver's Ed25519 public keys (JSON, e.g. {"alice":
    # ["ssh-ed25519 AAAA... alice@laptop"]}). Set, every decision a person takes must be
    # signed with one of its approver's keys (`quench approve --key`); unset, none is.
    approver_keys: dict[str, list[str]] = Field(default_factory=dict)

    # Notifications when a case needs a human, escalates, proceeds or closes: an SNS topic
    # and an outgoing chat webhook (`{"text": ...}`), each optional. The webhook's URL is
    # a secret (chat tools put the credential in it).
    notify_sns_topic_arn: str | None = None
    notify_webhook_url: SecretStr | None = None

    # Payloads (findings, principals, plans, decisions) are encrypted with AES-256-GCM
    # before they reach Temporal: the keys as JSON, key id -> base64 of 32 bytes (several,
    # so keys rotate: the one named by payload_key_id encrypts, every one decrypts).
    # Required outside the lab by the worker and the webhook, unless encrypt_payloads is
    # false; unset (None) means on outside the lab and off in it.
    payload_keys: SecretStr | None = None
    payload_key_id: str | None = None
    encrypt_payloads: bool | None = None
    # The codec server: lets the Web UI and `temporal --codec-endpoint` show what the
    # keys encrypted, to callers with the token (and, for the UI, from its origin only).
    codec_token: SecretStr | None = None
    codec_host: str = "127.0.0.1"
    codec_port: int = Field(default=8089, ge=1, le=65535)
    codec_url: str | None = None  # how the UI and CLI reach it, when not host:port
    codec_ui_origin: str | None = None  # default: QUENCH_TEMPORAL_UI_URL's origin

    # Logs: text, or JSON lines carrying the case id. Metrics: Temporal's and the cases',
    # for Prometheus at this host:port (the worker; unset, none are served).
    log_format: Literal["text", "json"] = "text"
    prometheus_bind: str | None = None

    # The lab: moto standing in for AWS, with a simulated compromise.
    lab: bool = False
    # Faults injected into the worker's own AWS calls, in the lab only (JSON, e.g.
    # {"iam:DeleteUser": "access_denied", "ec2:StopInstances": {"fault": "throttling",
    # "times": 3}}); read here rather than by pydantic-settings, so a bad entry is named.
    lab_faults: Annotated[FaultPlan, NoDecode] = Field(default_factory=dict)

    # Log every AWS call the worker makes (`aws call iam:DeleteUser`), in the lab only:
    # the fault matrix (benchmarks/fault_matrix.py) finds the calls a case makes from it.
    lab_log_calls: bool = False

    _managed: dict[str, Account] = PrivateAttr(default_factory=dict)
    _organization: Organization | None = PrivateAttr(default=None)

    @field_validator("no_approval_actions")
    @classmethod
    def _people_approve_some(cls, kinds: list[ActionKind]) -> list[ActionKind]:
        return approved_by_people(kinds)

    @field_validator("lab_faults", mode="before")
    @classmethod
    def _read_lab_faults(cls, value: Any) -> FaultPlan:
        return parse_fault_plan(value)

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> "Settings":
        for token in self._configured_tokens():
            if not self.lab and token == LAB_WEBHOOK_TOKEN:
                raise ValueError(
                    "QUENCH_WEBHOOK_TOKEN is the published lab token; "
                    "set a real secret outside the lab"
                )
            if len(token) < 16:
                raise ValueError(
                    "QUENCH_WEBHOOK_TOKEN (and each of QUENCH_WEBHOOK_EXTRA_TOKENS) must be "
                    "at least 16 characters"
                )
        for arn in self.sns_topic_arns:
            if not re.match(SNS_TOPIC_ARN_PATTERN, arn):
                raise ValueError(f"QUENCH_SNS_TOPIC_ARNS: {arn!r} is not an SNS topic ARN")
        topic = self.notify_sns_topic_arn
        if topic is not None and not re.match(SNS_TOPIC_ARN_PATTERN, topic):
            raise ValueError(f"QUENCH_NOTIFY_SNS_TOPIC_ARN: {topic!r} is not an SNS topic ARN")
        if self.notify_webhook_url is not None:
            _check_webhook_url(self.notify_webhook_url.get_secret_value())
        if self.lab_faults and not self.lab:
            # The endpoint does not matter: faulted calls are answered inside the worker
            # and reach no endpoint, real or not. What must never run with them is a
            # worker that protects a real account, and QUENCH_LAB is what says it does not.
            raise ValueError(
                "QUENCH_LAB_FAULTS makes the worker's own AWS calls fail; "
                "it is for the lab only (QUENCH_LAB=true)"
            )
        self._check_payload_encryption()
        if self.prometheus_bind is not None and not re.fullmatch(
            r"[^\s:]*:\d{1,5}", self.prometheus_bind
        ):
            raise ValueError(
                f"QUENCH_PROMETHEUS_BIND is host:port (e.g. 0.0.0.0:9464), not "
                f"{self.prometheus_bind!r}"
            )
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            raise ValueError(
                "QUENCH_TEMPORAL_TLS_CERT and QUENCH_TEMPORAL_TLS_KEY go together: the client "
                "certificate and its private key"
            )
        for variable, path in (
            ("QUENCH_TEMPORAL_TLS_CERT", self.temporal_tls_cert),
            ("QUENCH_TEMPORAL_TLS_KEY", self.temporal_tls_key),
        ):
            if path is not None and not path.is_file():
                raise ValueError(f"{variable}: no such file {path}")
        if self.lab_log_calls and not self.lab:
            raise ValueError("QUENCH_LAB_LOG_CALLS is for the lab only (QUENCH_LAB=true)")
        if self.accounts_file is not None and self.account_id is not None:
            raise ValueError(
                "QUENCH_ACCOUNT_ID and QUENCH_ACCOUNTS_FILE both name the managed accounts; "
                "list the worker's own account in the file instead"
            )
        try:
            self._managed = self._read_accounts()
        except AccountsError as exc:
            raise ValueError(str(exc)) from None
        if self.cloudtrail_source != "lookup":
            # The QUENCH_CLOUDTRAIL_* bucket or table is the worker's own account's: another
            # account's records are not there, and its watch would read nothing.
            lacking = [
                a.id
                for a in self._managed.values()
                if a.cloudtrail is None and not a.own_credentials
            ]
            if lacking:
                raise ValueError(
                    f"QUENCH_ACCOUNTS_FILE: account {', '.join(lacking)} names no cloudtrail "
                    "source, and QUENCH_CLOUDTRAIL_* reads the worker's own account's trail: "
                    "give it one, or one in [defaults]"
                )
        # Each account's case policy is made now, so a bad one stops the process at start
        # rather than failing the intake of that account's findings.
        for account_id in [None, *self._managed]:
            try:
                self.case_policy(account_id)
            except ValidationError as exc:
                where = f"account {account_id}'s" if account_id else "the"
                problems = "; ".join(
                    str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()
                )
                raise ValueError(f"{where} case policy: {problems}") from None
        return self

    def _check_payload_encryption(self) -> None:
        if self.payload_keys is None:
            if self.payload_key_id is not None:
                raise ValueError(
                    "QUENCH_PAYLOAD_KEY_ID names a key, but QUENCH_PAYLOAD_KEYS is unset"
                )
        else:
            if self.encrypt_payloads is False:
                raise ValueError(
                    "QUENCH_ENCRYPT_PAYLOADS is false but QUENCH_PAYLOAD_KEYS is set: unset one"
                )
            try:
                keys = parse_keys(self.payload_keys.get_secret_value())
            except CodecKeyError as exc:
                raise ValueError(f"QUENCH_PAYLOAD_KEYS: {exc}") from None
            if self.payload_key_id is None and len(keys) > 1:
                raise ValueError(
                    "QUENCH_PAYLOAD_KEY_ID must name the key that encrypts, among the "
                    f"{len(keys)} of QUENCH_PAYLOAD_KEYS: {', '.join(keys)}"
                )
            if self.payload_key_id is not None and self.payload_key_id not in keys:
                raise ValueError(
                    f"QUENCH_PAYLOAD_KEY_ID {self.payload_key_id!r} is not a key of "
                    f"QUENCH_PAYLOAD_KEYS ({', '.join(keys)})"
                )
        if self.codec_token is not None:
            try:
                check_token(self.codec_token.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"QUENCH_CODEC_TOKEN: {exc}") from None

    def payload_codec(self) -> AesGcmCodec | None:
        """The codec every Temporal client of this process uses; None with no keys."""
        if self.payload_keys is None:
            return None
        keys = parse_keys(self.payload_keys.get_secret_value())
        return AesGcmCodec(keys, self.payload_key_id or next(iter(keys)))

    def require_payload_encryption(self) -> None:
        """The worker and the webhook, which write cases, refuse to write them in clear
        outside the lab unless told to (ValueError saying how)."""
        wanted = self.encrypt_payloads if self.encrypt_payloads is not None else not self.lab
        if wanted and self.payload_keys is None:
            raise ValueError(
                "payloads are encrypted outside the lab: set QUENCH_PAYLOAD_KEYS (`quench "
                "keygen` makes a key), or QUENCH_ENCRYPT_PAYLOADS=false to store cases in clear"
            )

    @property
    def codec_endpoint(self) -> str:
        """Where the `temporal` CLI reaches the codec server (`--codec-endpoint`)."""
        return (self.codec_url or f"http://{self.codec_host}:{self.codec_port}").rstrip("/")

    @property
    def codec_origin(self) -> str:
        """The one browser origin the codec server answers: the Web UI's."""
        url = urlsplit(self.codec_ui_origin or self.temporal_ui_url)
        return f"{url.scheme}://{url.netloc}"

    def _read_accounts(self) -> dict[str, Account]:
        if self.accounts_file is not None:
            accounts, self._organization = load_accounts(self.accounts_file)
            return {account.id: account for account in accounts}
        own = self.account_id or (LAB_ACCOUNT_ID if self.lab else None)
        # One account, acted in with the worker's own credentials and the QUENCH_* settings.
        return {own: Account(id=own, own_credentials=True)} if own else {}

    @property
    def managed_accounts(self) -> dict[str, Account]:
        """Every account Quench acts in, by id."""
        return self._managed

    @property
    def organization(self) -> Organization | None:
        """The organisation Quench may quarantine member accounts of (QUENCH_ACCOUNTS_FILE)."""
        return self._organization

    def quarantine_policy(self, account_id: str) -> QuarantinePolicy | None:
        """Where a case in this account may quarantine it: never the account that
        administers the policies (a management account is beyond any SCP)."""
        org, account = self._organization, self._managed.get(account_id)
        if org is None or account is None or account_id == org.policy_account:
            return None
        protected = [*self.protected_names, *account.protected_names]
        exempt = principal_arns(account_id, protected)
        if role := account.role():
            exempt.append(role)
        return QuarantinePolicy(
            organization_id=org.id, policy_account=org.policy_account, exempt=exempt
        )

    def unmanaged_because(self, account_id: str) -> str | None:
        """Why a finding of this account is not acted on, or None when it is managed."""
        if account_id in self._managed:
            return None
        if not self._managed:
            return (
                f"account {account_id} is not managed: no account is "
                "(set QUENCH_ACCOUNT_ID or QUENCH_ACCOUNTS_FILE)"
            )
        where = self.accounts_file or "QUENCH_ACCOUNT_ID"
        return f"account {account_id} is not managed by this Quench (not in {where})"

    def case_policy(self, account_id: str | None = None, dry_run: bool = False) -> CasePolicy:
        """The policy of a case in this account: the QUENCH_* settings, with the account's
        protected names added and its approval overrides in place of the defaults; a dry
        run when QUENCH_DRY_RUN or `dry_run` says so."""
        account = self._managed.get(account_id or "")
        protected = list(self.protected_names)
        overrides: dict[str, Any] = {}
        if account is not None:
            protected += [name for name in account.protected_names if name not in protected]
            overrides = account.approvals.model_dump(exclude_none=True)
        return CasePolicy(
            watch_seconds=self.watch_seconds,
            check_every_seconds=self.check_every_seconds,
            delivery_lag_seconds=self.delivery_lag_seconds,
            compromise_margin_seconds=self.compromise_margin_seconds,
            protected_names=protected,
            max_eradication_rounds=self.max_eradication_rounds,
            restore_lookback_seconds=self.restore_lookback_seconds,
            # An account's approvers replace the defaults kind by kind, not as a whole.
            approvers={**self.approvers, **overrides.get("approvers", {})},
            two_person=overrides.get("two_person_actions", self.two_person_actions),
            approval_deadline_seconds=overrides.get(
                "approval_deadline_seconds", self.approval_deadline_seconds
            ),
            approval_deadlines=self.approval_deadlines,
            auto_contain_min_severity=overrides.get(
                "auto_contain_min_severity", self.auto_contain_min_severity
            ),
            without_approval=overrides.get("no_approval_actions", self.no_approval_actions),
            quarantine=self.quarantine_policy(account_id) if account_id else None,
            dry_run=self.dry_run or dry_run,
            approver_keys=self.approver_keys,
            scan_task_queue=self.scan_task_queue,
        )

    @property
    def case_url_base(self) -> str:
        """Where the Web UI shows a case, but for its id."""
        ui = self.temporal_ui_url.rstrip("/")
        return f"{ui}/namespaces/{self.temporal_namespace}/workflows"

    @cached_property
    def trail_regions(self) -> list[str]:
        return self.cloudtrail_regions or [self.aws_region]

    def webhook_tokens(self) -> list[str]:
        """Accepted webhook tokens; the lab falls back to its published token."""
        return self._configured_tokens() or ([LAB_WEBHOOK_TOKEN] if self.lab else [])

    def _configured_tokens(self) -> list[str]:
        tokens = [self.webhook_token, *self.webhook_extra_tokens]
        return [t.get_secret_value() for t in tokens if t is not None]

    def require_aws_targets(self) -> None:
        """The worker cannot run a case without somewhere to put evidence and logs to read."""
        required = [("QUENCH_EVIDENCE_BUCKET", self.evidence_bucket)]
        # The QUENCH_CLOUDTRAIL_* source serves every account that names none of its own.
        accounts = self._managed.values()
        default_trail = not accounts or any(account.cloudtrail is None for account in accounts)
        if default_trail and self.cloudtrail_source == "s3":
            required.append(("QUENCH_CLOUDTRAIL_BUCKET", self.cloudtrail_bucket))
        if default_trail and self.cloudtrail_source == "athena":
            required.append(("QUENCH_ATHENA_DATABASE", self.athena_database))
            required.append(("QUENCH_ATHENA_TABLE", self.athena_table))
            required.append(("QUENCH_ATHENA_OUTPUT_LOCATION", self.athena_output_location))
        missing = [name for name, value in required if not value]
        if not self._managed:
            missing.append("QUENCH_ACCOUNT_ID (or QUENCH_ACCOUNTS_FILE)")
        if missing:
            raise ValueError(f"missing required settings: {', '.join(missing)}")


def _check_webhook_url(url: str) -> None:
    """HTTPS, or plain HTTP to this machine only; the message names no part of the URL,
    which holds the chat tool's credential."""
    parts = urlsplit(url)
    local = parts.hostname in {"127.0.0.1", "localhost", "::1"}
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and local)):
        raise ValueError(
            "QUENCH_NOTIFY_WEBHOOK_URL must be an https:// URL (http:// only to localhost)"
        )


def settings_problem(exc: ValidationError | SettingsError) -> str:
    """What is wrong with the settings, on one line naming each variable at fault (never
    its value: some are secrets), for a person to read instead of pydantic's report."""
    if isinstance(exc, SettingsError):
        # pydantic-settings could not decode a value (a JSON list that is not JSON).
        return str(exc)
    problems = []
    for error in exc.errors():
        message = str(error["ctx"]["error"]) if "error" in error.get("ctx", {}) else error["msg"]
        loc = error["loc"]
        variable = f"QUENCH_{str(loc[0]).upper()}" if loc else ""
        if variable and not message.startswith(variable):
            message = f"{variable}: {message}"
        problems.append(message)
    return "; ".join(problems)


def settings_or_exit(process: str) -> Settings:
    """The settings a process starts with, or SystemExit saying on one line what is wrong."""
    try:
        return Settings()
    except (ValidationError, SettingsError) as exc:
        raise SystemExit(f"{process} not started: {settings_problem(exc)}") from None
