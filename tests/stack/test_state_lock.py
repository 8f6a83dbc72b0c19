"""One stack per state directory: a second is refused at once, naming the holder, and
touches nothing; a holder killed with -9 leaves no lock behind."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stack.embedded import EmbeddedStack, StackConfig
from stack.processes import free_port
from stack.state_lock import StateDirInUseError, StateDirLock

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Another process takes the lock with Quench's own code and holds it.
HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from stack.state_lock import StateDirLock\n"
    "StateDirLock(Path(sys.argv[1])).acquire()\n"
    "print('holding', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock on tmp_path's state directory."""
    state_dir = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state_dir)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "holding\n"
    yield process
    process.kill()
    process.wait()


def test_a_second_holder_is_refused_naming_the_directory_and_the_holder(tmp_path, holder):
    state_dir = tmp_path / "state"
    lock = StateDirLock(state_dir)
    with pytest.raises(StateDirInUseError) as refused:
        lock.acquire()
    assert str(refused.value) == (
        f"{state_dir} is in use by another `up` (pid {holder.pid}); stop that one first, "
        f"or give this one its own --state-dir"
    )
    assert not lock.held
    assert holder.poll() is None


def test_a_lock_left_by_a_process_killed_with_minus_9_does_not_block(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    assert holder.wait() == -signal.SIGKILL

    lock = StateDirLock(tmp_path / "state")
    lock.acquire()
    assert lock.held
    assert lock.path.read_text().strip() == str(os.getpid())
    lock.release()
    # Released, it is free for the next one, and says no one holds it.
    assert lock.path.read_text() == ""
    again = StateDirLock(tmp_path / "state")
    again.acquire()
    again.release()


def test_a_refused_stack_touches_nothing(tmp_path, holder):
    state_dir = tmp_path / "state"
    # What a running stack has in its state directory, which a second start would clean.
    (state_dir / "pids").mkdir()
    worker_pid = state_dir / "pids" / "worker.pid"
    worker_pid.write_text(str(holder.pid))
    lab_ready = state_dir / "lab-aws.ready"
    lab_ready.write_text("")
    before = sorted(p.relative_to(state_dir) for p in state_dir.rglob("*"))
    stack = EmbeddedStack(
        StackConfig(
            state_dir=state_dir,
            temporal_port=free_port(),
            ui_port=free_port(),
            lab_aws_port=free_port(),
            webhook_port=free_port(),
            codec_port=free_port(),
        )
    )

    with pytest.raises(StateDirInUseError, match=f"pid {holder.pid}"):
        stack.start()

    assert not stack.holds_state_dir
    assert sorted(p.relative_to(state_dir) for p in state_dir.rglob("*")) == before
    assert worker_pid.read_text() == str(holder.pid)
    assert holder.poll() is None
    stack.stop()  # as `up` would on its way out: still nothing of the holder's is touched
    assert worker_pid.exists() and holder.poll() is None


def test_a_released_lock_is_free_for_another_process(tmp_path):
    lock = StateDirLock(tmp_path)
    lock.acquire()
    lock.acquire()  # taking it again in the same holder changes nothing
    lock.release()
    other = subprocess.run(
        [sys.executable, "-c", HOLDER.replace("time.sleep(600)", ""), str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (other.returncode, other.stdout) == (0, "holding\n"), other.stderr
