"""The lab's AWS checkpointed, so a restart replays only the requests recorded after the
checkpoint, not the whole recording: moto's state and the lab's own, without secrets, with
the place in the recording it reaches.

A checkpoint is taken while no request is being answered, so it holds exactly the
requests recorded before its place. It is written to a temporary file, synced and renamed
over the last one: a crash leaves the previous checkpoint or the new one, never half of
one, and the recording after either is replayed. A checkpoint is used only if it is whole
(its payload's SHA-256), was written by the same moto, botocore, Python and lab server
code, and its place is still in the recording (the line before it is the one it ends
with); otherwise the whole recording is replayed, as before there were checkpoints.
"""

import hashlib
import json
import logging
import os
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CHECKPOINT_NAME = "lab-aws.checkpoint"
_FORMAT = 1
# The modules whose code decides what the lab server's state is, or how it is written.
_SERVER_MODULES = tuple(
    Path(__file__).parents[1] / module
    for module in (
        "lab/aws_server.py",
        "lab/checkpoint.py",
        "lab/id_streams.py",
        "lab/instances.py",
        "lab/moto_gaps.py",
        "lab/moto_state.py",
        "lab/scrubbing.py",
        "lab/trust.py",
        "activities/redaction.py",
    )
)
_HEADER_LIMIT = 64 * 1024
log = logging.getLogger("quench.lab.aws")


@dataclass(frozen=True)
class RecordingPlace:
    """A place between two lines of the recording: how many requests come before it, where
    it is in the file, and the line that ends there (by length and SHA-256)."""

    entries: int = 0
    offset: int = 0
    last_line_bytes: int = 0
    last_line_sha256: str = ""

    def after(self, line: bytes) -> "RecordingPlace":
        return RecordingPlace(
            entries=self.entries + 1,
            offset=self.offset + len(line),
            last_line_bytes=len(line),
            last_line_sha256=hashlib.sha256(line).hexdigest(),
        )


class CheckpointUnusable(Exception):
    """Why a checkpoint cannot be resumed from: the recording is replayed in full."""


def fingerprint() -> dict[str, str]:
    """What must be the same for a checkpoint to load as it was written."""
    import botocore
    import moto

    lab = hashlib.sha256()
    for module in _SERVER_MODULES:
        lab.update(module.read_bytes())
    return {
        "format": str(_FORMAT),
        "moto": moto.__version__,
        "botocore": botocore.__version__,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "lab server code": lab.hexdigest(),
    }


def write(path: Path, place: RecordingPlace, state: bytes) -> int:
    """Write the checkpoint atomically; its size in bytes."""
    payload = zlib.compress(state, 1)
    header = {
        "fingerprint": fingerprint(),
        "recording": asdict(place),
        "payload": {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()},
    }
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as out:
        out.write(json.dumps(header).encode() + b"\n")
        out.write(payload)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    _sync_directory(path.parent)
    return path.stat().st_size


def _sync_directory(directory: Path) -> None:
    """The rename itself survives a crash of the machine, not only of the process."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_leftovers(path: Path) -> None:
    """Temporary files of checkpoints a crash interrupted: never read, only removed."""
    for leftover in path.parent.glob(f"{path.name}.*.tmp"):
        log.info("removing %s, a checkpoint a crash left unfinished", leftover.name)
        leftover.unlink(missing_ok=True)


def read(path: Path, recording: Path) -> tuple[RecordingPlace, bytes]:
    """The checkpoint's place in `recording` and its state, if it can be resumed from."""
    if not path.exists():
        raise CheckpointUnusable("there is no checkpoint")
    with path.open("rb") as source:
        try:
            header = json.loads(source.readline(_HEADER_LIMIT))
            place = RecordingPlace(**header["recording"])
            expected = header["payload"]
            written_by = header["fingerprint"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointUnusable(f"its header is unreadable ({exc})") from None
        now = fingerprint()
        for what in now:
            if written_by.get(what) != now[what]:
                raise CheckpointUnusable(
                    f"it was written by {what} {written_by.get(what)}, this is {now[what]}"
                )
        _check_place(place, recording)
        payload = source.read(expected["bytes"] + 1)
    if len(payload) != expected["bytes"]:
        raise CheckpointUnusable(f"it holds {len(payload)} bytes, not {expected['bytes']}")
    if hashlib.sha256(payload).hexdigest() != expected["sha256"]:
        raise CheckpointUnusable("its content does not match its SHA-256")
    try:
        return place, zlib.decompress(payload)
    except zlib.error as exc:
        raise CheckpointUnusable(f"its content does not decompress ({exc})") from None


def _check_place(place: RecordingPlace, recording: Path) -> None:
    """The checkpoint's place is in this recording: the recording is as long, and the line
    the checkpoint ends with is there, just before its place."""
    size = recording.stat().st_size if recording.exists() else 0
    if size < place.offset:
        raise CheckpointUnusable(
            f"it reaches byte {place.offset} of the recording, which has {size} bytes"
        )
    if place.entries == 0:
        return
    with recording.open("rb") as lines:
        lines.seek(place.offset - place.last_line_bytes)
        line = lines.read(place.last_line_bytes)
    if hashlib.sha256(line).hexdigest() != place.last_line_sha256:
        raise CheckpointUnusable(
            f"the recording's request {place.entries} is not the one it was taken after"
        )


class Gate:
    """Requests pass unless a checkpoint is being taken; a checkpoint waits for those being
    answered, and holds new ones until it has what it writes."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._answering = 0
        self._closed = False
        self.last_request = time.monotonic()

    @contextmanager
    def request(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._closed)
            self._answering += 1
        try:
            yield
        finally:
            with self._changed:
                self._answering -= 1
                self.last_request = time.monotonic()
                self._changed.notify_all()

    @contextmanager
    def quiet(self, timeout: float) -> Iterator[bool]:
        """Inside, no request is being answered, if the ones being answered finished
        within `timeout` seconds (True); else requests go on (False)."""
        with self._changed:
            self._changed.wait_for(lambda: not self._closed)
            self._closed = True
            quiet = self._changed.wait_for(lambda: self._answering == 0, timeout)
            if not quiet:
                self._closed = False
                self._changed.notify_all()
        try:
            yield quiet
        finally:
            if quiet:
                with self._changed:
                    self._closed = False
                    self._changed.notify_all()


def gated(app: Callable[..., Any], gate: Gate) -> Callable[..., Any]:
    """The WSGI app, each request answered in full (its body too) inside the gate."""

    def answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with gate.request():
            response = app(environ, start_response)
            try:
                return list(response)
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()

    return answer


class Checkpointer:
    """Writes a checkpoint every `every` requests recorded, and when requests were recorded
    since the last one and none came for `idle` seconds."""

    def __init__(
        self,
        path: Path,
        gate: Gate,
        place: Callable[[], RecordingPlace],
        capture: Callable[[], bytes],
        sync_recording: Callable[[], None],
        written: RecordingPlace | None,
        every: int,
        idle: float,
    ) -> None:
        self.path = path
        self._gate = gate
        self._place = place
        self._capture = capture
        self._sync_recording = sync_recording
        self.written = written or RecordingPlace()
        self._every = every
        self._idle = idle
        self._one_at_a_time = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lab-checkpoints", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _due(self) -> bool:
        new = self._place().entries - self.written.entries
        idle_for = time.monotonic() - self._gate.last_request
        return new > 0 and ((self._every > 0 and new >= self._every) or idle_for >= self._idle)

    def _run(self) -> None:
        while not self._stopping.wait(0.5):
            if self._due():
                self.checkpoint(wait=30.0)

    def checkpoint(self, wait: float) -> bool:
        """Write a checkpoint now, if requests being answered finish within `wait` seconds
        and there is something new to write."""
        with self._one_at_a_time:
            started = time.monotonic()
            with self._gate.quiet(wait) as quiet:
                if not quiet:
                    log.warning("no checkpoint: requests still answered after %.0f s", wait)
                    return False
                place = self._place()
                if place == self.written:
                    return True
                try:
                    state = self._capture()
                except Exception as exc:  # a checkpoint is an optimisation: replay stays
                    log.warning("no checkpoint: %s", exc)
                    return False
            held = time.monotonic() - started
            try:
                # The recording up to the place is on disk before a checkpoint says it is.
                self._sync_recording()
                size = write(self.path, place, state)
            except OSError as exc:
                log.warning("no checkpoint: %s", exc)
                return False
            self.written = place
            log.info(
                "checkpoint after request %d written: %.1f MiB, requests held %.2f s, "
                "written in %.2f s",
                place.entries,
                size / 2**20,
                held,
                time.monotonic() - started,
            )
            return True
