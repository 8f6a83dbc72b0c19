"""The lab's AWS server for tests: `python -m lab.aws_server` on a free port, as the
embedded stack runs it."""

import os
import signal
import time
from pathlib import Path

from stack.embedded import LAB_READY_FILE, lab_aws_process
from stack.processes import ManagedProcess, StackError

READY_TIMEOUT = 60.0


def start_lab_server(state_dir: Path, port: int, *options: str) -> ManagedProcess:
    """Started and ready; `options` are more of its command line (--checkpoint-every...)."""
    (process,) = start_lab_servers((state_dir, port, options))
    return process


def start_lab_servers(*servers: tuple[Path, int, tuple[str, ...]]) -> list[ManagedProcess]:
    """Servers started at once, each on its state directory, port and options, and ready.
    Spawned from this thread: a server gets SIGTERM when the thread that started it ends."""
    processes = []
    for state_dir, port, options in servers:
        process = lab_aws_process(state_dir, port, "127.0.0.1", *options)
        (state_dir / LAB_READY_FILE).unlink(missing_ok=True)
        process.spawn()
        processes.append(process)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = list(processes)
        while waiting:
            for process in list(waiting):
                if (code := process.exit_code()) is not None:
                    raise StackError(f"lab-aws exited with {code}:\n{process.log_tail()}")
                if process.ready():
                    waiting.remove(process)
            if waiting and time.monotonic() > deadline:
                raise StackError(f"lab-aws not ready after {READY_TIMEOUT:.0f}s")
            time.sleep(0.1)
    except BaseException:
        for process in processes:
            discard(process)
        raise
    return processes


def discard(process: ManagedProcess) -> None:
    """Stop a server whose state no test reads again: killed, so it spends no seconds on
    the checkpoint a stop writes (a stop's checkpoint is tested where it is read)."""
    if process.pid is not None and process.running():
        os.killpg(process.pid, signal.SIGKILL)
        while process.running():
            time.sleep(0.01)
    process.stop()
