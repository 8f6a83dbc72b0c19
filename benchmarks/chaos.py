"""The chaos run (issue 14): a lab case's worker killed at every activity boundary.

Its Temporal server is killed once mid-case too, and the end is compared with an
undisturbed run of the same case.

Per scenario, an undisturbed case on a fresh stack gives the AWS end state to match. Then
one case on another fresh stack runs with the worker of benchmarks/chaos_worker.py, which
SIGKILLs itself as each activity starts (each activity once) and as the first activity of
each type finishes its work, before its result reaches Temporal; this script also SIGKILLs
it just after every few activities' completions are recorded, and restarts it at once each
time. When the case reaches its containment watch, the Temporal dev server is SIGKILLed and
started again on the same database and ports, as `python starter.py up` would resume it.
Every action is approved with Quench's command line as a person would.

For each kill: when the new worker was polling, when work next went on (a workflow task or
an activity started by a worker: the case's history and the worker's journal), and when the
interrupted activity ran again. The end: did the case close, does AWS match the undisturbed
run, and does AWS hold anything twice.

Run as `python -m benchmarks.chaos` (or `make chaos ARGS=...`); see --help.
"""

import argparse
import asyncio
import bisect
import os
import shutil
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from benchmarks.chaos_worker import (
    JOURNAL_SETTING,
    KILL_KINDS,
    KINDS_SETTING,
    STARTS_SETTING,
    read_journal,
)
from benchmarks.finding_storm import machine
from benchmarks.lab_case import (
    PROJECT_ROOT,
    add_choices_option,
    aws_state,
    differences,
    drive_case,
    duplicates,
    start_stack,
)
from config import names
from config.settings import Settings
from config.temporal import connect
from lab.scenario import SCENARIOS, Scenario
from models.case import CaseStatus, Phase
from stack.embedded import WORKER_READY_LINE, EmbeddedStack
from stack.processes import ManagedProcess

APPROVER = "chaos@example.com"
# A workflow task or an activity taken by a worker: the work going on. (Scheduling, timers
# and timeouts are the server's own and happen without any worker.)
WORKER_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
}
# A worker polls a moment before it logs that it does (well under this), and its
# restart takes a second or more, so this tells the new worker's work from the old one's.
POLL_BEFORE_LOG = 0.5
# The goal of issue 14: work resumes within this many seconds of a worker being back.
RESUME_GOAL_SECONDS = 15.0


@dataclass
class Kill:
    """One kill and what followed it (wall-clock seconds, time.time())."""

    kind: str  # start, done, after (a worker); server
    activity: str
    activity_id: str
    workflow_id: str
    run_id: str
    at: float
    ready_at: float | None = None  # the new worker polling, or the server serving again
    progress_at: float | None = None  # a worker took work again
    rerun_at: float | None = None  # the interrupted activity started again
    # Killed once every workflow had closed: there was no work left to resume.
    after_end: bool = False

    @property
    def stall(self) -> float | None:
        """Seconds the case made no progress after the kill."""
        return None if self.progress_at is None else self.progress_at - self.at

    @property
    def back(self) -> float | None:
        """Seconds until a worker (or the server) was back."""
        return None if self.ready_at is None else self.ready_at - self.at

    @property
    def resume(self) -> float | None:
        """Seconds from the worker (or server) being back to the work going on. A worker
        polls a moment before it logs that it does, so work it takes at once counts 0."""
        if self.progress_at is None or self.ready_at is None:
            return None
        return max(0.0, self.progress_at - self.ready_at)

    @property
    def rerun(self) -> float | None:
        """Seconds from the worker being back to the interrupted activity running again."""
        if self.rerun_at is None or self.ready_at is None:
            return None
        return max(0.0, self.rerun_at - self.ready_at)


def attach_times(
    kills: Sequence[Kill],
    ready_times: Iterable[float],
    progress: Iterable[float],
    journal: Sequence[dict[str, Any]],
    ended_at: float | None = None,
) -> None:
    """Fill in each kill's ready, progress and rerun times: the first of each after it.

    After a worker's kill only the new worker can take work: what the dying one still
    wrote in its last milliseconds (another thread's activity starting) does not count,
    nor anything before the new worker's first poll, allowing POLL_BEFORE_LOG for the
    poll that comes a moment before its log line. A server kill keeps the ready time it
    was given (the server's; the worker lived on). A kill at or after `ended_at` (when the
    last workflow closed) is marked after the end."""
    ready = sorted(ready_times)
    moments = sorted([*progress, *(r["at"] for r in journal if r.get("event") == "started")])
    for kill in kills:
        if ended_at is not None and kill.at >= ended_at:
            kill.after_end = True
            continue
        since = kill.at
        if kill.ready_at is None:
            kill.ready_at = _first_after(ready, kill.at)
            if kill.ready_at is None:
                continue
            since = max(kill.at, kill.ready_at - POLL_BEFORE_LOG)
        kill.progress_at = _first_after(moments, since)
        if kill.kind in ("start", "done"):
            same = sorted(
                r["at"]
                for r in journal
                if r.get("event") == "started"
                and (r["workflow_id"], r["run_id"], r["activity_id"])
                == (kill.workflow_id, kill.run_id, kill.activity_id)
            )
            kill.rerun_at = _first_after(same, since)


def _first_after(times: Sequence[float], moment: float) -> float | None:
    index = bisect.bisect_right(times, moment)
    return times[index] if index < len(times) else None


def spread(values: Iterable[float | None]) -> tuple[float, float] | None:
    """(median, max) of the values that are known; None when none is."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return statistics.median(known), max(known)


def worker_kills_from_journal(journal: Iterable[dict[str, Any]]) -> list[Kill]:
    return [
        Kill(r["kind"], r["activity"], r["activity_id"], r["workflow_id"], r["run_id"], r["at"])
        for r in journal
        if r.get("event") == "kill"
    ]


# -- the worker the run kills -----------------------------------------------------------


class WorkerKeeper:
    """Runs the chaos worker outside the stack's supervisor (which gives up after seven
    quick deaths) and starts it again the moment it dies."""

    def __init__(
        self, stack: EmbeddedStack, journal: Path, kinds: Sequence[str], starts_per_type: int
    ) -> None:
        env = {
            **stack.child_env(),
            JOURNAL_SETTING: str(journal),
            KINDS_SETTING: ",".join(kinds),
            STARTS_SETTING: str(starts_per_type),
            "PYTHONPATH": str(PROJECT_ROOT),
        }
        self.process = ManagedProcess(
            "worker",
            [sys.executable, "-m", "benchmarks.chaos_worker"],
            ready=lambda: WORKER_READY_LINE in self.process.log_since_start(),
            state_dir=stack.state_dir,
            env=env,
            ready_timeout=120,
        )
        self.exits: list[int] = []
        self.ready = threading.Event()
        # Held while a process is killed and reaped, so that its "polling" line is not
        # read as a new worker's in between.
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-worker", daemon=True)

    def start(self) -> None:
        # Started from its own thread, which lives until stop(): the worker gets SIGTERM
        # when the thread that started it ends.
        self._thread.start()
        if not self.ready.wait(180):
            raise RuntimeError(f"the chaos worker never polled:\n{self.process.log_tail()}")

    def kill(self) -> float | None:
        """SIGKILL the worker if it is up and polling; when, or None if it was not."""
        with self._lock:
            pid = self.process.pid
            if not self.ready.is_set() or pid is None or self.process.exit_code() is not None:
                return None
            at = time.time()
            os.kill(pid, signal.SIGKILL)
            while self.process.exit_code() is None:
                time.sleep(0.01)
            self.ready.clear()
            return at

    def ready_times(self) -> list[float]:
        """When each worker logged that it polls (the log's own times: a worker can take
        a task and die before anything watching it from outside sees the line)."""
        return worker_ready_times(self.process.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self.process.stop()

    def _run(self) -> None:
        self.process.spawn()
        while not self._stopping.is_set():
            with self._lock:
                code = self.process.exit_code()
                if code is not None:
                    self.ready.clear()
                    self.exits.append(code)
                    self.process.spawn(banner=f"restarting after exit code {code}")
                elif not self.ready.is_set() and self.process.ready():
                    self.ready.set()
            time.sleep(0.05)


def worker_ready_times(log: str) -> list[float]:
    """The times of the worker log's "worker polling" lines (logging's local time)."""
    times = []
    for line in log.splitlines():
        if WORKER_READY_LINE.decode() in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            times.append(stamp.timestamp())
    return times


# -- the Temporal server, killed once ---------------------------------------------------


def kill_server(stack: EmbeddedStack) -> tuple[float, float]:
    """SIGKILL the dev server and start it again on the same database and ports; when it
    was killed and when it served again."""
    (server,) = [p for p in stack.processes if p.name == "temporal"]
    assert server.pid is not None
    at = time.time()
    os.killpg(server.pid, signal.SIGKILL)
    while server.exit_code() is None:
        time.sleep(0.05)
    server.start()
    return at, time.time()


# -- watching the case ------------------------------------------------------------------


@dataclass
class Watch:
    """What the run does to the case while it goes, and what it saw."""

    after_every: int
    kill_server: bool
    kills: list[Kill] = field(default_factory=list)
    completions: int = 0
    seen: set[tuple[str, int]] = field(default_factory=set)
    server_down: bool = False
    server_killed: bool = False


async def watch_case(
    client: Client, stack: EmbeddedStack, keeper: WorkerKeeper, watch: Watch, case_id: str
) -> None:
    """Kill the worker after every `after_every`-th activity completion of the case, and the
    server once when the case is in its containment watch. Runs until cancelled."""
    handle = client.get_workflow_handle(case_id)
    while True:
        await asyncio.sleep(0.3)
        try:
            description = await handle.describe()
            history = await handle.fetch_history()
        except RPCError:
            continue
        phase = description.typed_search_attributes.get(names.SA_PHASE)
        if watch.kill_server and not watch.server_killed and phase == Phase.WATCHING.value:
            watch.server_killed = watch.server_down = True
            at, ready = await asyncio.to_thread(kill_server, stack)
            watch.server_down = False
            watch.kills.append(
                Kill("server", "(Temporal dev server)", "-", case_id, "-", at, ready_at=ready)
            )
            continue
        scheduled: dict[int, Any] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled[event.event_id] = event.activity_task_scheduled_event_attributes
            if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                continue
            key = (description.run_id or "", event.event_id)
            if key in watch.seen:
                continue
            watch.seen.add(key)
            watch.completions += 1
            if watch.after_every <= 0 or watch.completions % watch.after_every:
                continue
            attributes = scheduled[
                event.activity_task_completed_event_attributes.scheduled_event_id
            ]
            killed_at = keeper.kill()
            if killed_at is not None:
                watch.kills.append(
                    Kill(
                        "after",
                        attributes.activity_type.name,
                        attributes.activity_id,
                        case_id,
                        description.run_id or "",
                        killed_at,
                    )
                )


async def worker_progress(client: Client) -> tuple[list[float], float | None]:
    """When a worker took work, from every workflow's history (the case's runs and its
    investigations); and when the last of them closed, if all have."""
    moments = []
    closed: list[float | None] = []
    async for execution in client.list_workflows(""):
        closed.append(execution.close_time.timestamp() if execution.close_time else None)
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = await handle.fetch_history()
        for event in history.events:
            if event.event_type in WORKER_EVENTS:
                moments.append(event.event_time.seconds + event.event_time.nanos / 1e9)
    closed_at = [moment for moment in closed if moment is not None]
    return moments, max(closed_at) if closed_at and len(closed_at) == len(closed) else None


# -- one scenario -----------------------------------------------------------------------


@dataclass
class ScenarioRun:
    scenario: str
    baseline_ended: str = ""
    baseline_seconds: float = 0.0
    case_id: str = ""
    ended: str = "not run"
    outcome: str = ""
    seconds: float = 0.0
    kills: list[Kill] = field(default_factory=list)
    worker_exits: list[int] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    baseline_duplicates: list[str] = field(default_factory=list)
    error: str = ""
    state_dir: str = ""

    @property
    def worker_kills(self) -> list[Kill]:
        """The worker's kills while there was work to resume."""
        return [k for k in self.kills if k.kind != "server" and not k.after_end]

    @property
    def findings(self) -> list[str]:
        found = []
        if self.error:
            found.append(f"the run failed: {self.error}")
        if self.ended != "closed":
            found.append(f"the case did not close: {self.ended}")
        if self.duplicates:
            found.append("duplicates in AWS: " + "; ".join(self.duplicates))
        if self.differences:
            found.append("AWS differs from the undisturbed run: " + "; ".join(self.differences))
        slow = [k for k in self.worker_kills if k.resume is None or k.resume > RESUME_GOAL_SECONDS]
        for kill in slow:
            found.append(
                f"work did not go on within {RESUME_GOAL_SECONDS:g} s of the worker being back "
                f"after the {kill.kind} kill of {kill.activity} ({kill.workflow_id} activity "
                f"{kill.activity_id}): {_seconds(kill.resume)}"
            )
        return found


async def run_scenario_pair(scenario: Scenario, args: argparse.Namespace) -> ScenarioRun:
    run = ScenarioRun(scenario)
    baseline: dict[str, Any] = {}
    if not args.no_baseline:
        print(f"{scenario}: the undisturbed run", flush=True)
        stack = start_stack({}, "quench-chaos-baseline-")
        try:
            _, status, run.baseline_ended, run.baseline_seconds = await drive_case(
                stack, scenario, args.timeout, APPROVER
            )
            baseline = await asyncio.to_thread(aws_state, stack)
            run.baseline_duplicates = await asyncio.to_thread(duplicates, stack)
        finally:
            stack.stop()
            shutil.rmtree(stack.state_dir, ignore_errors=True)
        print(f"  {run.baseline_ended} in {run.baseline_seconds:.0f} s", flush=True)

    print(f"{scenario}: the chaos run", flush=True)
    stack = start_stack({}, "quench-chaos-", without=("worker",), supervise=False)
    journal = stack.state_dir / "chaos-journal.jsonl"
    keeper = WorkerKeeper(stack, journal, args.kill_at, args.starts_per_type)
    watch = Watch(after_every=args.after_every, kill_server=not args.no_server_kill)
    started = time.time()
    try:
        keeper.start()
        client = await connect(Settings(lab=True, temporal_address=stack.temporal_address))
        try:
            status = await drive_and_watch(client, stack, keeper, watch, scenario, args, run)
            run.outcome = (status.outcome or "") if status else ""
        except Exception as exc:  # what the kills showed is still reported
            run.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        records = read_journal(journal)
        run.kills = sorted(worker_kills_from_journal(records) + watch.kills, key=lambda k: k.at)
        moments, ended_at = await worker_progress(client)
        attach_times(run.kills, keeper.ready_times(), moments, records, ended_at)
        state = await asyncio.to_thread(aws_state, stack)
        run.duplicates = await asyncio.to_thread(duplicates, stack)
        if baseline:
            run.differences = differences(baseline, state)
    except Exception as exc:
        run.error = run.error or f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        keeper.stop()
        run.worker_exits = keeper.exits
        stack.stop()
        for kill in run.kills:
            kill.at -= started
            for name in ("ready_at", "progress_at", "rerun_at"):
                value = getattr(kill, name)
                if value is not None:
                    setattr(kill, name, value - started)
        if run.findings:
            run.state_dir = str(stack.state_dir)
            print(f"  kept the state directory of this run: {stack.state_dir}", flush=True)
        else:
            shutil.rmtree(stack.state_dir, ignore_errors=True)
    return run


async def drive_and_watch(
    client: Client,
    stack: EmbeddedStack,
    keeper: WorkerKeeper,
    watch: Watch,
    scenario: Scenario,
    args: argparse.Namespace,
    run: ScenarioRun,
) -> CaseStatus | None:
    """Drive the case to its end as a person would, with the watcher's kills beside it."""
    drive = asyncio.create_task(drive_case(stack, scenario, args.timeout, APPROVER, outages=True))
    watcher: asyncio.Task[None] | None = None
    try:
        while not drive.done() and watcher is None:
            # The case's id is known once the scenario has sent its finding.
            await asyncio.sleep(0.2)
            case_id = _only_case_id(await _case_ids(client))
            if case_id:
                watcher = asyncio.create_task(watch_case(client, stack, keeper, watch, case_id))
        run.case_id, status, run.ended, run.seconds = await drive
        return status
    finally:
        if watcher is not None:
            watcher.cancel()


async def _case_ids(client: Client) -> list[str]:
    try:
        return [w.id async for w in client.list_workflows("WorkflowType = 'CaseWorkflow'")]
    except RPCError:
        return []


def _only_case_id(ids: list[str]) -> str:
    return ids[0] if len(set(ids)) == 1 else ""


# -- the report -------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _spread_text(values: Iterable[float | None]) -> str:
    found = spread(values)
    return "-" if found is None else f"{found[0]:.1f} / {found[1]:.1f}"


SUMMARY_HEADER = (
    "| scenario | kills (start / done / after / server) | case | AWS vs undisturbed | "
    "duplicates | longest stall (s) | work resumed after worker back, median / max (s) | "
    "interrupted activity again, median / max (s) |"
)


def summary_row(run: ScenarioRun) -> str:
    counts = [
        sum(k.kind == kind and not k.after_end for k in run.kills)
        for kind in (*KILL_KINDS, "after", "server")
    ]
    case = f"closed, {run.outcome}" if run.ended == "closed" else run.ended
    if run.error:
        case += f" (error: {run.error})"
    compared = "same" if not run.differences else f"{len(run.differences)} differ"
    if not run.baseline_ended:
        compared = "not compared"
    stalls = [k.stall for k in run.kills if k.stall is not None]
    longest = max(stalls) if stalls else None
    worker = run.worker_kills
    return (
        f"| {run.scenario} | {' / '.join(map(str, counts))} | {case} | {compared} | "
        f"{'; '.join(run.duplicates) or 'none'} | {_seconds(longest)} | "
        f"{_spread_text(k.resume for k in worker)} | {_spread_text(k.rerun for k in worker)} |"
    )


KILL_HEADER = (
    "| # | kind | activity | workflow | activity id | at (s) | back after (s) | "
    "work resumed after back (s) | activity again after back (s) | stall (s) |"
)


def kill_rows(run: ScenarioRun) -> list[str]:
    rows = []
    for number, kill in enumerate(run.kills, 1):
        workflow = "case" if kill.workflow_id == run.case_id else kill.workflow_id
        workflow = workflow.replace(f"{run.case_id}/", "case's ")
        if kill.after_end:
            rows.append(
                f"| {number} | {kill.kind} | {kill.activity} | {workflow} | "
                f"{kill.activity_id} | {kill.at:.1f} | after every workflow had closed; "
                "nothing to resume | | | |"
            )
            continue
        rows.append(
            f"| {number} | {kill.kind} | {kill.activity} | {workflow} | {kill.activity_id} | "
            f"{kill.at:.1f} | {_seconds(kill.back)} | {_seconds(kill.resume)} | "
            f"{_seconds(kill.rerun)} | {_seconds(kill.stall)} |"
        )
    return rows


def markdown(
    runs: Sequence[ScenarioRun], command: str, starts_per_type: int = 0, after_every: int = 5
) -> str:
    starts = f", at most {starts_per_type} of one type in a workflow run" if starts_per_type else ""
    lines = [
        "# The chaos run",
        "",
        f"`{command}` on {machine()}. Other work was loading the machine while it ran, so the "
        "times are an upper bound for an idle one.",
        "",
        "Kinds of kill: **start**, the worker SIGKILLs itself as an activity starts (each "
        f"activity once{starts}); **done**, as the first activity of each type has done its "
        "work and before its result reaches Temporal (the retry does the work again); "
        "**after**, this script SIGKILLs it just after every "
        f"{_ordinal(after_every)} activity completion is in the case's history; "
        "**server**, the Temporal dev server SIGKILLed in the containment watch and started "
        "again on its database. *Back*: the new worker polling (the server serving). *Work "
        "resumed*: the first workflow task or activity a worker took after the kill. *Stall*: "
        "from the kill to that moment. Times are seconds from the start of the chaos case.",
        "",
        SUMMARY_HEADER,
        "|---|---|---|---|---|---:|---:|---:|",
        *(summary_row(run) for run in runs),
        "",
        "Undisturbed runs: "
        + "; ".join(
            f"{run.scenario} {run.baseline_ended or 'not run'} in {run.baseline_seconds:.0f} s"
            f" (duplicates: {'; '.join(run.baseline_duplicates) or 'none'})"
            for run in runs
        )
        + ". Chaos runs: "
        + "; ".join(f"{run.scenario} {run.ended} in {run.seconds:.0f} s" for run in runs)
        + ".",
        "",
    ]
    findings = [(run, found) for run in runs for found in run.findings]
    lines += ["## Findings", ""]
    if not findings:
        lines.append(
            "Every case closed, AWS matches the undisturbed runs with nothing twice, and work "
            f"went on within {RESUME_GOAL_SECONDS:g} s of a worker being back after every kill."
        )
    for run, found in findings:
        lines.append(f"- {run.scenario} (case {run.case_id or '-'}): {found}")
    for run in runs:
        lines += ["", f"## Kill points: {run.scenario}", "", KILL_HEADER]
        lines.append("|---:|---|---|---|---|---:|---:|---:|---:|---:|")
        lines += kill_rows(run)
        others = [code for code in run.worker_exits if code != -signal.SIGKILL]
        if others:
            lines += ["", f"Worker exits other than the kills: {others}."]
    return "\n".join(lines) + "\n"


def _ordinal(number: int) -> str:
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10 if number % 100 not in (11, 12, 13) else 0)
    return f"{number}{suffix or 'th'}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_choices_option(parser, "--scenario", SCENARIOS, "scenario")
    add_choices_option(parser, "--kill-at", KILL_KINDS, "kill point")
    parser.add_argument(
        "--starts-per-type",
        type=int,
        default=3,
        help="kill at the start of at most N activities of each type in a workflow run "
        "(the investigation fans out dozens of one type); 0: at every activity's start",
    )
    parser.add_argument(
        "--after-every",
        type=int,
        default=5,
        help="kill the worker after every Nth recorded activity completion (0: never)",
    )
    parser.add_argument(
        "--no-server-kill", action="store_true", help="leave the Temporal server running"
    )
    parser.add_argument("--no-baseline", action="store_true", help="AWS is then not compared")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a case may take")
    parser.add_argument("--output", type=Path, default=Path("chaos.md"))
    return parser.parse_args(argv)


async def chaos(args: argparse.Namespace, command: str) -> list[ScenarioRun]:
    runs: list[ScenarioRun] = []
    for scenario in args.scenario:
        run = await run_scenario_pair(scenario, args)
        runs.append(run)
        print(SUMMARY_HEADER + "\n" + summary_row(run), flush=True)
        for found in run.findings:
            print(f"  FINDING: {found}", flush=True)
        await asyncio.to_thread(
            args.output.write_text, markdown(runs, command, args.starts_per_type, args.after_every)
        )
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(
        ["python -m benchmarks.chaos", *(argv if argv is not None else sys.argv[1:])]
    )
    runs = asyncio.run(chaos(args, command))
    print(f"\nwritten to {args.output}")
    return 1 if any(run.findings for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
