"""Where moto's random ids come from in the lab: each recorded call draws from its own
stream, seeded by its place in the recording, so a replay gives every call the ids it got.

moto draws every id (keys, users, instances, volumes, snapshots, request ids...) from one
process-wide generator. Seeding it once and replaying the recording in order gave the same
ids only if the original run had drawn in recording order, one call after another. The
server answers calls concurrently, though: two calls of the worker interleave their draws,
and since `choice` rejects and redraws values out of range, the interleaving changes how
many draws each id takes, so every id made after it comes out different on replay (the
user-key scenario's build-bot key among them). With a stream per call, the order and
concurrency of other calls, recorded or not, cannot move a call's ids.

A backend (a service in a region, created by whichever call first needs it, with the
default VPC and its subnets) and an instance's metadata credentials (minted by whichever
SSM call first reads them) draw from streams named after what they make, not from the call
that happened to make them.
"""

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moto.moto_api._internal.moto_random import MotoRandom


class _Streams(threading.local):
    def __init__(self) -> None:
        self.stack: list[random.Random] = []


_streams = _Streams()
_seed = 0
# Calls that are not recorded (moto's own API) draw from here: never replayed, they must
# not take draws from a call that is.
_unrecorded = random.Random()
# A recording made before calls had their own streams replays as it was recorded: every
# draw from moto's one seeded generator, in recording order.
_legacy = threading.Event()


def _stream(name: str) -> random.Random:
    # A str seed is hashed with SHA-512, the same in every process whatever PYTHONHASHSEED.
    return random.Random(f"quench-lab/{_seed}/{name}")


def enter_call(sequence: int | None) -> None:
    """The calling thread answers the recorded call `sequence` now (None: a call that is
    not recorded). Set at the start of each call: a thread serves one call at a time."""
    if sequence is None:
        _streams.stack = [_unrecorded]
    else:
        _streams.stack = [_stream(f"call/{sequence}")]


@contextmanager
def named(name: str) -> Iterator[None]:
    """Draws inside come from the stream `name`, whichever call gets here first."""
    if _legacy.is_set():
        yield
        return
    _streams.stack.append(_stream(name))
    try:
        yield
    finally:
        _streams.stack.pop()


@contextmanager
def legacy_replay() -> Iterator[None]:
    """Replay calls recorded before they had streams, as they were recorded."""
    _legacy.set()
    try:
        yield
    finally:
        _legacy.clear()


def _current() -> random.Random | None:
    if _legacy.is_set() or not _streams.stack:
        return None
    return _streams.stack[-1]


def install(seed: int) -> None:
    """Make moto's generator draw from the current call's stream."""
    global _seed
    from moto.moto_api._internal import mock_random

    _seed = seed
    mock_random.seed(seed)
    if getattr(mock_random, "draws_per_call", False):
        return
    mock_random.__class__ = _per_call(type(mock_random))
    _name_backend_streams()


def _per_call(moto_random: "type[MotoRandom]") -> "type[MotoRandom]":
    class PerCallRandom(moto_random):  # type: ignore[valid-type,misc]
        draws_per_call = True

        # Every other method of Random (choice, sample, uuid4...) draws through these two.
        def random(self) -> float:
            stream = _current()
            return stream.random() if stream is not None else super().random()

        def getrandbits(self, k: int, /) -> int:
            stream = _current()
            return stream.getrandbits(k) if stream is not None else super().getrandbits(k)

    return PerCallRandom


def _name_backend_streams() -> None:
    from moto.core.base_backend import AccountSpecificBackend

    get = AccountSpecificBackend.__getitem__

    def getitem(self: AccountSpecificBackend[Any], region_name: str) -> Any:
        region = "aws" if region_name == "global" else region_name
        if dict.__contains__(self, region):
            return get(self, region_name)
        with named(f"backend/{self.service_name}/{self.account_id}/{region}"):
            return get(self, region_name)

    AccountSpecificBackend.__getitem__ = getitem  # type: ignore[method-assign]
