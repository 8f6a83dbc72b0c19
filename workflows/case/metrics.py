"""The case's metrics, through Temporal's workflow metric meter: served with the SDK's own
on the worker's Prometheus endpoint (QUENCH_PROMETHEUS_BIND), and never emitted while a
history is replayed, so a worker restart does not count anything twice.

- quench_case_time_to_contain_seconds: from the case opening to its credential contained;
- quench_case_time_to_eradicate_seconds: from the case opening to eradication done;
- quench_approvals_requested (by kind) and quench_approvals_settled (by kind and how):
  what waits is their difference;
- quench_open_items: each open item a case raises.
The cases in each phase are counted from Temporal's visibility by the worker itself
(worker_metrics.py), as a gauge that survives restarts.
"""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from models.case import ActionStatus, CaseStatus, Phase


class CaseMetrics:
    """Watches the status at each refresh and counts what changed since the last."""

    def __init__(self, status: CaseStatus) -> None:
        self._status = status
        meter = workflow.metric_meter()
        self._to_contain = meter.create_histogram_float(
            "quench_case_time_to_contain_seconds", "case opened to credential contained", "s"
        )
        self._to_eradicate = meter.create_histogram_float(
            "quench_case_time_to_eradicate_seconds", "case opened to eradication done", "s"
        )
        self._requested = meter.create_counter(
            "quench_approvals_requested", "actions proposed for a decision"
        )
        self._settled = meter.create_counter(
            "quench_approvals_settled", "actions decided, withdrawn or run without approval"
        )
        self._open_items = meter.create_counter("quench_open_items", "open items raised")
        # What was counted already: a case continued as new starts from what it carries.
        self._pending = {a.id for a in status.actions if a.status is ActionStatus.PENDING_APPROVAL}
        self._seen = {a.id for a in status.actions}
        self._items = set(status.open_items)
        self._contained = self._reached(Phase.CONTAINED)
        self._eradicated = self._reached(Phase.RECOVERY)

    def refresh(self) -> None:
        status = self._status
        for action in status.actions:
            kind = {"kind": action.kind.value}
            if action.id not in self._seen:
                self._seen.add(action.id)
                if action.status is ActionStatus.PENDING_APPROVAL:
                    self._pending.add(action.id)
                    self._requested.with_additional_attributes(kind).add(1)
            if action.id in self._pending and action.status is not ActionStatus.PENDING_APPROVAL:
                self._pending.discard(action.id)
                settled = {**kind, "status": action.status.value}
                self._settled.with_additional_attributes(settled).add(1)
        # Items come and go (a retry that succeeds takes its item away): each new one counts.
        raised = [item for item in status.open_items if item not in self._items]
        if raised:
            self._open_items.add(len(raised))
            self._items.update(raised)
        if not self._contained and status.phase is Phase.CONTAINED:
            self._contained = True
            self._to_contain.record(self._since_opened())
        if not self._eradicated and status.phase is Phase.RECOVERY:
            self._eradicated = True
            self._to_eradicate.record(self._since_opened())

    def _reached(self, phase: Phase) -> bool:
        return any(p.phase is phase for p in self._status.phases)

    def _since_opened(self) -> float:
        opened = self._status.phases[0].at if self._status.phases else workflow.now()
        return max(0.0, (workflow.now() - opened).total_seconds())
