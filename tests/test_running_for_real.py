"""The README's "Running against your AWS", followed to the letter against a moto server
that is not the lab: a dev server, `quench setup`, the worker, the webhook, a finding posted
with curl, and the case it opened listed by `quench list`.

The test changes only what it must: the settings block becomes the same variables with
this world's values, the ports become free ones, and the install step is the virtualenv
the suite runs in. Everything else runs as the README prints it, in one bash.
"""

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest
from temporalio.client import Client

from config import names
from stack.processes import free_port
from tests.support import user_key_event

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Running against your AWS"
ACCOUNT = "123456789012"  # moto's account: the one its credentials belong to
USER = "deploy-bot"


def readme_blocks() -> list[str]:
    """The section's shell blocks, in order."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index(SECTION)
    end = readme.index("\n#", start + len(SECTION))  # the next heading, of any level
    return re.findall(r"```sh\n(.*?)```", readme[start:end], flags=re.DOTALL)


def exported(block: str) -> dict[str, str]:
    """Each variable the block exports, with its value as written (a comment left off)."""
    return dict(re.findall(r"^export (\w+)=(.+?)(?:\s+#.*)?$", block, flags=re.MULTILINE))


@pytest.fixture
def moto_server(tmp_path: Path):
    """A plain moto server: no lab, no recording, nothing of Quench's world in it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=(tmp_path / "moto.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    s3 = session().client("s3", endpoint_url=url)
    for _ in range(200):
        try:
            s3.list_buckets()
            break
        except Exception:  # not listening yet
            if process.poll() is not None:
                raise RuntimeError("moto server exited") from None
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


FAKE_CREDENTIALS = {
    "aws_access_key_id": "AKIAWORKERNOTTHELAB1",
    "aws_secret_access_key": "not-a-secret",
}


def session() -> boto3.Session:
    return boto3.Session(
        FAKE_CREDENTIALS["aws_access_key_id"],
        FAKE_CREDENTIALS["aws_secret_access_key"],
        region_name="us-east-1",
    )


def a_world(url: str, evidence: str, trail: str) -> str:
    """Buckets, and a user whose key an attacker took; that key."""
    s3 = session().client("s3", endpoint_url=url)
    s3.create_bucket(Bucket=evidence)
    s3.create_bucket(Bucket=trail)
    iam = session().client("iam", endpoint_url=url)
    user = iam.create_user(UserName=USER)["User"]
    key = iam.create_access_key(UserName=USER)["AccessKey"]["AccessKeyId"]
    iam.tag_user(UserName=USER, Tags=[{"Key": "team", "Value": "ci"}])
    assert user["Arn"].startswith(f"arn:aws:iam::{ACCOUNT}:")
    return key


def stop_group(group: int) -> None:
    """Stop the dev server, worker and webhook the script left in the background."""
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(group, signal.SIGKILL)


def test_readme_running_against_your_aws(tmp_path: Path, moto_server: str) -> None:
    blocks = readme_blocks()
    assert len(blocks) == 5, "install, settings, Temporal, processes, a finding"
    install, settings_block, temporal, processes, finding = blocks
    assert install.split() == ["make", "install", ".", ".venv/bin/activate"]
    readme_settings = exported(settings_block)

    evidence, trail = "quench-evidence-test", "cloudtrail-test"
    access_key_id = a_world(moto_server, evidence, trail)
    (tmp_path / "finding.json").write_text(
        json.dumps(
            user_key_event(access_key_id, USER, "AIDAEXAMPLEDEPLOYBOT", "198.51.100.7", ACCOUNT)
        )
    )
    ports = {"7233": free_port(), "8233": free_port(), "8787": free_port(), "8089": free_port()}
    ours = {
        "QUENCH_ACCOUNT_ID": ACCOUNT,
        "QUENCH_EVIDENCE_BUCKET": evidence,
        "QUENCH_CLOUDTRAIL_BUCKET": trail,
        # openssl and quench keygen, as written
        "QUENCH_WEBHOOK_TOKEN": readme_settings["QUENCH_WEBHOOK_TOKEN"],
        "QUENCH_PAYLOAD_KEYS": readme_settings["QUENCH_PAYLOAD_KEYS"],
        "QUENCH_CODEC_TOKEN": readme_settings["QUENCH_CODEC_TOKEN"],
        "QUENCH_TEMPORAL_ADDRESS": f"127.0.0.1:{ports['7233']}",
        "QUENCH_TEMPORAL_UI_URL": f"http://127.0.0.1:{ports['8233']}",
        "QUENCH_WEBHOOK_PORT": str(ports["8787"]),
        "QUENCH_CODEC_PORT": str(ports["8089"]),
        "QUENCH_DRY_RUN": "true",
    }
    # The README names every setting this run needs, and no other.
    assert set(readme_settings) == set(ours)
    settings = "\n".join(f"export {name}={value}" for name, value in ours.items())

    script = "\n".join(["set -eu", settings, temporal, processes, finding])
    # In one pass, whole numbers only: a free port may hold another's digits.
    script = re.sub(r"(?<!\d)(7233|8233|8787|8089)(?!\d)", lambda m: str(ports[m[1]]), script)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("QUENCH_", "AWS_", "OTEL_"))
    }
    env.update(
        {
            # What `. .venv/bin/activate` does for the commands.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "VIRTUAL_ENV": str(Path(sys.executable).parents[1]),
            # The AWS CLI's chain, pointed at this moto server instead of AWS.
            "AWS_ACCESS_KEY_ID": FAKE_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIALS["aws_secret_access_key"],
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "QUENCH_AWS_ENDPOINT_URL": moto_server,
            "PYTHONPATH": str(ROOT),
        }
    )
    output = tmp_path / "output.log"
    with output.open("wb") as out:
        shell = subprocess.Popen(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            exit_code = shell.wait(timeout=240)
            case_id = names.case_workflow_id(ACCOUNT, access_key_id)
            if exit_code == 0:
                stored, shown = asyncio.run(
                    _history_and_what_the_ui_shows(ports["7233"], ports["8233"], case_id)
                )
        finally:
            stop_group(shell.pid)
    said = output.read_text()
    assert exit_code == 0, said
    assert "is ready for Quench" in said, said
    assert '"outcome":"new_case"' in said.replace(" ", ""), said
    # `quench list`'s table names the case it opened.
    assert case_id in said.split('"outcome"')[-1], said

    # What only the finding holds (the workflow id and search attributes name the key and
    # the user, in clear by design): absent from the history as Temporal stores it...
    for clear in (b"198.51.100.7", b"AIDAEXAMPLEDEPLOYBOT", b"aws-cli/2.15.0"):
        assert clear not in stored
    # ...and there for the Web UI, which reads it through the codec server.
    assert "198.51.100.7" in shown and "AIDAEXAMPLEDEPLOYBOT" in shown


async def _history_and_what_the_ui_shows(
    temporal_port: int, ui_port: int, case_id: str
) -> tuple[bytes, str]:
    """The case's history as stored (a client without the keys), and its payloads decoded
    as the Web UI decodes them: through the codec endpoint the UI is configured with."""
    client = await Client.connect(f"127.0.0.1:{temporal_port}")
    history = await client.get_workflow_handle(case_id).fetch_history()
    stored = b"".join(event.SerializeToString() for event in history.events)
    ui = f"http://127.0.0.1:{ui_port}"
    async with httpx.AsyncClient(timeout=10) as http:
        endpoint = (await http.get(f"{ui}/api/v1/settings")).json()["Codec"]["Endpoint"]
        payloads = [
            {"metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
             "data": base64.b64encode(p.data).decode()}
            for p in history.events[0].workflow_execution_started_event_attributes.input.payloads
        ]  # fmt: skip
        answer = await http.post(
            f"{endpoint}/decode",
            json={"payloads": payloads},
            headers={"Origin": ui, "X-Namespace": "default"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == ui
    shown = "".join(base64.b64decode(p["data"]).decode() for p in answer.json()["payloads"])
    return stored, shown
