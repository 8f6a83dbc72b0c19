"""The lab's AWS server for tests: `python -m lab.aws_server` on a free port, as the
embedded stack runs it."""

from pathlib import Path

from stack.embedded import LAB_READY_FILE, lab_aws_process
from stack.processes import ManagedProcess


def start_lab_server(state_dir: Path, port: int, *options: str) -> ManagedProcess:
    """Started and ready; `options` are more of its command line (--checkpoint-every...)."""
    process = lab_aws_process(state_dir, port, "127.0.0.1", *options, ready_timeout=60)
    (state_dir / LAB_READY_FILE).unlink(missing_ok=True)
    process.start()
    return process
