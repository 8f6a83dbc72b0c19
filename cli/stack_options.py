"""The embedded stack's options (state directory and ports), shared by `up`, `lab` and
`report --lab`, so each finds the stack the others run.

`up` records the ports it runs on in its state directory; `lab` and `report --lab` take
them from there for any port not given, so a stack started on other ports is found with
`--state-dir` alone (or nothing, for the default `.quench`).
"""

import argparse
import json
from pathlib import Path

from stack.embedded import StackConfig

RECORDED = "stack.json"  # in the state directory, written by `up`
PORTS = ("temporal_port", "ui_port", "lab_aws_port", "webhook_port", "codec_port")


def add_stack_options(command: argparse.ArgumentParser) -> None:
    defaults = StackConfig()
    command.add_argument("--state-dir", type=Path, default=defaults.state_dir)
    for port in PORTS:
        option = "--" + port.replace("_", "-")
        command.add_argument(
            option, type=int, default=None, help=f"default {getattr(defaults, port)}"
        )


def stack_config(args: argparse.Namespace, lab: bool, recorded: bool = True) -> StackConfig:
    """The stack the options name. A port not given is the one `up` recorded in the state
    directory (unless `recorded` is False, as for `up` itself), or else the default."""
    known = recorded_ports(args.state_dir) if recorded else {}
    ports = {
        port: getattr(args, port) or known.get(port, getattr(StackConfig, port)) for port in PORTS
    }
    return StackConfig(state_dir=args.state_dir, lab=lab, **ports)


def record_ports(config: StackConfig) -> None:
    """What `up` runs on, for the `lab` and `report --lab` that come after it."""
    recorded = {port: getattr(config, port) for port in PORTS}
    (config.state_dir / RECORDED).write_text(json.dumps(recorded, indent=2) + "\n")


def recorded_ports(state_dir: Path) -> dict[str, int]:
    try:
        recorded = json.loads((state_dir / RECORDED).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {port: recorded[port] for port in PORTS if isinstance(recorded.get(port), int)}
