"""The post-incident report (playbook 5): JSON and Markdown in the evidence bucket,
written whatever the case's outcome."""

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.ec2 import Ec2Activities
    from activities.evidence import EvidenceActivities
    from models.activities import ListCaseSnapshotsInput, WriteReportInput
    from models.case import CaseReportRef
    from workflows.case.approvals import Approvals, CaseAbandoned
    from workflows.case.patches import REPORT_SNAPSHOTS_PATCH
    from workflows.case.record import CaseRecord
    from workflows.case.retries import AWS_RETRY, HEARTBEAT_TIMEOUT


async def write_report(record: CaseRecord, approvals: Approvals) -> None:
    """The report, JSON and Markdown; a report nobody agreed to retry is noted instead."""
    credential = record.status.credential
    if credential and credential.principal.instance_id and workflow.patched(REPORT_SNAPSHOTS_PATCH):
        await _find_snapshots(record, approvals)
    try:
        written = await approvals.attempt(
            "write the post-incident report",
            lambda: workflow.execute_activity_method(
                EvidenceActivities.write_report,
                WriteReportInput(status=record.status, written_at=workflow.now()),
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=AWS_RETRY,
                summary="Write the post-incident report",
            ),
        )
    except CaseAbandoned as abandoned:
        record.note(f"no post-incident report: {abandoned}")
        return
    record.status.report = CaseReportRef(
        json_report=written.json_report, markdown_report=written.markdown_report
    )
    record.note(
        f"post-incident report {written.markdown_report.uri} "
        f"sha256={written.markdown_report.sha256}"
    )
    record.refresh()


async def _find_snapshots(record: CaseRecord, approvals: Approvals) -> None:
    """The EBS snapshots tagged with the case's evidence folder, for the report to name;
    without them the report is still written, and the timeline says why they are missing."""
    found, failure = await approvals.attempt_or_fail(
        "list the case's EBS snapshots",
        lambda: workflow.execute_activity_method(
            Ec2Activities.list_case_snapshots,
            record.in_account(ListCaseSnapshotsInput()),
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=AWS_RETRY,
            summary="The EBS snapshots kept for the case, for its report",
        ),
    )
    if found is None:
        record.note(f"the report names no EBS snapshot: {failure}")
        return
    record.status.snapshots = found.snapshots
