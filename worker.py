"""The Quench worker: runs case workflows and every AWS activity on the case task queue."""

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Interceptor, Worker

from activities.athena import AthenaSource
from activities.aws import AwsClients
from activities.cloudtrail import (
    CloudTrailActivities,
    CloudTrailS3Source,
    CloudTrailSource,
    LookupEventsSource,
)
from activities.ec2 import Ec2Activities
from activities.eradication import EradicationActivities
from activities.evidence import EvidenceActivities, EvidenceStore
from activities.faults import FaultInjector
from activities.iam import IamActivities
from activities.investigation import InvestigationActivities
from activities.notify import Notifier
from activities.permissions import calls_log
from activities.recovery import RecoveryActivities
from activities.ssm import SsmActivities
from config.settings import Settings
from config.temporal import connect, setup_tracing
from workflows.case import CaseWorkflow
from workflows.investigation import InvestigationWorkflow

# The case, and its investigation as a child with a history of its own.
WORKFLOWS = [CaseWorkflow, InvestigationWorkflow]
STICKY_TIMEOUT = timedelta(seconds=3)


def build_activities(
    settings: Settings, clients: AwsClients, poll_seconds: float = 5.0
) -> list[Callable[..., Any]]:
    """Every activity, bound to the AWS clients it acts with."""
    settings.require_aws_targets()
    assert settings.evidence_bucket
    evidence = EvidenceStore(clients, settings.evidence_bucket)
    trail: CloudTrailSource
    if settings.cloudtrail_source == "lookup":
        trail = LookupEventsSource(clients, settings.trail_regions)
    elif settings.cloudtrail_source == "athena":
        assert settings.athena_database and settings.athena_table
        assert settings.athena_output_location
        trail = AthenaSource(
            clients,
            settings.athena_database,
            settings.athena_table,
            settings.athena_workgroup,
            settings.athena_output_location,
            settings.trail_regions,
            bucket=settings.cloudtrail_bucket,
            prefix=settings.cloudtrail_prefix,
        )
    else:
        assert settings.cloudtrail_bucket
        trail = CloudTrailS3Source(
            clients, settings.cloudtrail_bucket, settings.cloudtrail_prefix, settings.trail_regions
        )
    cloudtrail = CloudTrailActivities(trail, evidence)
    eradication = EradicationActivities(clients, evidence)
    iam = IamActivities(clients, evidence)
    ec2 = Ec2Activities(clients, evidence, poll_seconds=poll_seconds)
    ssm = SsmActivities(clients, poll_seconds=min(poll_seconds, 2.0))
    recovery = RecoveryActivities(clients, evidence, trail)
    evidence_activities = EvidenceActivities(evidence)
    investigation = InvestigationActivities(trail, evidence)
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
        notifier.notify_sns,
        notifier.notify_chat,
    ]


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


def build_worker(
    client: Client,
    settings: Settings,
    clients: AwsClients,
    poll_seconds: float = 5.0,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=build_activities(settings, clients, poll_seconds),
        activity_executor=ThreadPoolExecutor(max_workers=16),
        interceptors=interceptors,
        # A case's next workflow task waits this long for a worker that died before it goes
        # to any worker (which replays the history): the 10 s default cost a chaos kill 17 s.
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
    )


async def main(interceptors: Sequence[Interceptor] = ()) -> None:
    """Run the worker until SIGINT or SIGTERM; `interceptors` are the chaos run's."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings()
    setup_tracing("quench-worker")
    client = await connect(settings)
    worker = build_worker(client, settings, aws_clients(settings), interceptors=interceptors)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        logging.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
        await stop.wait()
    logging.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
