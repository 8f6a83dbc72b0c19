"""Quench's command line: run the embedded stack with the lab, and steer cases.

python starter.py up                  # Temporal, lab AWS, worker, webhook, lab case
python starter.py status CASE_ID
python starter.py approve CASE_ID ACTION_ID --by NAME --reason TEXT
python starter.py reject CASE_ID ACTION_ID --by NAME --reason TEXT
python starter.py note CASE_ID --by NAME --text TEXT
"""

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError

from config.settings import LAB_WEBHOOK_TOKEN, Settings
from config.temporal import connect
from models.case import ApprovalInput, CaseStatus, NoteInput, Phase
from stack.binaries import MissingBinaryError, temporal_cli
from stack.embedded import EmbeddedStack, StackConfig
from stack.processes import StackError
from workflows.case import CaseWorkflow


def say(message: str) -> None:
    print(message, flush=True)


def approve_command(stack_address: str, case_id: str, action_id: str) -> str:
    payload = json.dumps({"action_id": action_id, "approver": "you@example.com", "reason": "..."})
    return (
        f"{shlex.quote(str(temporal_cli()))} workflow signal --address {stack_address} "
        f"--workflow-id {case_id} --name approve --input {shlex.quote(payload)}"
    )


async def wait_for_case(client: Client, case_id: str) -> CaseStatus:
    """The case's status once it waits for a human or has closed (or after two minutes)."""
    handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)
    status = await handle.query(CaseWorkflow.status)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(120):
            while not (status.pending_actions() or status.phase is Phase.CLOSED):
                await asyncio.sleep(0.5)
                status = await handle.query(CaseWorkflow.status)
    return status


def cmd_up(args: argparse.Namespace) -> int:
    config = StackConfig(
        state_dir=args.state_dir,
        temporal_port=args.temporal_port,
        ui_port=args.ui_port,
        lab_aws_port=args.lab_aws_port,
        webhook_port=args.webhook_port,
        lab=not args.no_lab,
    )
    stack = EmbeddedStack(config)
    say(f"Starting Quench's embedded stack (state in {stack.state_dir})")
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        stack.start(report=lambda line: say(f"  {line}"))
        say(f"Temporal Web UI: {stack.ui_url}")
        say(f"Webhook:         {stack.webhook_url}/v1/events/eventbridge")
        if config.lab:
            say(f"Lab AWS (moto):  {stack.aws_url}")
            from lab.scenario import run_scenario

            say("Lab scenario: EC2 role credentials stolen and abused (resumed if already run)")
            case = run_scenario(
                stack.aws_url,
                stack.webhook_url,
                LAB_WEBHOOK_TOKEN,
                Settings(lab=True).webhook_token_header,
                stack.state_dir,
            )
            attack = case.attack
            say(
                f"  stolen key {attack.stolen_access_key_id} of {case.world.role_name} on "
                f"{case.world.instance_id}, used from the threat list; backdoor user "
                f"{attack.backdoor_user}; {attack.records_delivered} CloudTrail records delivered"
            )
            status = asyncio.run(_case_status(stack, case.case_id))
            say("")
            say(f"Case {case.case_id}: phase {status.phase.value}")
            say(f"  follow it: {stack.case_url(case.case_id)}")
            for action in status.pending_actions():
                say(f"  waiting for approval of {action.id}: {action.title}")
                say("  approve it from another terminal:")
                say(f"    {approve_command(stack.temporal_address, case.case_id, action.id)}")
                say(
                    f"  or: {sys.executable} starter.py approve {case.case_id} {action.id} "
                    f"--by you@example.com --reason 'confirmed malicious'"
                )
        say("")
        say("The stack is up. Press Ctrl-C to stop it (cases persist; `up` resumes them).")
        while not stopping:
            dead = stack.check_running()
            if dead:
                say(f"stopping: {', '.join(dead)} exited; see {stack.state_dir / 'logs'}")
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except (StackError, MissingBinaryError) as exc:
        say(f"error: {exc}")
        return 1
    finally:
        say("Stopping the stack...")
        stack.stop()
        say("Stopped.")
    return 0


async def _case_status(stack: EmbeddedStack, case_id: str) -> CaseStatus:
    settings = Settings(lab=True, temporal_address=stack.temporal_address)
    client = await connect(settings)
    return await wait_for_case(client, case_id)


async def _steer(args: argparse.Namespace) -> int:
    client = await connect(Settings())
    handle = client.get_workflow_handle_for(CaseWorkflow.run, args.case_id)
    if args.command in {"approve", "reject"}:
        decision = ApprovalInput(action_id=args.action_id, approver=args.by, reason=args.reason)
        signal_fn = CaseWorkflow.approve if args.command == "approve" else CaseWorkflow.reject
        await handle.signal(signal_fn, decision)
        say(f"{args.command} sent for {args.action_id} on {args.case_id}")
        return 0
    if args.command == "note":
        await handle.signal(CaseWorkflow.add_note, NoteInput(author=args.by, text=args.text))
        say(f"note added to {args.case_id}")
        return 0
    status = await handle.query(CaseWorkflow.status)
    if args.json:
        say(status.model_dump_json(indent=2))
    else:
        say(
            f"{status.case_id}: {status.phase.value}"
            + (f" ({status.outcome})" if status.outcome else "")
        )
        for action in status.actions:
            say(f"  {action.id:<12} {action.status.value:<17} {action.title}")
        for record in status.evidence:
            say(f"  evidence {record.uri} sha256={record.sha256}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="starter.py", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run the embedded stack (and the lab scenario)")
    up.add_argument("--state-dir", type=Path, default=Path(".quench"))
    up.add_argument("--no-lab", action="store_true", help="no moto, no scenario: real AWS")
    up.add_argument("--temporal-port", type=int, default=7233)
    up.add_argument("--ui-port", type=int, default=8233)
    up.add_argument("--lab-aws-port", type=int, default=5055)
    up.add_argument("--webhook-port", type=int, default=8787)
    status = commands.add_parser("status", help="show a case")
    status.add_argument("case_id")
    status.add_argument("--json", action="store_true")
    for name in ("approve", "reject"):
        decide = commands.add_parser(name, help=f"{name} a pending action of a case")
        decide.add_argument("case_id")
        decide.add_argument("action_id")
        decide.add_argument("--by", required=True, help="who decides (recorded on the case)")
        decide.add_argument("--reason", required=True)
    note = commands.add_parser("note", help="add a note to a case")
    note.add_argument("case_id")
    note.add_argument("--by", required=True)
    note.add_argument("--text", required=True)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "up":
        return cmd_up(args)
    try:
        return asyncio.run(_steer(args))
    except (RPCError, RuntimeError) as exc:
        # RuntimeError is how the client reports a Temporal it cannot connect to.
        say(f"error: {exc}")
        return 1
    except BrokenPipeError:
        # The reader went away (`status | head`): nothing left to say to it.
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    exit_code = main()
    # A short-lived Temporal client can abort during interpreter teardown when the SDK's
    # native threads outlive it (temporalio/sdk-python#300): leave without the teardown,
    # once everything is written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
