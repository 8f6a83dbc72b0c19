"""The lab's AWS server for tests: `python -m lab.aws_server` on a free port, as the
embedded stack runs it."""

import socket
import sys
from pathlib import Path

from stack.processes import ManagedProcess, port_open


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_lab_server(state_dir: Path, port: int) -> ManagedProcess:
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
        ],
        ready=lambda: (state_dir / "lab-aws.ready").exists() and port_open("127.0.0.1", port),
        state_dir=state_dir,
        ports=[port],
    )
    (state_dir / "lab-aws.ready").unlink(missing_ok=True)
    process.start()
    return process
