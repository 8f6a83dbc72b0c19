"""The Quench worker: case workflows and every AWS activity on the case task queue, and
CloudTrail's long reads (each round's classification, the investigation) on the scan task
queue; one process serves either queue or both (`quench worker --queue`)."""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError
from pydantic_settings import SettingsError
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.accounts import AccountClients, ActInCaseAccount, unassumed_elsewhere
from activities.athena import AthenaSource
from activities.aws import AwsClients
from activities.cloudtrail import (
    CloudTrailActivities,
    CloudTrailS3Source,
    CloudTrailSource,
    LookupEventsSource,
    TrailSourceByAccount,
)
from activities.ec2 import Ec2Activities
from activities.eradication import EradicationActivities
from activities.evidence import EvidenceActivities, EvidenceStore
from activities.faults import FaultInjector
from activities.hands_off import QuenchIdentity
from activities.iam import IamActivities
from activities.investigation import InvestigationActivities
from activities.notify import Notifier
from activities.organizations import OrganizationActivities
from activities.permissions import calls_log
from activities.recovery import RecoveryActivities
from activities.ssm import SsmActivities
from cli.queries import CaseFilter, build_query
from config.accounts import TrailSource
from config.settings import Settings, settings_problem
from config.telemetry import instrument_aws_calls, setup_logging, setup_tracing
from config.temporal import connect, metrics_runtime, search_attributes_wanting
from models.case import Phase
from workflows.case import CaseWorkflow
from workflows.investigation import InvestigationWorkflow

# The case, and its investigation as a child with a history of its own.
WORKFLOWS = [CaseWorkflow, InvestigationWorkflow]
QUEUES = ("cases", "scans")
# Activities each queue runs at once in a worker: containment's many short calls; the
# scans' few long reads (each reads several regions in threads of its own).
CASE_ACTIVITY_THREADS = 16
SCAN_ACTIVITY_THREADS = 8
# What the scan queue runs: the reads that take minutes to hours in a busy account.
SCAN_WORKFLOWS = [InvestigationWorkflow]
SCAN_ACTIVITIES = {
    "classify_credential_activity",
    "plan_reads",
    "count_baseline",
    "read_scope",
    "investigate_credentials",
}
STICKY_TIMEOUT = timedelta(seconds=3)
# The sandbox with every module passed through: its checks on what workflow code calls
# (time, randomness, I/O) still hold, but no module is imported again for each case. The
# case's own modules are passed through already; re-importing the rest costs every new
# case tens of milliseconds of CPU, which findings arriving together wait on in turn
# (measured by benchmarks/sandbox_first_task.py: README, "Time to contain").
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
)
GRACEFUL_SHUTDOWN = timedelta(seconds=30)


def build_activities(
    settings: Settings, clients: AwsClients, poll_seconds: float = 5.0
) -> list[Callable[..., Any]]:
    """Every activity, bound to the AWS clients it acts with: the worker's own for the
    evidence and notifications, the case's account's for everything else."""
    settings.require_aws_targets()
    assert settings.evidence_bucket
    evidence = EvidenceStore(clients, settings.evidence_bucket)
    in_account = AccountClients(clients, settings.managed_accounts)
    trail = TrailSourceByAccount(
        {
            account.id: _trail_source(account.cloudtrail, clients, in_account, settings)
            for account in settings.managed_accounts.values()
            if account.cloudtrail is not None
        },
        _default_trail_source(settings, clients, in_account),
    )
    cloudtrail = CloudTrailActivities(trail, evidence)
    eradication = EradicationActivities(in_account, evidence)
    iam = IamActivities(in_account, evidence)
    ec2 = Ec2Activities(in_account, evidence, poll_seconds=poll_seconds)
    ssm = SsmActivities(in_account, poll_seconds=min(poll_seconds, 2.0))
    recovery = RecoveryActivities(in_account, evidence, trail)
    evidence_activities = EvidenceActivities(evidence)
    investigation = InvestigationActivities(trail, evidence)
    # The quarantine acts in the organisation's policy account, through the role there.
    org = settings.organization
    policies = {org.policy_account: org.policy_administrator()} if org else {}
    organizations = OrganizationActivities(AccountClients(clients, policies))
    notifier = Notifier(
        clients,
        settings.notify_sns_topic_arn,
        settings.notify_webhook_url,
        settings.case_url_base,
    )
    return [
        evidence_activities.store_evidence,
        evidence_activities.write_report,
        iam.resolve_principal,
        iam.capture_role_state,
        iam.revoke_role_sessions,
        iam.list_role_trust,
        iam.capture_user_state,
        iam.deactivate_access_key,
        iam.deny_user_tokens_before,
        iam.deny_user_everything,
        iam.remove_login_profile,
        iam.release_change,
        iam.check_containment_in_place,
        ec2.capture_instance_state,
        ec2.snapshot_volumes,
        ec2.list_case_snapshots,
        ec2.stop_instance,
        ec2.start_instance,
        ssm.probe_instance_credentials,
        cloudtrail.capture_cloudtrail_slice,
        cloudtrail.check_credential_activity,
        cloudtrail.classify_credential_activity,
        eradication.capture_launched_resource,
        eradication.remove_resource,
        recovery.capture_trails,
        recovery.start_trails_logging,
        recovery.find_prior_state,
        recovery.plan_recovery,
        recovery.restore_change,
        investigation.plan_reads,
        investigation.count_baseline,
        investigation.read_scope,
        investigation.investigate_credentials,
        organizations.attach_quarantine,
        organizations.lift_quarantine,
        notifier.notify_sns,
        notifier.notify_chat,
    ]


def _default_trail_source(
    settings: Settings, own: AwsClients, in_account: AwsClients
) -> CloudTrailSource:
    """The QUENCH_CLOUDTRAIL_* source, for every account that names none of its own: its
    bucket and Athena table are read with the worker's own credentials (in the one account
    of a single-account setup, the same), event history and trail status in the account."""
    if settings.cloudtrail_source == "lookup":
        return LookupEventsSource(in_account, settings.trail_regions)
    if settings.cloudtrail_source == "athena":
        assert settings.athena_database and settings.athena_table
        assert settings.athena_output_location
        return AthenaSource(
            own,
            settings.athena_database,
            settings.athena_table,
            settings.athena_workgroup,
            settings.athena_output_location,
            settings.trail_regions,
            bucket=settings.cloudtrail_bucket,
            prefix=settings.cloudtrail_prefix,
        )
    # Without a bucket (every account names its own source), nothing is read from it.
    return CloudTrailS3Source(
        own,
        settings.cloudtrail_bucket or "",
        settings.cloudtrail_prefix,
        settings.trail_regions,
        trails_of=in_account,
    )


def _trail_source(
    trail: TrailSource, own: AwsClients, in_account: AwsClients, settings: Settings
) -> CloudTrailSource:
    """An account's own trail source, read with Quench's credentials or the account's."""
    regions = trail.regions or settings.trail_regions
    if trail.source == "lookup":
        return LookupEventsSource(in_account, regions)
    assert trail.bucket
    reader = own if trail.read_as == "quench" else in_account
    return CloudTrailS3Source(
        reader, trail.bucket, trail.prefix, regions, trail.organization_id, trails_of=in_account
    )


def quench_roles(settings: Settings) -> list[str]:
    """The roles Quench assumes: in each managed account, and the organisation's."""
    roles = [account.role() for account in settings.managed_accounts.values()]
    if settings.organization is not None:
        roles.append(settings.organization.policy_administrator().role())
    return [role for role in roles if role]


def aws_clients(settings: Settings) -> AwsClients:
    """The worker's AWS clients; in the lab, with QUENCH_LAB_FAULTS's faults injected and,
    with QUENCH_LAB_LOG_CALLS, a log line for each call."""
    if settings.lab_log_calls:
        calls_log.setLevel(logging.DEBUG)
    faults = None
    if settings.lab_faults:
        faults = FaultInjector(settings.lab_faults)
        logging.warning("QUENCH_LAB_FAULTS: these AWS calls fail: %s", faults.describe())
    return AwsClients.from_settings(settings, faults)


def build_workers(
    client: Client,
    settings: Settings,
    clients: AwsClients,
    poll_seconds: float = 5.0,
    interceptors: Sequence[Interceptor] = (),
    queues: Sequence[str] = QUEUES,
) -> list[Worker]:
    """A worker for each queue served. The case queue's runs everything, as cases opened
    before the scan queue existed read CloudTrail there; the scan queue's runs the reads."""
    activities = build_activities(settings, clients, poll_seconds)
    common: dict[str, Any] = {
        "interceptors": [ActInCaseAccount(), *interceptors],
        # Stopped (a deployment), a worker finishes what it holds before it cancels it.
        "graceful_shutdown_timeout": GRACEFUL_SHUTDOWN,
        # A case's next workflow task waits this long for a worker that died before it goes
        # to any worker (which replays the history): the 10 s default cost a chaos kill 17 s.
        "sticky_queue_schedule_to_start_timeout": STICKY_TIMEOUT,
        "workflow_runner": WORKFLOW_RUNNER,
    }
    workers = []
    if "cases" in queues:
        workers.append(
            Worker(
                client,
                task_queue=settings.task_queue,
                workflows=WORKFLOWS,
                activities=activities,
                **_threads(CASE_ACTIVITY_THREADS),
                **common,
            )
        )
    if "scans" in queues:
        workers.append(
            Worker(
                client,
                task_queue=settings.scan_task_queue,
                workflows=SCAN_WORKFLOWS,
                activities=[a for a in activities if _name(a) in SCAN_ACTIVITIES],
                **_threads(SCAN_ACTIVITY_THREADS),
                **common,
            )
        )
    return workers


def _threads(count: int) -> dict[str, Any]:
    """Threads of a queue's own, and no more activities taken than it has: a queue's
    activities never wait in line behind the other's (an investigation's hour-long reads
    behind a key's deactivation), and none waits for a thread while its timeout runs."""
    return {
        "activity_executor": ThreadPoolExecutor(max_workers=count),
        "max_concurrent_activities": count,
    }


def _name(activity: Callable[..., Any]) -> str:
    return getattr(activity, "__name__", "")


def build_worker(
    client: Client,
    settings: Settings,
    clients: AwsClients,
    poll_seconds: float = 5.0,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    """The case queue's worker alone (tests, benchmarks): it runs every activity."""
    (worker,) = build_workers(client, settings, clients, poll_seconds, interceptors, ["cases"])
    return worker


# How often the cases in each phase are counted from visibility, for the gauge.
COUNT_EVERY_SECONDS = 30.0


async def count_cases_by_phase(
    client: Client, runtime: Runtime, every: float = COUNT_EVERY_SECONDS
) -> None:
    """Gauges on the Prometheus endpoint, counted from visibility so they hold whatever
    the worker's restarts: quench_cases{phase} (running cases in each phase) and
    quench_cases_awaiting_approval."""
    meter = runtime.metric_meter
    by_phase = meter.create_gauge("quench_cases", "running cases, by phase")
    awaiting = meter.create_gauge(
        "quench_cases_awaiting_approval", "running cases with a decision pending"
    )
    while True:
        try:
            for phase in Phase:
                query = build_query(CaseFilter(phases=[phase], open=True))
                counted = await client.count_workflows(query)
                by_phase.with_additional_attributes({"phase": phase.value}).set(counted.count)
            counted = await client.count_workflows(
                build_query(CaseFilter(awaiting=True, open=True))
            )
            awaiting.set(counted.count)
        except RPCError as exc:
            logging.warning("cannot count cases for the metrics: %s", exc.message)
        except Exception:
            # The gauges stop changing, the worker goes on: said, and tried again.
            logging.exception("counting cases for the metrics failed")
        await asyncio.sleep(every)


async def _require_search_attributes(client: Client, namespace: str) -> None:
    """A case sets Quench's search attributes as it runs: one the namespace lacks would
    fail its workflow task until it is added, so the worker does not start without them."""
    try:
        missing, clashes = await search_attributes_wanting(client, namespace)
    except RPCError as exc:
        if exc.status not in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            raise SystemExit(
                f"worker not started: cannot read the search attributes of {namespace}: "
                f"{exc.message}"
            ) from None
        # An identity that may not read them (Temporal Cloud API keys, some authorizers):
        # whoever runs the worker has registered them by other means.
        logging.warning("cannot check the search attributes of %s: %s", namespace, exc.message)
        return
    if missing or clashes:
        wrong = [key.name for key in missing] + clashes
        raise SystemExit(
            f"worker not started: namespace {namespace} lacks Quench's search attributes "
            f"({', '.join(wrong)}): run `quench setup` with the same QUENCH_TEMPORAL_* settings"
        )


async def main(interceptors: Sequence[Interceptor] = (), queues: Sequence[str] = QUEUES) -> None:
    """Serve `queues` until SIGINT or SIGTERM; `interceptors` are the chaos run's."""
    try:
        settings = Settings()
        settings.require_aws_targets()
        settings.require_payload_encryption()
    except (ValidationError, SettingsError) as exc:
        raise SystemExit(f"worker not started: {settings_problem(exc)}") from None
    except ValueError as exc:
        raise SystemExit(f"worker not started: {exc}") from None
    setup_logging(settings.log_format)
    setup_tracing("quench-worker")
    instrument_aws_calls()
    clients = aws_clients(settings)
    try:
        clients.identity = QuenchIdentity.learn(clients, quench_roles(settings))
    except (ClientError, BotoCoreError) as exc:
        raise SystemExit(
            "worker not started: cannot tell who its own credentials are, so could not "
            f"keep from acting on itself (sts:GetCallerIdentity): {exc}"
        ) from None
    logging.info("worker acts as %s; it never contains itself", clients.identity.arn)
    wrong = unassumed_elsewhere(settings.managed_accounts, clients.identity)
    if wrong:
        raise SystemExit(f"worker not started: {'; '.join(wrong)}")
    try:
        client = await connect(settings, runtime=metrics_runtime(settings))
    except ValueError as exc:  # the Prometheus address cannot be bound
        raise SystemExit(f"worker not started: QUENCH_PROMETHEUS_BIND: {exc}") from None
    except RuntimeError as exc:  # how the client says it cannot connect
        raise SystemExit(
            f"worker not started: cannot reach Temporal at {settings.temporal_address}: {exc}"
        ) from None
    await _require_search_attributes(client, settings.temporal_namespace)
    workers = build_workers(client, settings, clients, interceptors=interceptors, queues=queues)
    runtime = client.service_client.config.runtime
    background: list[asyncio.Task[None]] = []
    if settings.prometheus_bind and runtime is not None and "cases" in queues:
        background.append(asyncio.create_task(count_cases_by_phase(client, runtime)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as running:
        for worker in workers:
            await running.enter_async_context(worker)
        served = ", ".join(worker.task_queue for worker in workers)
        logging.info("worker polling %s on %s", served, settings.temporal_address)
        await stop.wait()
    for task in background:
        task.cancel()
    logging.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
