"""Heartbeats while an activity runs, so a worker that dies is noticed in seconds rather
than at the activity's start-to-close timeout (minutes for a stop, a scan or a removal).

Every activity runs under `heartbeating`: a thread beats every couple of seconds for as
long as the activity's own code runs, repeating the progress the activity last reported
with `beat`, so a retry after a crash still resumes from its cursor.
"""

import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from temporalio import activity

# Seconds between heartbeats; the workflow's heartbeat timeout is several of these.
BEAT_EVERY = 2.0

P = ParamSpec("P")
R = TypeVar("R")


class _Progress:
    def __init__(self) -> None:
        self.details: tuple[Any, ...] = ()


_progress: contextvars.ContextVar[_Progress | None] = contextvars.ContextVar(
    "quench_activity_progress", default=None
)


def beat(*details: Any) -> None:
    """Report progress (a cursor to resume from); the keeper repeats it until the next."""
    progress = _progress.get()
    if progress is not None:
        progress.details = details
    activity.heartbeat(*details)


def heartbeating(fn: Callable[P, R]) -> Callable[P, R]:
    """Beat for as long as `fn`, a synchronous activity, runs."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        progress = _Progress()
        token = _progress.set(progress)
        context = contextvars.copy_context()
        stop = threading.Event()

        def keep_beating() -> None:
            while not stop.wait(BEAT_EVERY):
                context.run(activity.heartbeat, *progress.details)

        keeper = threading.Thread(target=keep_beating, name="heartbeat", daemon=True)
        keeper.start()
        try:
            return fn(*args, **kwargs)
        finally:
            stop.set()
            keeper.join()
            _progress.reset(token)

    run.__quench_heartbeating__ = True  # type: ignore[attr-defined]
    return run


def is_heartbeating(fn: Callable[..., Any]) -> bool:
    target = getattr(fn, "__func__", fn)
    return bool(getattr(target, "__quench_heartbeating__", False))
