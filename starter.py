"""Quench's command line: run the embedded stack with the lab, and steer cases.

python starter.py up                  # Temporal, lab AWS, worker, webhook, lab case
python starter.py up --scenario user-key
python starter.py lab user-key        # another lab scenario, on the stack already up
python starter.py start FINDING.json  # open or join cases from findings (- reads stdin)
python starter.py list [--phase P] [--account A] [--awaiting] [--open] ... [--json]
python starter.py show CASE_ID [--json]                     # also: status CASE_ID
python starter.py approve CASE_ID ACTION_ID --by NAME --reason TEXT
python starter.py reject CASE_ID ACTION_ID --by NAME --reason TEXT
python starter.py note CASE_ID --by NAME --text TEXT
python starter.py report CASE_ID [--json] [--lab]   # the post-incident report
python starter.py setup               # a Temporal of your own: namespace, search attributes
python starter.py worker              # the worker, with the QUENCH_* settings
python starter.py webhook             # the finding webhook, on QUENCH_WEBHOOK_HOST:PORT
python starter.py codec-server        # decrypts payloads for the Web UI and `temporal`
python starter.py keygen              # a new payload key, for QUENCH_PAYLOAD_KEYS

Installed, the same command line is `quench` (quench list, quench show CASE_ID, ...).
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
from temporalio.client import Client
from temporalio.service import RPCError

from cli.commands import CommandError, add_case_commands, case_status, run_case_command
from cli.queries import CaseFilter, build_query
from cli.render import program_path, update_command
from cli.serve import add_process_commands, run_process_command
from cli.stack_options import add_stack_options, record_ports, stack_config
from config import names
from config.settings import Settings
from config.temporal import connect
from lab.attack import THREAT_IP, ReturnReport
from lab.organization import MemberReturnReport
from lab.scenario import (
    SCENARIOS,
    TITLES,
    Scenario,
    attacker_returns_to,
    attacker_returns_to_member_account,
    cases_run,
    has_run,
    run_scenario,
    summary,
)
from lab.standing import standing
from models.case import CaseStatus, Phase
from stack.binaries import MissingBinaryError
from stack.embedded import EmbeddedStack
from stack.processes import StackError, port_open
from workflows.case import CaseWorkflow


def say(message: str) -> None:
    print(message, flush=True)


REASON = "confirmed malicious"  # the reason the printed approve commands give


def approve_commands(stack: EmbeddedStack, case_id: str, action_id: str) -> list[str]:
    """Ready-to-paste ways to approve an action: the `temporal` update (the case answers at
    once, or says why it refuses) and Quench's own command."""
    settings = Settings(lab=True, temporal_address=stack.temporal_address)
    payload = {"action_id": action_id, "approver": "you@example.com", "reason": REASON}
    update = update_command(settings, case_id, names.UPDATE_APPROVE, json.dumps(payload))
    installed = Path(sys.executable).with_name("quench")  # the console script, in a venv
    quench = (
        shlex.quote(program_path(installed))
        if installed.exists()
        else f"{shlex.quote(sys.executable)} starter.py"
    )
    by = f"--by you@example.com --reason {shlex.quote(REASON)}"
    # Quench's command finds Temporal by QUENCH_TEMPORAL_ADDRESS: a stack on other ports
    # than the default is named, so that the command works pasted as printed.
    if stack.temporal_address != Settings.model_fields["temporal_address"].default:
        quench = f"QUENCH_TEMPORAL_ADDRESS={shlex.quote(stack.temporal_address)} {quench}"
    return [update, f"{quench} approve {case_id} {action_id} {by}"]


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
    config = stack_config(args, lab=not args.no_lab, recorded=False)
    try:
        stack = EmbeddedStack(config)
        stack.check_settings()
    except (StackError, MissingBinaryError) as exc:
        say(f"error: {exc}")
        return 2 if isinstance(exc, StackError) else 1
    say(f"Starting Quench's embedded stack (state in {stack.state_dir})")
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        stack.start(report=lambda line: say(f"  {line}"))
        record_ports(config)
        say(f"Temporal:        {stack.temporal_address} (QUENCH_TEMPORAL_ADDRESS for quench)")
        say(f"Temporal Web UI: {stack.ui_url}")
        if stack.encrypts:
            say(f"Codec server:    {stack.codec_url} (the Web UI decrypts through it)")
        say(f"Webhook:         {stack.webhook_url}/v1/events/eventbridge")
        if config.lab:
            say_lab_webhook_token()
            say(f"Lab AWS (moto):  {stack.aws_url}")
            if has_run(stack.state_dir, args.scenario):
                say_resumed(stack)
            else:
                run_lab_scenario(stack, args.scenario, args.dry_run)
        say("")
        say("The stack is up. Press Ctrl-C to stop it (cases persist; `up` resumes them).")
        # The stack restarts a worker or webhook that dies, and has said why when it fails.
        while not stopping:
            if stack.failure:
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except (StackError, MissingBinaryError) as exc:
        say(f"error: {exc}")
        return 1
    except (RuntimeError, BotoCoreError, ClientError, RPCError) as exc:
        # The lab scenario's own errors, as `lab` reports them.
        say(f"error: {exc}")
        return 1
    finally:
        # Nothing to stop when the stack did not start, or another stack holds its state.
        if stack.holds_state_dir:
            say("Stopping the stack...")
            stack.stop()
            say("Stopped.")
    return 0


def lab_webhook_token() -> str:
    """The token the lab stack's webhook takes: a configured one, or else the lab's own."""
    return Settings(lab=True).webhook_tokens()[0]


def say_lab_webhook_token() -> None:
    """The lab's published token, for posting findings by hand; a token of the user's own
    is a secret even in the lab, so it is said to be set, not shown."""
    settings = Settings(lab=True)
    header = settings.webhook_token_header
    if settings.webhook_token is not None:
        say(f"Webhook token:   QUENCH_WEBHOOK_TOKEN's, in header {header}")
    else:
        say(f"Webhook token:   {lab_webhook_token()} (in header {header})")


def run_lab_scenario(stack: EmbeddedStack, scenario: Scenario, dry_run: bool = False) -> None:
    """Run (or resume) a lab scenario on the stack, and say where its case stands; with
    `dry_run`, its case changes nothing until a person approves going live."""
    ran_before = has_run(stack.state_dir, scenario)
    say(
        f"Lab scenario: {TITLES[scenario]}" + (" (run before: not run again)" if ran_before else "")
    )
    case = run_scenario(
        stack.aws_url,
        stack.webhook_url,
        lab_webhook_token(),
        Settings(lab=True).webhook_token_header,
        stack.state_dir,
        scenario,
        dry_run,
    )
    # A scenario run before is told as its lab's AWS has it now, not as its attack left it.
    say(f"  now: {standing(stack.aws_url, case)}" if ran_before else f"  {summary(case)}")
    status = asyncio.run(_case_status(stack, case.case_id))
    say("")
    say_case(stack, status)


def say_resumed(stack: EmbeddedStack) -> None:
    """What `up` says when its scenario ran before on this state directory: nothing is run
    again, so it says what of each attack still stands in the lab's AWS (the attack's own
    report is as old as the attack) and where every case of the stack stands now."""
    say("Lab: resumed; no scenario is run again (`lab SCENARIO` runs one not run yet)")
    for case in cases_run(stack.state_dir):
        say(f"  {TITLES[case.attack.scenario]} (case {case.case_id})")
        try:
            say(f"    now: {standing(stack.aws_url, case)}")
        except (BotoCoreError, ClientError) as exc:
            say(f"    now: cannot tell, the lab's AWS did not answer: {exc}")
    shown, more = asyncio.run(_every_case(stack))
    say("")
    say(f"Cases on this stack: {len(shown) + more}")
    for case_id, status, state in shown:
        if status is None:
            say(f"Case {case_id}: {state}")
        else:
            say_case(stack, status, state)
    if more:
        say(f"... and {more} more: `quench list` lists them all")


def say_case(stack: EmbeddedStack, status: CaseStatus, state: str = "running") -> None:
    """One case: its phase and outcome, its open items, and how to approve what waits."""
    where = f"phase {status.phase.value}"
    if status.outcome:
        where += f", outcome {status.outcome}"
    if state not in {"running", "completed"}:
        where += f" ({state})"  # ended without closing: terminated, failed...
    items = len(status.open_items)
    where += f"; {items} open item{'' if items == 1 else 's'}"
    say(f"Case {status.case_id}: {where}")
    say(f"  follow it: {stack.case_url(status.case_id)}")
    for action in status.pending_actions():
        say(f"  waiting for approval of {action.id}: {action.title}")
        update, own = approve_commands(stack, status.case_id, action.id)
        say("  approve it from another terminal:")
        say(f"    {update}")
        say(f"  or: {own}")


def say_attacker_returned(report: ReturnReport) -> None:
    say(
        f"The attacker tried {report.stolen_access_key_id} again from {THREAT_IP}: "
        f"{report.attempts} calls, {report.denied} denied; "
        f"{len(report.log_files)} CloudTrail files delivered"
        + ("" if report.log_files else " (the trail is not logging)")
    )


def say_member_attacker_returned(report: MemberReturnReport) -> None:
    deleted = (
        "deleted the role's AWSRevokeOlderSessions policy with the backdoor user's key; "
        if report.revocation_deleted
        else ""
    )
    say(
        f"The attacker came back to account {report.account_id} from {THREAT_IP}: {deleted}"
        f"{report.stolen_access_key_id} tried {report.attempts} calls, {report.denied} denied"
        f" ({report.denied_by_quarantine} by the organisation's quarantine); "
        f"{len(report.log_files)} CloudTrail files delivered to the organisation trail"
    )


def cmd_lab(args: argparse.Namespace) -> int:
    """A lab scenario against the stack `up` already runs with the same options."""
    if args.attacker_returns and args.scenario not in ("ec2-role", "cross-account"):
        say("error: --attacker-returns is the ec2-role and cross-account scenarios'")
        return 2
    config = stack_config(args, lab=True)
    try:
        stack = EmbeddedStack(config)
        stack.check_settings()
    except (StackError, MissingBinaryError) as exc:
        say(f"error: {exc}")
        return 2 if isinstance(exc, StackError) else 1
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
        if args.attacker_returns and args.scenario == "cross-account":
            say_member_attacker_returned(
                attacker_returns_to_member_account(stack.aws_url, stack.state_dir)
            )
        elif args.attacker_returns:
            say_attacker_returned(attacker_returns_to(stack.aws_url, stack.state_dir))
        else:
            run_lab_scenario(stack, args.scenario, args.dry_run)
    except (RuntimeError, BotoCoreError, ClientError, RPCError) as exc:
        # RuntimeError: the scenario's own errors, and how the Temporal client reports a
        # server it cannot connect to.
        say(f"error: {exc}")
        return 1
    return 0


async def _case_status(stack: EmbeddedStack, case_id: str) -> CaseStatus:
    settings = Settings(lab=True, temporal_address=stack.temporal_address)
    client = await connect(settings)
    return await wait_for_case(client, case_id)


# How many cases a resumed `up` shows with their status (each one a query to a worker).
CASES_SHOWN = 20


async def _every_case(
    stack: EmbeddedStack,
) -> tuple[list[tuple[str, CaseStatus | None, str]], int]:
    """The stack's cases, running ones first, as they stand (the first CASES_SHOWN): each
    with its status (None when it cannot be read, with the reason instead) and Temporal's
    word for its run; and how many more there are."""
    client = await connect(Settings(lab=True, temporal_address=stack.temporal_address))
    # A case continued as new has a run per part; the newest (listed first) stands for it.
    case_ids = list(
        dict.fromkeys([e.id async for e in client.list_workflows(build_query(CaseFilter()))])
    )
    shown: list[tuple[str, CaseStatus | None, str]] = []
    for case_id in case_ids[:CASES_SHOWN]:
        handle = client.get_workflow_handle_for(CaseWorkflow.run, case_id)
        try:
            status, state = await case_status(handle, case_id)
        except CommandError as exc:
            shown.append((case_id, None, str(exc)))
        else:
            shown.append((case_id, status, state))
    return shown, len(case_ids) - len(shown)


DRY_RUN_HELP = (
    "the scenario's case is a dry run: it reads, plans and asks, changes nothing in AWS, "
    "and offers go-live-N once it has decided everything"
)


def parser(prog: str = "starter.py") -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run the embedded stack (and the lab scenario)")
    add_stack_options(up)
    up.add_argument("--no-lab", action="store_true", help="no moto, no scenario: real AWS")
    up.add_argument(
        "--scenario", choices=SCENARIOS, default="ec2-role", help="the lab scenario to run"
    )
    up.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    lab = commands.add_parser("lab", help="run a lab scenario on the stack `up` runs")
    lab.add_argument("scenario", choices=SCENARIOS)
    lab.add_argument(
        "--attacker-returns",
        action="store_true",
        help="ec2-role and cross-account: the attacker tries the stolen key again (run it "
        "while the case watches: the watch sees the attempts); in cross-account, first the "
        "backdoor user's key deletes the role's revocation policy",
    )
    lab.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    add_stack_options(lab)
    add_case_commands(commands)
    add_process_commands(commands)
    return root


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run one command; its exit status. `prog` is how the user invoked Quench, for the
    commands it suggests (`quench`, or this interpreter running starter.py)."""
    args = parser(prog or "starter.py").parse_args(argv)
    if args.command == "up":
        return cmd_up(args)
    if args.command == "lab":
        return cmd_lab(args)
    if args.command in {"worker", "webhook", "setup", "codec-server", "keygen"}:
        return run_process_command(args)
    return run_case_command(args, prog or f"{shlex.quote(sys.executable)} starter.py")


def run() -> None:
    """The `quench` console script and `python starter.py`: main, then exit at once."""
    invoked_as = Path(sys.argv[0]).name
    exit_code = main(prog="quench" if invoked_as == "quench" else None)
    # A short-lived Temporal client can abort during interpreter teardown when the SDK's
    # native threads outlive it (temporalio/sdk-python#300): leave without the teardown,
    # once everything is written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


if __name__ == "__main__":
    run()
