"""The codec with the real pieces: on a dev server, a history written through the codec
holds no clear copy of its payloads, and `temporal workflow show` reads them through the
codec server running under uvicorn."""

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from codec.aesgcm import (
    ENCRYPTED_ENCODING,
    KEY_ID_METADATA,
    AesGcmCodec,
    encrypting_data_converter,
    generate_key_entry,
)
from codec.server import create_codec_app, generate_token, uvicorn_config
from stack.binaries import temporal_cli
from stack.processes import free_port
from tests.codec.keep_note import KeepNoteInput, KeepNoteWorkflow

UI_ORIGIN = "http://localhost:8233"


@dataclass
class Shown:
    returncode: int
    stdout: str
    stderr: str


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def _keep(client: Client, note: str) -> str:
    queue = f"codec-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=[KeepNoteWorkflow]):
        handle = await client.start_workflow(
            KeepNoteWorkflow.run,
            KeepNoteInput(note=note),
            id=f"keep-note-{uuid.uuid4()}",
            task_queue=queue,
        )
        assert (await handle.result()).kept == note
    return handle.id


async def _raw_history(client: Client, workflow_id: str) -> tuple[bytes, Payloads]:
    """Every event's bytes as the server keeps them, and the workflow's input payloads."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    [started] = [
        event
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    ]
    raw = b"".join(event.SerializeToString() for event in history.events)
    return raw, started.workflow_execution_started_event_attributes.input


async def _workflow_show(client: Client, workflow_id: str, *codec_flags: str) -> Shown:
    process = await asyncio.create_subprocess_exec(
        str(temporal_cli()),
        "workflow",
        "show",
        "--workflow-id",
        workflow_id,
        "--address",
        client.service_client.config.target_host,
        "--namespace",
        client.namespace,
        # Each event in full, payloads shown as their data: what a person reads.
        "--detailed",
        *codec_flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Shown(process.returncode, stdout.decode(), stderr.decode())


@asynccontextmanager
async def _serving(app: FastAPI, log: logging.Handler) -> AsyncIterator[str]:
    """The app under uvicorn on a free port, in a thread, once it answers; its address."""
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    # After the config: creating it sets up uvicorn's loggers afresh.
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.access", "quench.codec")]
    for logger in loggers:
        logger.addHandler(log)
    thread = threading.Thread(target=server.run, name="codec-server", daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                assert thread.is_alive(), "the codec server stopped before it answered"
                try:
                    if (await http.get(f"{endpoint}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the codec server at {endpoint} never answered")
        yield endpoint
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
        for logger in loggers:
            logger.removeHandler(log)


async def test_the_history_is_encrypted_and_the_cli_reads_it_through_the_codec_server(
    dev_server_env,
):
    key_id, key = generate_key_entry()
    codec = AesGcmCodec.from_json(json.dumps({key_id: key}), key_id)
    plain = dev_server_env.client
    encrypting = Client(**{**plain.config(), "data_converter": encrypting_data_converter(codec)})
    note = f"quench-codec-proof-{uuid.uuid4().hex}"

    encrypted_id = await _keep(encrypting, note)
    clear_id = await _keep(plain, note)

    # What a clear copy looks like, read the same way: the search below can find one.
    clear_history, _ = await _raw_history(plain, clear_id)
    assert note.encode() in clear_history
    encrypted_history, started_input = await _raw_history(plain, encrypted_id)
    assert note.encode() not in encrypted_history
    [payload] = started_input.payloads
    assert payload.metadata["encoding"] == ENCRYPTED_ENCODING
    assert payload.metadata[KEY_ID_METADATA] == key_id.encode()

    token = generate_token()
    server_log = _Recorder()
    app = create_codec_app(codec, token, ui_origin=UI_ORIGIN)
    async with _serving(app, server_log) as endpoint:
        decoded = await _workflow_show(
            plain, encrypted_id, "--codec-endpoint", endpoint, "--codec-auth", f"Bearer {token}"
        )
        refused = await _workflow_show(
            plain,
            encrypted_id,
            "--codec-endpoint",
            endpoint,
            "--codec-auth",
            f"Bearer {generate_token()}",
        )
        # As the Web UI calls it: the token in the endpoint's path, from the UI's origin.
        async with httpx.AsyncClient() as http:
            from_the_ui = await http.post(
                f"{endpoint}/ui/{token}/decode",
                content=json_format.MessageToJson(started_input),
                headers={
                    "Content-Type": "application/json",
                    "Origin": UI_ORIGIN,
                    "X-Namespace": plain.namespace,
                },
            )
    undecoded = await _workflow_show(plain, encrypted_id)

    assert decoded.returncode == 0, decoded.stderr
    assert note in decoded.stdout
    assert undecoded.returncode == 0, undecoded.stderr
    assert note not in undecoded.stdout
    assert refused.returncode != 0
    assert note not in refused.stdout
    assert from_the_ui.status_code == 200, from_the_ui.text
    assert from_the_ui.headers["access-control-allow-origin"] == UI_ORIGIN
    [from_the_ui_payload] = json_format.ParseDict(from_the_ui.json(), Payloads()).payloads
    assert note.encode() in from_the_ui_payload.data
    # The server logged something (refusing the wrong token), and never the token or note.
    assert server_log.messages
    assert not [line for line in server_log.messages if token in line or note in line]
