"""Every id in the lab's AWS is the same after a restart of its server, whatever calls a
worker made in between: reads in many regions, calls answered concurrently, calls moto
does not record, and SSM commands that mint an instance's credentials. (A full ec2-role
case, then the user-key scenario, then `up` again: the lab's AWS had another key for
build-bot than the scenario had saved.)"""

import json
from typing import Any

import pytest

from lab import world as lab_world
from lab.aws_server import RECORDING_NAME
from lab.world import REGION
from stack.processes import free_port
from tests.lab.lab_server import discard, start_lab_server
from tests.lab.world_ids import (
    every_id,
    more_resources,
    run_together,
    worker_changes,
    worker_reads,
    worker_session,
)


@pytest.fixture
def lab(tmp_path):
    port = free_port()
    state = {"process": start_lab_server(tmp_path, port)}
    yield tmp_path, port, state
    discard(state["process"])


def test_every_id_is_the_same_after_the_lab_restarts(lab):
    state_dir, port, state = lab
    url = f"http://127.0.0.1:{port}"
    world = lab_world.seed(url)
    run_together(worker_reads(url, world) + worker_changes(url, world))
    world = more_resources(url, world)
    before = every_id(url, world)
    assert before[f"keys of {world.build_bot_user}"] != []
    # The case's snapshots, among the account's own.
    made = [s for s in before[f"snapshots in {REGION}"] if s[2].startswith(("case ", "after"))]
    assert len(made) == 5

    state["process"].stop()
    state["process"] = start_lab_server(state_dir, port)

    assert (state_dir / "lab-aws.ready").read_text() == "replayed"
    after = every_id(url, world)
    changed = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys()}
    assert {k: v for k, v in changed.items() if v[0] != v[1]} == {}


def test_a_recording_made_before_calls_had_their_own_ids_keeps_its_ids(lab):
    """A state directory recorded before each call drew from its own stream replays its
    calls from moto's one seeded generator, in order, as they were made; calls recorded
    after it draw from their own streams."""
    state_dir, port, state = lab
    url = f"http://127.0.0.1:{port}"
    iam = worker_session().client("iam", endpoint_url=url)
    iam.create_user(UserName="old-user")
    state["process"].stop()
    recording = state_dir / RECORDING_NAME
    entries = [json.loads(line) for line in recording.read_text().splitlines()]
    assert [e["sequence"] for e in entries] == list(range(len(entries)))
    recording.write_text("".join(json.dumps(_without_sequence(e)) + "\n" for e in entries))
    state["process"] = start_lab_server(state_dir, port)
    legacy_id = iam.get_user(UserName="old-user")["User"]["UserId"]
    iam.create_user(UserName="new-user")
    new_id = iam.get_user(UserName="new-user")["User"]["UserId"]

    state["process"].stop()
    state["process"] = start_lab_server(state_dir, port)
    assert iam.get_user(UserName="old-user")["User"]["UserId"] == legacy_id
    assert iam.get_user(UserName="new-user")["User"]["UserId"] == new_id


def _without_sequence(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "sequence"}
