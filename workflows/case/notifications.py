"""Telling people: every channel the worker has, a few tries each; a failure is noted on
the case and never stops it."""

import asyncio
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.notify import Notifier
    from models.activities import NotifyInput, NotifyResult
    from models.case import NotificationKind
    from workflows.case.patches import NOTIFY_PATCH
    from workflows.case.record import CaseRecord
    from workflows.case.retries import HEARTBEAT_TIMEOUT, NOTIFY_RETRY


class Notifications:
    def __init__(self, record: CaseRecord) -> None:
        self._record = record
        self._sent = 0

    def soon(self, kind: NotificationKind, subject: str, text: str) -> None:
        """Send while the case goes on: a slow or failing channel must not hold up
        containment."""
        self._record.beside(self.send(kind, subject, text))

    async def send(self, kind: NotificationKind, subject: str, text: str) -> None:
        if not workflow.patched(NOTIFY_PATCH):
            return
        self._sent += 1
        case_id = self._record.status.case_id
        notification = NotifyInput(
            case_id=case_id,
            # The same on every attempt, so a channel that deduplicates sends it once.
            notification_id=(f"{case_id}.{workflow.info().run_id[:8]}.{self._sent}")[-128:],
            kind=kind,
            subject=subject[:100],
            text=text,
        )
        results = await asyncio.gather(
            self._deliver(Notifier.notify_sns, "sns", notification),
            self._deliver(Notifier.notify_chat, "chat", notification),
        )
        self._record.note(f"notification {kind.value}: " + "; ".join(results))

    async def _deliver(
        self,
        method: Callable[[Notifier, NotifyInput], NotifyResult],
        channel: str,
        notification: NotifyInput,
    ) -> str:
        try:
            result = await workflow.execute_activity_method(
                method,
                notification,
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                schedule_to_close_timeout=timedelta(minutes=5),
                retry_policy=NOTIFY_RETRY,
                summary=f"Notify by {channel}: {notification.subject}"[:200],
            )
        except ActivityError as failure:
            cause = failure.cause
            reason = cause.message if isinstance(cause, FailureError) else failure.message
            return f"{channel} failed ({reason})"
        return f"{channel} {'sent' if result.sent else 'off'} ({result.detail})"
