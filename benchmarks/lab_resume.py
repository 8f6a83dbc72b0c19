"""How long the lab's AWS takes to start again, by how much it has recorded: replaying the
whole recording, as it did before checkpoints, and loading its checkpoint.

For each history size this builds a recording of lab-like requests against the real server
(`python -m lab.aws_server`): the lab's seed world, then case after case of a user, its
key, an evidence object and the reads a case makes, several at once. The server is stopped
as the stack stops it (its checkpoint written), then started again, timed from spawn to
ready: on a copy without the checkpoint (full replay) and on the state directory itself
(checkpoint). Medians of the rounds are printed with the machine they ran on.

    python -m benchmarks.lab_resume
    python -m benchmarks.lab_resume --sizes 1000 4000 --rounds 3
    python -m benchmarks.lab_resume --recording .quench/lab-aws.recording.jsonl
"""

import argparse
import hashlib
import json
import re
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.finding_storm import machine
from lab import world as lab_world
from lab.aws_server import RECORDING_NAME
from lab.checkpoint import CHECKPOINT_NAME
from stack.embedded import LAB_READY_FILE, lab_aws_process
from stack.processes import ManagedProcess, StackError, free_port

READY = LAB_READY_FILE
BUCKET = lab_world.EVIDENCE_BUCKET
# The server's own log lines: how it restored its state, and each checkpoint it wrote.
RESTORED = re.compile(r"state restored: (from the checkpoint|without a checkpoint), (\d+)")
WRITTEN = re.compile(r"checkpoint after request \d+ written: ([\d.]+) MiB, requests held ([\d.]+)")


def _server(state_dir: Path) -> ManagedProcess:
    # Checkpoints only when stopped: the build is timed as one history.
    options = ("--checkpoint-every", "0", "--checkpoint-idle", "3600")
    return lab_aws_process(state_dir, free_port(), "127.0.0.1", *options, ready_timeout=1800)


def _start(state_dir: Path) -> tuple[ManagedProcess, float]:
    """The server started and ready, and the seconds that took."""
    (state_dir / READY).unlink(missing_ok=True)
    server = _server(state_dir)
    started = time.monotonic()
    server.spawn()
    while not server.ready():
        if server.exit_code() is not None:
            raise StackError(f"the lab's AWS exited while starting:\n{server.log_tail()}")
        if time.monotonic() - started > server.ready_timeout:
            server.stop()
            raise StackError(f"the lab's AWS was not ready:\n{server.log_tail()}")
        time.sleep(0.02)
    return server, time.monotonic() - started


def _url(server: ManagedProcess) -> str:
    return f"http://127.0.0.1:{server.ports[0]}"


def _case(url: str, n: int) -> None:
    """One case's worth of lab requests: a user and its key, an evidence object, reads."""
    session = lab_world.admin_session()
    iam = session.client("iam", endpoint_url=url)
    s3 = session.client("s3", endpoint_url=url)
    ec2 = session.client("ec2", endpoint_url=url)
    name = f"bench-user-{n}"
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
    records = [{"eventName": "ListBuckets", "n": i, "accessKeyId": key} for i in range(40)]
    body = json.dumps({"records": records}, sort_keys=True).encode()
    s3.put_object(
        Bucket=BUCKET,
        Key=f"cases/bench-{n}/evidence/cloudtrail.json",
        Body=body,
        Metadata={"sha256": hashlib.sha256(body).hexdigest()},
    )
    iam.get_user(UserName=name)
    iam.list_access_keys(UserName=name)
    ec2.describe_instances()
    s3.list_objects_v2(Bucket=BUCKET, Prefix=f"cases/bench-{n}/")
    s3.get_object(Bucket=BUCKET, Key=f"cases/bench-{n}/evidence/cloudtrail.json")["Body"].read()


def _entries(state_dir: Path) -> int:
    recording = state_dir / RECORDING_NAME
    if not recording.exists():
        return 0
    with recording.open("rb") as lines:
        return sum(1 for _ in lines)


def build(state_dir: Path, requests: int, threads: int = 4) -> int:
    """Record at least `requests` requests in `state_dir` (from where it is), and stop the
    server as the stack does; how many the recording holds."""
    server, _ = _start(state_dir)
    try:
        url = _url(server)
        if _entries(state_dir) == 0:
            lab_world.seed(url)
        done = _entries(state_dir)
        iam = lab_world.admin_session().client("iam", endpoint_url=url)
        n = len(iam.list_users()["Users"])
        with ThreadPoolExecutor(threads) as pool:
            while done < requests:
                batch = max(threads, min(threads * 8, (requests - done) // 9 + 1))
                list(pool.map(lambda i: _case(url, i), range(n, n + batch)))
                n += batch
                done = _entries(state_dir)
    finally:
        server.stop()
    return _entries(state_dir)


def _restored(server: ManagedProcess) -> tuple[str, int]:
    found = RESTORED.search(server.log_since_start().decode(errors="replace"))
    if found is None:
        raise StackError(f"the lab's AWS did not say how it restored:\n{server.log_tail()}")
    return found.group(1), int(found.group(2))


def _checkpoint_written(server: ManagedProcess) -> tuple[float, float]:
    """The last checkpoint's size (MiB) and how long it held requests (s)."""
    found = WRITTEN.findall(server.log_path.read_text(errors="replace"))
    return (float(found[-1][0]), float(found[-1][1])) if found else (0.0, 0.0)


def measure(state_dir: Path, rounds: int) -> dict[str, Any]:
    """Start the stopped lab in `state_dir` `rounds` times each way."""
    full, checkpointed = [], []
    replayed: dict[str, list[int]] = {"full replay": [], "checkpoint": []}
    for _ in range(rounds):
        copy = state_dir.with_name(state_dir.name + "-full-replay")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(state_dir, copy, ignore=shutil.ignore_patterns(CHECKPOINT_NAME, "logs"))
        server, seconds = _start(copy)
        replayed["full replay"].append(_restored(server)[1])
        server.stop()
        full.append(seconds)
        shutil.rmtree(copy)

        server, seconds = _start(state_dir)
        how, count = _restored(server)
        if how != "from the checkpoint":
            raise StackError(f"the lab's AWS did not resume from its checkpoint:\n{how}")
        replayed["checkpoint"].append(count)
        server.stop()
        checkpointed.append(seconds)
    size, held = _checkpoint_written(server)
    return {
        "entries": _entries(state_dir),
        "recording_mib": (state_dir / RECORDING_NAME).stat().st_size / 2**20,
        "checkpoint_mib": size,
        "checkpoint_held_s": held,
        "full_replay_s": statistics.median(full),
        "checkpoint_s": statistics.median(checkpointed),
        "full_replay_runs": full,
        "checkpoint_runs": checkpointed,
        "replayed": replayed,
    }


def fresh_start(state_dir: Path, rounds: int) -> float:
    """The median start of a lab with nothing recorded: what no history costs."""
    seconds = []
    for _ in range(rounds):
        server, took = _start(state_dir)
        server.stop()
        seconds.append(took)
    return statistics.median(seconds)


def run(sizes: list[int], rounds: int, root: Path | None = None) -> dict[str, Any]:
    root = root or Path(tempfile.mkdtemp(prefix="quench-lab-resume-"))
    state_dir = root / "lab"
    rows = []
    for size in sorted(sizes):
        build(state_dir, size)
        rows.append({"requested": size, **measure(state_dir, rounds)})
    return {
        "machine": machine(),
        "rounds": rounds,
        "fresh_s": fresh_start(root / "fresh", rounds),
        "rows": rows,
    }


def run_recording(recording: Path, rounds: int, root: Path | None = None) -> dict[str, Any]:
    """The same for a recording made elsewhere (a state directory `make demo` used): its
    first start replays it in full and its stop writes the checkpoint, then the rounds."""
    root = root or Path(tempfile.mkdtemp(prefix="quench-lab-resume-"))
    state_dir = root / "lab"
    state_dir.mkdir(parents=True)
    shutil.copy(recording, state_dir / RECORDING_NAME)
    server, _ = _start(state_dir)
    server.stop()
    row = {"requested": 0, **measure(state_dir, rounds)}
    return {
        "machine": machine(),
        "rounds": rounds,
        "fresh_s": fresh_start(root / "fresh", rounds),
        "rows": [row],
    }


def report(figures: dict[str, Any]) -> str:
    lines = [
        f"Machine: {figures['machine']}; medians of {figures['rounds']} starts each, spawn to "
        f"ready. A lab with nothing recorded starts in {figures['fresh_s']:.2f} s.",
        "",
        "| requests recorded | recording | full replay | checkpoint | checkpoint size | "
        "requests held while written |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['entries']:,} | {r['recording_mib']:.1f} MiB | {r['full_replay_s']:.2f} s "
        f"| {r['checkpoint_s']:.2f} s | {r['checkpoint_mib']:.1f} MiB "
        f"| {r['checkpoint_held_s']:.2f} s |"
        for r in figures["rows"]
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--recording", type=Path, help="measure this recording (lab-aws.recording.jsonl) instead"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.recording:
        figures = run_recording(args.recording, args.rounds)
    else:
        figures = run(args.sizes, args.rounds)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
