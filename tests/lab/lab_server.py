"""The lab's AWS server for tests: `python -m lab.aws_server` on a free port, as the
embedded stack runs it."""

import sys
from pathlib import Path

from stack.processes import ManagedProcess, port_open


def start_lab_server(state_dir: Path, port: int, *options: str) -> ManagedProcess:
    """Started and ready; `options` are more of its command line (--checkpoint-every...)."""
    process = ManagedProcess(
        "lab-aws",
        [
            sys.executable,
            "-m",
            "lab.aws_server",
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            *options,
        ],
        ready=lambda: (state_dir / "lab-aws.ready").exists() and port_open("127.0.0.1", port),
        state_dir=state_dir,
        ports=[port],
    )
    (state_dir / "lab-aws.ready").unlink(missing_ok=True)
    process.start()
    return process
