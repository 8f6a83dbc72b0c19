"""Recorded histories of real cases must replay without nondeterminism after any change.

Refresh them with `make record-histories` when a change is meant to be
incompatible (and version the workflow for the cases already running).
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))
HISTORY_TEXT = {path: path.read_text() for path in HISTORIES}


def test_there_are_histories_to_replay():
    assert HISTORIES, "tests/histories holds no recorded case"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path):
    history = WorkflowHistory.from_json(path.stem, HISTORY_TEXT[path])
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
