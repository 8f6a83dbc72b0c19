"""Quench's worker for the chaos run (benchmarks/chaos.py): the real worker, with an
interceptor that writes each activity start to a journal and kills the worker (SIGKILL,
its own process) at activity boundaries, each boundary once.

Killing from inside is what reaches every boundary: most of a lab case's activities last
milliseconds, too short for anything watching from outside to catch them running. The
journal, one JSON line each, is how the chaos run learns where and when each kill was and
when work started again; it survives the kill because each line is synced before it.
"""

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

import worker

JOURNAL_SETTING = "CHAOS_JOURNAL"
KINDS_SETTING = "CHAOS_KILL_AT"
STARTS_SETTING = "CHAOS_STARTS_PER_TYPE"
# Where the worker dies: as an activity starts (it has done nothing yet), or once it has
# done its work and before its result reaches Temporal (so the retry does it again).
KILL_KINDS = ("start", "done")


@dataclass
class KillPlan:
    """Which boundaries still get a kill: each activity's start once (by workflow run and
    activity id), at most `starts_per_type` of each type in a workflow run (0: all), and
    the end of the first activity of each type once."""

    kinds: frozenset[str]
    starts_per_type: int = 0
    killed_starts: set[tuple[str, str, str]] = field(default_factory=set)
    starts_of_type: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    killed_done_types: set[str] = field(default_factory=set)

    @classmethod
    def from_journal(
        cls, kinds: Iterable[str], records: Iterable[dict[str, Any]], starts_per_type: int = 0
    ) -> "KillPlan":
        plan = cls(frozenset(kinds), starts_per_type)
        for record in records:
            if record.get("event") == "kill":
                plan.note(record["kind"], record)
        return plan

    def due(self, kind: str, record: dict[str, Any]) -> bool:
        if kind not in self.kinds:
            return False
        if kind == "done":
            return record["activity"] not in self.killed_done_types
        if _start_key(record) in self.killed_starts:
            return False
        return not self.starts_per_type or (
            self.starts_of_type[_type_key(record)] < self.starts_per_type
        )

    def note(self, kind: str, record: dict[str, Any]) -> None:
        if kind == "start":
            self.killed_starts.add(_start_key(record))
            self.starts_of_type[_type_key(record)] += 1
        else:
            self.killed_done_types.add(record["activity"])


def _start_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return (record["workflow_id"], record["run_id"], record["activity_id"])


def _type_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return (record["workflow_id"], record["run_id"], record["activity"])


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's records; a line cut short by the kill is left out."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class _Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record) + "\n").encode()
        with self.lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


class KillAtBoundaries(Interceptor):
    def __init__(self, journal: Path, kinds: Iterable[str], starts_per_type: int = 0) -> None:
        self.journal = _Journal(journal)
        self.plan = KillPlan.from_journal(kinds, read_journal(journal), starts_per_type)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _KillingInbound(next, self)


class _KillingInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, owner: KillAtBoundaries) -> None:
        super().__init__(next)
        self.owner = owner

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        record = {
            "workflow_id": info.workflow_id,
            "run_id": info.workflow_run_id,
            "activity_id": info.activity_id,
            "activity": info.activity_type,
            "attempt": info.attempt,
        }
        self.owner.journal.write({"event": "started", "at": time.time(), **record})
        self._kill_if_due("start", record)
        result = await self.next.execute_activity(input)
        self._kill_if_due("done", record)
        return result

    def _kill_if_due(self, kind: str, record: dict[str, Any]) -> None:
        plan = self.owner.plan
        with self.owner.journal.lock:
            if not plan.due(kind, record):
                return
            plan.note(kind, record)
        self.owner.journal.write({"event": "kill", "kind": kind, "at": time.time(), **record})
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    kinds = [k for k in os.environ.get(KINDS_SETTING, ",".join(KILL_KINDS)).split(",") if k]
    journal = Path(os.environ[JOURNAL_SETTING])
    starts = int(os.environ.get(STARTS_SETTING, "0"))
    asyncio.run(worker.main(interceptors=[KillAtBoundaries(journal, kinds, starts)]))
