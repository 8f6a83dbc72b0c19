"""The chaos run's own logic, without a stack: which boundaries the worker dies at, what
each kill is measured against, and the table a finding lands in."""

from datetime import datetime

from benchmarks.chaos import (
    Kill,
    ScenarioRun,
    attach_times,
    markdown,
    spread,
    summary_row,
    worker_ready_times,
)
from benchmarks.chaos_worker import KillPlan, read_journal
from benchmarks.lab_case import differences


def _activity(activity_id: str, activity: str = "snapshot_volumes", run_id: str = "r1") -> dict:
    return {
        "workflow_id": "case-1",
        "run_id": run_id,
        "activity_id": activity_id,
        "activity": activity,
    }


def test_each_start_is_killed_once_and_each_type_once_when_done() -> None:
    plan = KillPlan.from_journal(["start", "done"], [])
    first = _activity("1")
    assert plan.due("start", first)
    plan.note("start", first)
    # Its retry starts again: no second kill, so the case can finish.
    assert not plan.due("start", first)
    # The same activity id in a new run (after continue-as-new) is a new boundary.
    assert plan.due("start", _activity("1", run_id="r2"))
    assert plan.due("done", first)
    plan.note("done", first)
    assert not plan.due("done", _activity("7"))
    assert plan.due("done", _activity("8", activity="stop_instance"))


def test_a_fan_out_is_killed_at_the_first_starts_of_its_type_only() -> None:
    plan = KillPlan.from_journal(["start"], [], starts_per_type=2)
    for activity_id in ("10", "11"):
        record = _activity(activity_id, "count_baseline")
        assert plan.due("start", record)
        plan.note("start", record)
    assert not plan.due("start", _activity("12", "count_baseline"))
    # Another type, or the same type in another run, still has its own starts.
    assert plan.due("start", _activity("13", "read_scope"))
    assert plan.due("start", _activity("14", "count_baseline", run_id="r2"))
    unlimited = KillPlan.from_journal(["start"], [], starts_per_type=0)
    for activity_id in ("10", "11", "12"):
        record = _activity(activity_id, "count_baseline")
        assert unlimited.due("start", record)
        unlimited.note("start", record)


def test_the_plan_is_rebuilt_from_the_journal_a_killed_worker_left() -> None:
    journal = [
        {"event": "started", "at": 1.0, **_activity("1")},
        {"event": "kill", "kind": "start", "at": 1.1, **_activity("1")},
        {"event": "kill", "kind": "done", "at": 2.0, **_activity("2", "stop_instance")},
    ]
    plan = KillPlan.from_journal(["start", "done"], journal, starts_per_type=1)
    assert not plan.due("start", _activity("1"))
    assert not plan.due("start", _activity("5"))
    assert plan.due("start", _activity("2", "stop_instance"))
    assert not plan.due("done", _activity("9", "stop_instance"))
    assert not KillPlan.from_journal(["done"], journal).due("start", _activity("3"))


def test_a_line_cut_short_by_the_kill_is_left_out(tmp_path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"event": "started", "at": 1.0}\n{"event": "kil')
    assert read_journal(path) == [{"event": "started", "at": 1.0}]
    assert read_journal(tmp_path / "none.jsonl") == []


def test_each_kill_is_measured_to_the_first_ready_progress_and_rerun_after_it() -> None:
    start_kill = Kill("start", "snapshot_volumes", "4", "case-1", "r1", at=10.0)
    after_kill = Kill("after", "stop_instance", "6", "case-1", "r1", at=40.0)
    server = Kill("server", "(server)", "-", "case-1", "-", at=60.0, ready_at=66.0)
    journal = [
        {"event": "started", "at": 9.9, **_activity("4")},
        {"event": "kill", "kind": "start", "at": 10.0, **_activity("4")},
        {"event": "started", "at": 22.5, **_activity("4")},
        {"event": "started", "at": 41.2, **_activity("7")},
    ]
    attach_times(
        [start_kill, after_kill, server],
        ready_times=[5.0, 12.0, 41.5],
        progress=[9.95, 21.0, 43.0, 70.0],
        journal=journal,
    )
    # Work went on at the first worker event after the kill, not one just before it.
    assert (start_kill.ready_at, start_kill.progress_at, start_kill.rerun_at) == (12.0, 21.0, 22.5)
    assert (start_kill.back, start_kill.resume, start_kill.stall) == (2.0, 9.0, 11.0)
    assert start_kill.rerun == 10.5
    # An activity already done when the worker died is not waited for again.
    assert after_kill.rerun_at is None and after_kill.progress_at == 41.2
    # Work the new worker took as it came up, before its "polling" line, counts as 0.
    assert after_kill.ready_at == 41.5 and after_kill.resume == 0.0
    # The server's own ready time stands.
    assert (server.ready_at, server.progress_at, server.resume) == (66.0, 70.0, 4.0)


def test_what_the_dying_worker_wrote_after_its_kill_is_not_progress() -> None:
    kill = Kill("start", "notify_sns", "8", "case-1", "r1", at=10.0)
    journal = [
        {"event": "kill", "kind": "start", "at": 10.0, **_activity("8", "notify_sns")},
        # Another thread of the same worker started an activity as the kill landed.
        {"event": "started", "at": 10.002, **_activity("9", "notify_chat")},
        {"event": "started", "at": 21.0, **_activity("8", "notify_sns")},
    ]
    attach_times([kill], ready_times=[12.0], progress=[10.001, 11.8], journal=journal)
    # The new worker's first poll, a moment before its log line, counts; 10.00x do not.
    assert kill.progress_at == 11.8 and kill.resume == 0.0
    assert kill.stall is not None and round(kill.stall, 3) == 1.8
    assert kill.rerun_at == 21.0


def test_a_kill_nothing_followed_has_no_stall_and_is_a_finding() -> None:
    kill = Kill("start", "stop_instance", "5", "case-1", "r1", at=10.0)
    attach_times([kill], ready_times=[11.0], progress=[3.0], journal=[])
    assert kill.progress_at is None and kill.stall is None and kill.resume is None
    run = ScenarioRun("ec2-role", baseline_ended="closed", ended="closed", kills=[kill])
    assert any("did not go on within 15 s" in found for found in run.findings)


def test_a_kill_after_every_workflow_closed_is_not_measured_nor_a_finding() -> None:
    last = Kill("after", "notify_sns", "44", "case-1", "r1", at=90.0)
    kill = Kill("start", "stop_instance", "5", "case-1", "r1", at=10.0)
    attach_times([kill, last], ready_times=[12.0], progress=[20.0], journal=[], ended_at=80.0)
    assert last.after_end and last.ready_at is None and last.stall is None
    assert not kill.after_end and kill.stall == 10.0
    run = ScenarioRun("ec2-role", baseline_ended="closed", ended="closed", kills=[kill, last])
    assert run.findings == [] and run.worker_kills == [kill]
    assert "| 1 / 0 / 0 / 0 |" in summary_row(run)
    assert "after every workflow had closed" in markdown([run], "python -m benchmarks.chaos")


def test_worker_ready_times_are_read_from_its_log_lines() -> None:
    log = (
        "==== 2026-12-07T05:52:12+0000 restarting after exit code -9 worker\n"
        "2026-12-07 05:52:14,184 INFO root worker polling quench-cases on 127.0.0.1:27882\n"
        "2026-12-07 05:52:26,443 INFO botocore.credentials Found credentials\n"
        "2026-12-07 05:52:29,000 INFO root worker polling quench-cases on 127.0.0.1:27882\n"
    )
    first, second = worker_ready_times(log)
    assert round(second - first, 3) == 14.816
    assert datetime.fromtimestamp(first).strftime("%H:%M:%S.%f") == "05:52:14.184000"


def test_spread_is_median_and_max_of_what_is_known() -> None:
    assert spread([3.0, None, 1.0, 8.0]) == (3.0, 8.0)
    assert spread([None]) is None


def test_a_duplicate_and_a_difference_reach_the_summary_and_the_findings() -> None:
    baseline = {"snapshots": 1, "user backup-svc": {"keys": ["Active"]}, "trail main": True}
    state = {"snapshots": 2, "trail main": True}
    diffs = differences(baseline, state)
    assert diffs == [
        "snapshots: 2 (undisturbed: 1)",
        "user backup-svc: absent (undisturbed: {'keys': ['Active']})",
    ]
    kill = Kill("done", "snapshot_volumes", "4", "case-1", "r1", at=1.0, ready_at=2.0)
    kill.progress_at = 5.0
    run = ScenarioRun(
        "ec2-role",
        baseline_ended="closed",
        case_id="case-1",
        ended="closed",
        outcome="contained",
        kills=[kill],
        differences=diffs,
        duplicates=["volume vol-1 has 2 snapshots"],
    )
    row = summary_row(run)
    assert "| 0 / 1 / 0 / 0 |" in row and "2 differ" in row
    assert "volume vol-1 has 2 snapshots" in row and "| 4.0 |" in row
    report = markdown([run], "python -m benchmarks.chaos")
    assert "- ec2-role (case case-1): duplicates in AWS: volume vol-1 has 2 snapshots" in report
    assert "| 1 | done | snapshot_volumes | case | 4 | 1.0 | 1.0 | 3.0 | - | 4.0 |" in report
    assert "Every case closed" not in report
