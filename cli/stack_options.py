"""The embedded stack's options (state directory and ports), shared by `up`, `lab` and
`report --lab`, so each finds the stack the others run."""

import argparse
from pathlib import Path

from stack.embedded import StackConfig


def add_stack_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--state-dir", type=Path, default=Path(".quench"))
    command.add_argument("--temporal-port", type=int, default=7233)
    command.add_argument("--ui-port", type=int, default=8233)
    command.add_argument("--lab-aws-port", type=int, default=5055)
    command.add_argument("--webhook-port", type=int, default=8787)


def stack_config(args: argparse.Namespace, lab: bool) -> StackConfig:
    return StackConfig(
        state_dir=args.state_dir,
        temporal_port=args.temporal_port,
        ui_port=args.ui_port,
        lab_aws_port=args.lab_aws_port,
        webhook_port=args.webhook_port,
        lab=lab,
    )
