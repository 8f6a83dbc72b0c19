"""`up` and `lab` check the settings the worker and webhook would start with before anything
starts: a mistake is one line naming the variable and what it takes, the exit status is 2,
and no process was started (the state directory is not even made)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codec.aesgcm import generate_key_entry
from stack.processes import free_port
from tests.support import PROJECT_ROOT


def _starter(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "starter.py", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _options(state_dir: Path) -> list[str]:
    return [
        "--state-dir",
        str(state_dir),
        "--temporal-port",
        str(free_port()),
        "--ui-port",
        str(free_port()),
        "--lab-aws-port",
        str(free_port()),
        "--webhook-port",
        str(free_port()),
    ]


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUENCH_", "AWS_"))}
    # No AWS credentials anywhere, as on a fresh laptop.
    env["AWS_SHARED_CREDENTIALS_FILE"] = env["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env | settings


@pytest.mark.parametrize(
    ("faults", "says"),
    [
        (
            '{"iam:DeleteUsr": "access_denied"}',
            "error: QUENCH_LAB_FAULTS: 'iam:DeleteUsr': iam has no operation 'DeleteUsr'; "
            "did you mean iam:DeleteUser?",
        ),
        (
            '{"iam:DeleteUser": "acces_denied"}',
            "error: QUENCH_LAB_FAULTS: 'iam:DeleteUser': unknown fault 'acces_denied'; one of "
            "access_denied, throttling, internal_error, not_implemented",
        ),
        (
            "{iam:DeleteUser: access_denied}",
            "error: QUENCH_LAB_FAULTS is not JSON (Expecting property name enclosed in double "
            "quotes: line 1 column 2 (char 1)); it takes a JSON object of service:Operation "
            'to a fault, e.g. {"iam:DeleteUser": "access_denied", ',
        ),
    ],
    ids=["operation", "fault", "json"],
)
@pytest.mark.parametrize("command", ["up", "lab"])
def test_a_lab_faults_typo_is_one_line_before_anything_starts(tmp_path, faults, says, command):
    state_dir = tmp_path / "state"
    args = ["up"] if command == "up" else ["lab", "user-key"]

    ran = _starter(*args, *_options(state_dir), env=_env(tmp_path, QUENCH_LAB_FAULTS=faults))

    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert ran.stderr == ""
    (line,) = ran.stdout.splitlines()
    assert line.startswith(says)
    assert not state_dir.exists()


def test_up_without_the_lab_needs_its_buckets_and_credentials_before_anything_starts(tmp_path):
    state_dir = tmp_path / "state"

    ran = _starter("up", "--no-lab", *_options(state_dir), env=_env(tmp_path))

    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert ran.stdout.splitlines() == [
        "error: missing required settings: QUENCH_EVIDENCE_BUCKET, QUENCH_CLOUDTRAIL_BUCKET, "
        "QUENCH_ACCOUNT_ID (or QUENCH_ACCOUNTS_FILE) (needed without the lab)"
    ]
    assert not state_dir.exists()

    buckets = {
        "QUENCH_EVIDENCE_BUCKET": "evidence",
        "QUENCH_CLOUDTRAIL_BUCKET": "trail",
        "QUENCH_ACCOUNT_ID": "123456789012",
    }
    ran = _starter("up", "--no-lab", *_options(state_dir), env=_env(tmp_path, **buckets))

    assert ran.returncode == 2, ran.stdout + ran.stderr
    (line,) = ran.stdout.splitlines()
    assert "set QUENCH_PAYLOAD_KEYS" in line and "QUENCH_ENCRYPT_PAYLOADS=false" in line
    assert not state_dir.exists()

    key_id, key = generate_key_entry()
    buckets["QUENCH_PAYLOAD_KEYS"] = json.dumps({key_id: key})
    ran = _starter("up", "--no-lab", *_options(state_dir), env=_env(tmp_path, **buckets))

    assert ran.returncode == 2, ran.stdout + ran.stderr
    (line,) = ran.stdout.splitlines()
    assert line.startswith("error: no AWS credentials for the worker: without the lab it acts ")
    assert "AWS_PROFILE" in line
    assert not state_dir.exists()
