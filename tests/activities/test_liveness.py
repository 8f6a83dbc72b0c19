"""Activities beat while they run, repeating the progress they last reported, so a worker
that dies is noticed within the workflow's heartbeat timeout; every activity the worker
runs does, and every activity the workflows start has that timeout."""

import ast
import threading
from pathlib import Path

import boto3
import pytest
from temporalio.testing import ActivityEnvironment

from activities import liveness
from activities.aws import AwsClients
from activities.liveness import beat, heartbeating, is_heartbeating
from config.settings import Settings
from worker import build_activities

ROOT = Path(__file__).resolve().parents[2]


def test_a_running_activity_keeps_beating_with_the_progress_it_last_reported(monkeypatch):
    monkeypatch.setattr(liveness, "BEAT_EVERY", 0.01)
    beats: list[tuple[object, ...]] = []
    enough = threading.Event()

    def heard(*details: object) -> None:
        beats.append(details)
        if beats.count(("file-7",)) >= 4:
            enough.set()

    @heartbeating
    def long_call(cursor: str) -> str:
        beat(cursor)
        # Until the keeper has beaten on its own a few times; a deadline, not a timing.
        assert enough.wait(timeout=30), "the keeper never beat"
        return "done"

    env = ActivityEnvironment()
    env.on_heartbeat = heard
    assert env.run(long_call, "file-7") == "done"
    # After the activity reported its cursor, the keeper repeats it and never loses it.
    reported = beats.index(("file-7",))
    assert all(b == ("file-7",) for b in beats[reported:])
    assert set(beats[:reported]) <= {()}


def test_an_activity_that_fails_stops_its_keeper():
    @heartbeating
    def broken() -> None:
        raise RuntimeError("AWS said no")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="AWS said no"):
        ActivityEnvironment().run(broken)
    assert threading.active_count() == before


def test_every_activity_the_worker_runs_beats():
    settings = Settings(
        account_id="123456789012", evidence_bucket="evidence", cloudtrail_bucket="trail"
    )
    clients = AwsClients(boto3.Session(region_name="us-east-1"), "us-east-1")
    activities = build_activities(settings, clients)
    assert activities
    silent = [fn.__name__ for fn in activities if not is_heartbeating(fn)]
    assert silent == []


def _activity_calls() -> list[tuple[str, int, ast.Call]]:
    calls = []
    for path in sorted((ROOT / "workflows").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"execute_activity_method", "execute_activity"}
            ):
                calls.append((str(path.relative_to(ROOT)), node.lineno, node))
    return calls


def test_every_activity_the_workflows_start_is_given_up_on_after_missed_beats():
    calls = _activity_calls()
    assert len(calls) > 20
    missing = [
        f"{path}:{line}"
        for path, line, call in calls
        if not any(
            k.arg == "heartbeat_timeout"
            and isinstance(k.value, ast.Name)
            and k.value.id == "HEARTBEAT_TIMEOUT"
            for k in call.keywords
        )
    ]
    assert missing == []
