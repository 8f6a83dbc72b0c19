"""Quench's command line: run the embedded stack with the lab, and steer cases.

python starter.py up                  # Temporal, lab AWS, worker, webhook, lab case
python starter.py up --scenario user-key
python starter.py lab user-key        # another lab scenario, on the stack already up
python starter.py status CASE_ID
python starter.py approve CASE_ID ACTION_ID --by NAME --reason TEXT
python starter.py reject CASE_ID ACTION_ID --by NAME --reason TEXT
python starter.py note CASE_ID --by NAME --text TEXT
python starter.py report CASE_ID [--json] [--lab]   # the post-incident report
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

from botocore.exceptions import BotoCoreError, ClientError
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.aws import AwsClients
from activities.evidence import EvidenceStore
from config.settings import LAB_WEBHOOK_TOKEN, Settings
from config.temporal import connect
from lab.scenario import SCENARIOS, TITLES, Scenario, run_scenario, summary
from models.case import ApprovalInput, CaseStatus, NoteInput, Phase
from stack.binaries import MissingBinaryError, temporal_cli
from stack.embedded import EmbeddedStack, StackConfig
from stack.processes import StackError, port_open
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
    config = _stack_config(args, lab=not args.no_lab)
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
            run_lab_scenario(stack, args.scenario)
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


def run_lab_scenario(stack: EmbeddedStack, scenario: Scenario) -> None:
    """Run (or resume) a lab scenario on the stack, and say where its case stands."""
    say(f"Lab scenario: {TITLES[scenario]} (resumed if already run)")
    case = run_scenario(
        stack.aws_url,
        stack.webhook_url,
        LAB_WEBHOOK_TOKEN,
        Settings(lab=True).webhook_token_header,
        stack.state_dir,
        scenario,
    )
    say(f"  {summary(case)}")
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


def cmd_lab(args: argparse.Namespace) -> int:
    """A lab scenario against the stack `up` already runs with the same options."""
    from botocore.exceptions import BotoCoreError, ClientError

    config = _stack_config(args, lab=True)
    try:
        stack = EmbeddedStack(config)
    except MissingBinaryError as exc:
        say(f"error: {exc}")
        return 1
    down = [
        name
        for name, port in (
            ("lab AWS", config.lab_aws_port),
            ("webhook", config.webhook_port),
            ("temporal", config.temporal_port),
        )
        if not port_open(config.host, port)
    ]
    if down:
        say(
            f"error: no lab stack is up with state in {stack.state_dir} ({', '.join(down)} not "
            f"listening); start it with `{sys.executable} starter.py up`, same options"
        )
        return 1
    try:
        run_lab_scenario(stack, args.scenario)
    except (RuntimeError, BotoCoreError, ClientError, RPCError) as exc:
        # RuntimeError: the scenario's own errors, and how the Temporal client reports a
        # server it cannot connect to.
        say(f"error: {exc}")
        return 1
    return 0


def _stack_config(args: argparse.Namespace, lab: bool) -> StackConfig:
    return StackConfig(
        state_dir=args.state_dir,
        temporal_port=args.temporal_port,
        ui_port=args.ui_port,
        lab_aws_port=args.lab_aws_port,
        webhook_port=args.webhook_port,
        lab=lab,
    )


async def _case_status(stack: EmbeddedStack, case_id: str) -> CaseStatus:
    settings = Settings(lab=True, temporal_address=stack.temporal_address)
    client = await connect(settings)
    return await wait_for_case(client, case_id)


async def _steer(args: argparse.Namespace) -> int:
    client = await connect(Settings())
    handle = client.get_workflow_handle_for(CaseWorkflow.run, args.case_id)
    if args.command in {"approve", "reject"}:
        # As an update: the case answers, or says why it refuses (exit status 1).
        decision = ApprovalInput(action_id=args.action_id, approver=args.by, reason=args.reason)
        update = (
            CaseWorkflow.approve_action
            if args.command == "approve"
            else (CaseWorkflow.reject_action)
        )
        try:
            result = await handle.execute_update(update, decision)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            say(f"refused: {cause.message if isinstance(cause, ApplicationError) else exc}")
            return 1
        say(
            f"{args.command} sent for {args.action_id} on {args.case_id}: "
            f"{result.status.value} ({result.approvals} of {result.needed} approvals)"
        )
        return 0
    if args.command == "note":
        notes = await handle.execute_update(
            CaseWorkflow.add_note_now, NoteInput(author=args.by, text=args.text)
        )
        say(f"note added to {args.case_id} ({notes.notes} notes)")
        return 0
    status = await handle.query(CaseWorkflow.status)
    if args.command == "report":
        return _print_report(args, status)
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


def _print_report(args: argparse.Namespace, status: CaseStatus) -> int:
    """The report from the evidence bucket, checked against the SHA-256 the case holds."""
    if status.report is None:
        say(f"error: {status.case_id} has no report yet (phase {status.phase.value})")
        return 1
    record = status.report.json_report if args.json else status.report.markdown_report
    store = EvidenceStore(AwsClients.from_settings(Settings()), record.bucket)
    try:
        body = store.read_verified(record)
    except ApplicationError as exc:
        say(f"error: {exc}")
        return 1
    say(body.decode().rstrip("\n"))
    return 0


def _stack_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--state-dir", type=Path, default=Path(".quench"))
    command.add_argument("--temporal-port", type=int, default=7233)
    command.add_argument("--ui-port", type=int, default=8233)
    command.add_argument("--lab-aws-port", type=int, default=5055)
    command.add_argument("--webhook-port", type=int, default=8787)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="starter.py", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run the embedded stack (and the lab scenario)")
    _stack_options(up)
    up.add_argument("--no-lab", action="store_true", help="no moto, no scenario: real AWS")
    up.add_argument(
        "--scenario", choices=SCENARIOS, default="ec2-role", help="the lab scenario to run"
    )
    lab = commands.add_parser("lab", help="run a lab scenario on the stack `up` runs")
    lab.add_argument("scenario", choices=SCENARIOS)
    _stack_options(lab)
    status = commands.add_parser("status", help="show a case")
    status.add_argument("case_id")
    status.add_argument("--json", action="store_true")
    for name in ("approve", "reject"):
        decide = commands.add_parser(name, help=f"{name} a pending action of a case")
        decide.add_argument("case_id")
        decide.add_argument("action_id")
        decide.add_argument("--by", required=True, help="who decides (recorded on the case)")
        decide.add_argument("--reason", required=True)
    report = commands.add_parser("report", help="print a closed case's post-incident report")
    report.add_argument("case_id")
    report.add_argument("--json", action="store_true", help="the JSON form, not the Markdown")
    report.add_argument("--lab", action="store_true", help="read it from the lab's AWS")
    _stack_options(report)
    note = commands.add_parser("note", help="add a note to a case")
    note.add_argument("case_id")
    note.add_argument("--by", required=True)
    note.add_argument("--text", required=True)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "up":
        return cmd_up(args)
    if args.command == "lab":
        return cmd_lab(args)
    if getattr(args, "lab", False):
        # The lab's AWS and Temporal, as `up` runs them with the same options.
        os.environ.update(EmbeddedStack(_stack_config(args, lab=True)).child_env())
    try:
        return asyncio.run(_steer(args))
    except (BotoCoreError, ClientError) as exc:
        say(f"error: cannot read the report: {exc}")
        return 1
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
