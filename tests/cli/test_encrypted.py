"""The command line and encrypted cases: without the keys it writes nothing into a case
that is encrypted, and opens no case in clear outside the lab."""

import json
import uuid

from codec.aesgcm import AesGcmCodec, encrypting_data_converter, generate_key_entry
from models.case import CaseInput
from tests.cli.conftest import command_line
from tests.support import finding
from workflows.case import CaseWorkflow


async def test_a_decision_without_the_keys_is_not_sent_to_an_encrypted_case(
    dev_server_env, monkeypatch, capsys
):
    key_id, key = generate_key_entry("cli")
    codec = AesGcmCodec.from_json(json.dumps({key_id: key}), key_id)
    client = dev_server_env.client
    encrypted = type(client)(
        client.service_client,
        namespace=client.namespace,
        data_converter=encrypting_data_converter(codec),
    )
    queue = f"nobody-{uuid.uuid4()}"  # no worker: nothing may reach the case anyway
    case_id = f"case-encrypted-{uuid.uuid4().hex[:8]}"
    handle = await encrypted.start_workflow(
        CaseWorkflow.run,
        CaseInput(case_id=case_id, finding=finding()),
        id=case_id,
        task_queue=queue,
    )
    run = command_line(client, queue, monkeypatch, capsys)

    ran = await run("approve", case_id, "contain-1", "--by", "alice", "--reason", "seen it")

    assert ran.code == 2, ran
    assert f"{case_id} is encrypted: set QUENCH_PAYLOAD_KEYS" in ran.err
    # Nothing reached the case: its history is the start alone.
    events = [e async for e in handle.fetch_history_events()]
    assert not any(
        e.HasField("workflow_execution_update_admitted_event_attributes") for e in events
    )
    assert not any(
        e.HasField("workflow_execution_update_accepted_event_attributes") for e in events
    )
    await handle.terminate("test done")


async def test_start_outside_the_lab_needs_the_keys(dev_server_env, monkeypatch, capsys, tmp_path):
    run = command_line(dev_server_env.client, "nobody", monkeypatch, capsys)
    monkeypatch.delenv("QUENCH_ENCRYPT_PAYLOADS")
    document = tmp_path / "finding.json"
    document.write_text(finding().model_dump_json())

    ran = await run("start", str(document))

    assert ran.code == 2
    assert "set QUENCH_PAYLOAD_KEYS" in ran.err and "nothing was started" in ran.err
