"""The stack options: `lab` and `report --lab` find the ports `up` recorded in its state
directory; a port given on the command line wins; `up` itself takes only what it is given."""

import argparse
import os

import pytest

import starter
from cli.commands import run_case_command
from cli.stack_options import add_stack_options, record_ports, stack_config
from stack.embedded import StackConfig


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_stack_options(parser)
    return parser.parse_args(list(argv))


def test_the_ports_up_recorded_are_found_by_the_state_dir_alone(tmp_path):
    ran = StackConfig(
        state_dir=tmp_path,
        temporal_port=27001,
        ui_port=27002,
        lab_aws_port=27003,
        webhook_port=27004,
    )
    record_ports(ran)

    found = stack_config(_args("--state-dir", str(tmp_path)), lab=True)
    assert (found.temporal_port, found.ui_port, found.lab_aws_port, found.webhook_port) == (
        27001,
        27002,
        27003,
        27004,
    )
    given = stack_config(_args("--state-dir", str(tmp_path), "--webhook-port", "27104"), lab=True)
    assert (given.temporal_port, given.webhook_port) == (27001, 27104)
    # `up` starts on what it is given, or the defaults, whatever ran there before.
    up = stack_config(_args("--state-dir", str(tmp_path)), lab=True, recorded=False)
    assert (up.temporal_port, up.webhook_port) == (StackConfig.temporal_port, 8787)


def test_without_a_record_or_with_a_damaged_one_the_defaults_stand(tmp_path):
    assert stack_config(_args("--state-dir", str(tmp_path)), lab=True).temporal_port == 7233
    (tmp_path / "stack.json").write_text("{not json")
    assert stack_config(_args("--state-dir", str(tmp_path)), lab=True).temporal_port == 7233


SHELLS = [({}, "127.0.0.1:7233"), ({"QUENCH_TEMPORAL_ADDRESS": "10.0.0.9:7233"}, "10.0.0.9:7233")]


@pytest.mark.parametrize(("shell", "expected"), SHELLS)
def test_a_lab_case_command_keeps_the_temporal_the_shell_names(
    tmp_path, monkeypatch, shell, expected
):
    """`report --lab` reads the lab's AWS, but the Temporal the shell names is still the one
    meant (a stack on other ports, a server of one's own)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QUENCH_")}
    monkeypatch.setattr(os, "environ", clean | shell)
    seen: dict[str, str] = {}

    async def handler(args, settings) -> int:
        seen["temporal"] = settings.temporal_address
        seen["aws"] = settings.aws_endpoint_url or ""
        return 0

    args = starter.parser().parse_args(["report", "case-1", "--lab", "--state-dir", str(tmp_path)])
    args.handler = handler
    assert run_case_command(args, "quench") == 0
    assert seen["temporal"] == expected
    assert seen["aws"].startswith("http://127.0.0.1:")  # the lab's AWS all the same
