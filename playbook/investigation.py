"""The investigation's computations, on CloudTrail records: a session timeline for every
credential, call volume per hour against the principal's baseline, and what is new.

Pure functions of the records, so the answers can be checked on hand-made records. Times are
UTC throughout. An hour is "above baseline" when it holds more calls than the principal made
in an average hour of the baseline window (45 days before the scope unless told otherwise).
"""

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from models.finding import Finding
from models.investigation import (
    Baseline,
    BaselineCounts,
    CredentialEvent,
    CredentialSession,
    FindingSighting,
    HourVolume,
    IncreasedCall,
    Investigation,
    NewBehaviour,
)

BASELINE_DAYS = 45
# An API call the principal made in the baseline counts as increased when the scope window
# makes it at least this many times as often an hour (and at least twice).
INCREASE_FACTOR = 2.0
HOUR = timedelta(hours=1)

Record = dict[str, Any]


def event_time(record: Record) -> datetime:
    return datetime.fromisoformat(str(record["eventTime"]).replace("Z", "+00:00")).astimezone(UTC)


def api_name(record: Record) -> str:
    return f"{record.get('eventSource', '')}:{record.get('eventName', '')}"


def failed(record: Record) -> bool:
    return bool(record.get("errorCode"))


def access_key(record: Record) -> str:
    return str(record.get("userIdentity", {}).get("accessKeyId") or "")


def by_principal(record: Record, principal_arn: str) -> bool:
    """Made by this user, or by any session of this role (its sessions' issuer)."""
    identity = record.get("userIdentity", {})
    if identity.get("arn") == principal_arn:
        return True
    issuer = identity.get("sessionContext", {}).get("sessionIssuer", {})
    return bool(issuer.get("arn") == principal_arn)


def permissions(snapshot: dict[str, Any]) -> list[str]:
    """What a user or role could do, one line a policy, from its evidence snapshot (as
    capture_role_state and capture_user_state write it)."""
    lines = []
    for policy in snapshot.get("inline_policies", []):
        lines.append(f"inline {policy['name']}: {_statements(policy.get('document'))}")
    for attached in snapshot.get("attached_policies", []):
        meta = attached.get("policy", {})
        lines.append(
            f"managed {meta.get('PolicyName', '?')} ({meta.get('Arn', '?')}): "
            f"{_statements(attached.get('document'))}"
        )
    for group in snapshot.get("groups", []):
        lines.append(f"group {group.get('GroupName', '?')}: its policies apply too")
    return lines


def _statements(document: Any) -> str:
    """A policy's statements in one line: Allow s3:GetObject on arn:..., Deny * on *."""
    if isinstance(document, str):
        return "document not parsed"
    statements = (document or {}).get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    said = []
    for statement in statements:
        actions = statement.get("Action", statement.get("NotAction", "-"))
        resources = statement.get("Resource", statement.get("NotResource", "-"))
        said.append(f"{statement.get('Effect', '?')} {_joined(actions)} on {_joined(resources)}")
    return "; ".join(said) or "no statements"


def _joined(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def investigate(
    *,
    account_id: str,
    principal_arn: str,
    credentials: list[str],
    findings: Iterable[Finding],
    permissions: list[str],
    scope_start: datetime,
    scope_end: datetime,
    scope_records: list[Record],
    baseline_counts: BaselineCounts,
    baseline_days: int = BASELINE_DAYS,
) -> Investigation:
    """The investigation of one case: `scope_records` are the calls of the principal and of
    the case's credentials from `scope_start` to `scope_end`, and any calls (by anyone)
    that name one of the credentials; `baseline_counts` count the principal's calls in the
    `baseline_days` before `scope_start`. Volumes and new behaviour are of the principal's
    and the credentials' own calls."""
    baseline_start = scope_start - timedelta(days=baseline_days)
    window = [r for r in scope_records if scope_start <= event_time(r) <= scope_end]
    keys = frozenset(credentials)
    scope = [r for r in window if access_key(r) in keys or by_principal(r, principal_arn)]
    baseline = _baseline(baseline_counts, baseline_start, scope_start)
    sightings = sorted(
        (
            FindingSighting(
                id=f.id,
                type=f.type,
                severity=f.severity,
                first_seen=f.first_seen,
                last_seen=f.last_seen,
                count=f.count,
            )
            for f in findings
        ),
        key=lambda s: (s.first_seen, s.id),
    )
    return Investigation(
        account_id=account_id,
        principal_arn=principal_arn,
        scope_start=scope_start,
        scope_end=scope_end,
        sessions=[_session(key, scope) for key in credentials],
        credential_events=[e for r in window for e in credential_events(r, keys)],
        findings=sightings,
        findings_first_seen=min((s.first_seen for s in sightings), default=None),
        findings_last_seen=max((s.last_seen for s in sightings), default=None),
        permissions=sorted(permissions),
        hours=_hours(scope, scope_start, scope_end, baseline.hourly_average),
        baseline=baseline,
        new_behaviour=_new_behaviour(
            scope,
            baseline_counts,
            sightings_ips(findings),
            _hours_between(scope_start, scope_end),
            baseline,
        ),
    )


def credential_events(record: Record, keys: frozenset[str]) -> list[CredentialEvent]:
    """The call as an event of each credential it names in its requestParameters or
    responseElements (a CreateAccessKey's new key, an UpdateAccessKey's key...)."""
    request, response = record.get("requestParameters"), record.get("responseElements")
    named = sorted(_strings(request, keys) | _strings(response, keys))
    if not named:
        return []
    identity = record.get("userIdentity") or {}
    # UpdateAccessKey asks for a status; CreateAccessKey answers with the new key's.
    status = (request or {}).get("status") if isinstance(request, dict) else None
    if status is None and isinstance(response, dict):
        status = (response.get("accessKey") or {}).get("status")
    return [
        CredentialEvent(
            at=event_time(record),
            access_key_id=key,
            api=api_name(record),
            caller=str(identity.get("arn") or identity.get("type") or "unknown"),
            caller_key=access_key(record),
            source_ip=str(record.get("sourceIPAddress", "")),
            error_code=record.get("errorCode"),
            status=str(status) if status is not None else None,
        )
        for key in named
    ]


def _strings(value: Any, wanted: frozenset[str]) -> set[str]:
    """Which of `wanted` the value holds as a string, at any depth."""
    if isinstance(value, str):
        return {value} & wanted
    if isinstance(value, dict):
        return set().union(*(_strings(v, wanted) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_strings(v, wanted) for v in value))
    return set()


def sightings_ips(findings: Iterable[Finding]) -> dict[str, tuple[str | None, str | None]]:
    """The caller addresses the findings name, with their country and AS organisation."""
    located: dict[str, tuple[str | None, str | None]] = {}
    for finding in findings:
        remote = finding.api_call.remote_ip if finding.api_call else None
        if remote and remote.ip_address:
            located[remote.ip_address] = (remote.country, remote.as_org)
    return located


def _hours_between(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds() / 3600, 1.0)


def _session(key: str, records: list[Record]) -> CredentialSession:
    mine = [r for r in records if access_key(r) == key]
    times = [event_time(r) for r in mine]
    return CredentialSession(
        access_key_id=key,
        first_observed=min(times, default=None),
        last_observed=max(times, default=None),
        calls=len(mine),
        failed=sum(failed(r) for r in mine),
        source_ips=sorted({str(r.get("sourceIPAddress", "")) for r in mine}),
    )


def count_baseline(counts: BaselineCounts, records: Iterable[Record]) -> BaselineCounts:
    """The counts with these records added (the caller keeps them to the window)."""
    records = list(records)
    these = BaselineCounts(
        calls=len(records),
        failed=sum(failed(r) for r in records),
        api_calls=Counter(api_name(r) for r in records),
        user_agents=[str(r["userAgent"]) for r in records if r.get("userAgent")],
        source_ips=[str(r["sourceIPAddress"]) for r in records if r.get("sourceIPAddress")],
    )
    return merge_counts([counts, these])


def merge_counts(parts: Iterable[BaselineCounts]) -> BaselineCounts:
    """The counts of several parts of the baseline (regions, days) as one."""
    apis: Counter[str] = Counter()
    agents: set[str] = set()
    ips: set[str] = set()
    calls = failures = 0
    for part in parts:
        calls, failures = calls + part.calls, failures + part.failed
        apis.update(part.api_calls)
        agents.update(part.user_agents)
        ips.update(part.source_ips)
    return BaselineCounts(
        calls=calls,
        failed=failures,
        api_calls=dict(sorted(apis.items())),
        user_agents=sorted(agents),
        source_ips=sorted(ips),
    )


def _baseline(counts: BaselineCounts, start: datetime, end: datetime) -> Baseline:
    hours = _hours_between(start, end)
    return Baseline(
        start=start,
        end=end,
        calls=counts.calls,
        failed=counts.failed,
        hourly_average=counts.calls / hours,
        failed_hourly_average=counts.failed / hours,
    )


def _hours(
    records: list[Record], start: datetime, end: datetime, average: float
) -> list[HourVolume]:
    """Every hour of the window, empty ones too, so a chart's axis has no holes."""
    grouped: dict[datetime, list[Record]] = {}
    for record in records:
        grouped.setdefault(hour_of(event_time(record)), []).append(record)
    hours = []
    hour = hour_of(start)
    while hour <= end:
        held = grouped.get(hour, [])
        fails = sum(failed(r) for r in held)
        hours.append(
            HourVolume(
                hour=hour,
                successful=len(held) - fails,
                failed=fails,
                above_baseline=len(held) > average,
                by_source_ip=_counted(str(r.get("sourceIPAddress", "")) for r in held),
                by_api=_counted(api_name(r) for r in held),
                by_access_key=_counted(access_key(r) for r in held),
            )
        )
        hour += HOUR
    return hours


def _counted(values: Iterable[str]) -> dict[str, int]:
    """Most frequent first; ties in name order, so the same records give the same dict."""
    counts = Counter(values)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _new_behaviour(
    scope: list[Record],
    before: BaselineCounts,
    located: dict[str, tuple[str | None, str | None]],
    scope_hours: float,
    baseline: Baseline,
) -> NewBehaviour:
    def seen(field: str) -> set[str]:
        return {str(r.get(field, "")) for r in scope if r.get(field)}

    old_ips = set(before.source_ips)
    new_ips = sorted(seen("sourceIPAddress") - old_ips)
    places = [located[ip] for ip in new_ips if ip in located]
    places += [place for ip, place in located.items() if ip not in old_ips and ip not in new_ips]
    scope_apis, baseline_apis = Counter(map(api_name, scope)), before.api_calls
    baseline_hours = _hours_between(baseline.start, baseline.end)
    increased = [
        IncreasedCall(
            api=api,
            scope_per_hour=count / scope_hours,
            baseline_per_hour=baseline_apis[api] / baseline_hours,
        )
        for api, count in scope_apis.items()
        if baseline_apis.get(api)
        and count >= 2
        and count / scope_hours >= INCREASE_FACTOR * baseline_apis[api] / baseline_hours
    ]
    return NewBehaviour(
        api_calls=sorted(set(scope_apis) - set(baseline_apis)),
        user_agents=sorted(seen("userAgent") - set(before.user_agents)),
        source_ips=new_ips,
        countries=sorted({country for country, _ in places if country}),
        as_organizations=sorted({org for _, org in places if org}),
        increased_api_calls=sorted(
            increased, key=lambda c: (-c.scope_per_hour / c.baseline_per_hour, c.api)
        ),
    )


def markdown_section(investigation: Investigation, chart_file: str | None) -> list[str]:
    """The report's investigation section: tables, and the chart beside the report."""
    inv, base = investigation, investigation.baseline

    def cell(value: object) -> str:
        return str(value if value not in (None, "") else "-").replace("|", "\\|")

    def when(moment: datetime | None) -> str:
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"

    def top(counts: dict[str, int]) -> str:
        return ", ".join(f"{name} ({count})" for name, count in list(counts.items())[:3])

    lines = [
        "## Investigation (from CloudTrail)",
        "",
        f"Principal `{inv.principal_arn}` in account {inv.account_id}; scope "
        f"{when(inv.scope_start)} to {when(inv.scope_end)}; findings first seen "
        f"{when(inv.findings_first_seen)}, last seen {when(inv.findings_last_seen)}.",
        "",
        "### Session timeline",
        "",
        "| Credential | First observed | Last observed | Calls | Failed | Source IPs |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{s.access_key_id}` | {when(s.first_observed)} | {when(s.last_observed)} | "
        f"{s.calls} | {s.failed} | {cell(', '.join(s.source_ips))} |"
        for s in inv.sessions
    ]
    if inv.credential_events:
        lines += [
            "",
            "Calls that name a credential (minted, changed or deleted it):",
            "",
            "| Time | Credential | Call | Caller | With key | Source IP | Status |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {when(e.at)} | `{e.access_key_id}` | {cell(e.api)} | {cell(e.caller)} | "
            f"{cell(e.caller_key)} | {cell(e.source_ip)} | "
            f"{cell(f'failed: {e.error_code}' if e.error_code else e.status)} |"
            for e in inv.credential_events
        ]
    lines += ["", "### Permissions (from the evidence snapshot)", ""]
    lines += [f"- {cell(p)}" for p in inv.permissions] or ["- none recorded"]
    lines += [
        "",
        "### Findings, in the order observed",
        "",
        "| First seen | Last seen | Type | Severity | Count | Finding |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {when(f.first_seen)} | {when(f.last_seen)} | {cell(f.type)} | {f.severity} | "
        f"{f.count} | `{f.id}` |"
        for f in inv.findings
    ]
    lines += [
        "",
        "### API call volume",
        "",
        f"Baseline: {base.calls} calls ({base.failed} failed) from {when(base.start)} to "
        f"{when(base.end)}, {base.hourly_average:.2f} an hour. An hour is above baseline when "
        "it holds more calls than that.",
        "",
    ]
    if chart_file:
        lines += [f"![API calls an hour against the baseline]({chart_file})", ""]
    above = inv.hours_above_baseline()
    lines += [
        f"{len(above)} of {len(inv.hours)} hours above baseline:",
        "",
        "| Hour (UTC) | Successful | Failed | Source IPs | API calls | Access keys |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {when(h.hour)} | {h.successful} | {h.failed} | {cell(top(h.by_source_ip))} | "
        f"{cell(top(h.by_api))} | {cell(top(h.by_access_key))} |"
        for h in above
    ]
    new = inv.new_behaviour
    lines += ["", "### New behaviour (not seen in the baseline)", ""]
    for label, values in (
        ("API calls", new.api_calls),
        ("User agents", new.user_agents),
        ("Source IPs", new.source_ips),
        ("Countries", new.countries),
        ("AS organisations", new.as_organizations),
    ):
        lines.append(f"- {label}: {cell(', '.join(values)) if values else 'none'}")
    if new.increased_api_calls:
        lines += ["", "| API call | An hour now | An hour in the baseline |", "|---|---|---|"]
        lines += [
            f"| {cell(c.api)} | {c.scope_per_hour:.2f} | {c.baseline_per_hour:.3f} |"
            for c in new.increased_api_calls
        ]
    else:
        lines.append("- API calls with increased volume: none")
    return lines
