"""Payloads from outside the case, read by the case itself: a handler takes whatever it
is sent (no input, two inputs, the wrong shape), so a bad payload is refused with its
reason instead of failing the workflow task that carries it."""

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

# How much of a refused payload the case keeps, as its sender wrote it.
_SENT_KEPT = 1000
# A payload longer than this is kept as its text, not parsed first.
_SENT_PARSED = 10_000

M = TypeVar("M", bound=BaseModel)


class InvalidInput(Exception):
    """A payload that is not the one input model a handler takes."""

    def __init__(self, reason: str, sent: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


def read_input(model: type[M], args: Sequence[Any]) -> M:
    """The one input a handler takes, validated; InvalidInput names what is wrong."""
    if len(args) != 1:
        raise InvalidInput(
            f"expected one {model.__name__} input, got {len(args)}", sent_as_text(list(args))
        )
    try:
        return model.model_validate(args[0])
    except ValidationError as invalid:
        raise InvalidInput(_what_is_wrong(invalid), sent_as_text(args[0])) from None


def _what_is_wrong(invalid: ValidationError) -> str:
    """The errors, each with the field at fault, as one line."""
    parts = []
    for error in invalid.errors()[:3]:
        field = ".".join(str(p) for p in error["loc"]) or "input"
        parts.append(f"{field}: {error['msg']}")
    more = invalid.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def payload_as_sent(data: bytes) -> Any:
    """A raw payload as its sender wrote it: the JSON value, or its text when it is not
    JSON (so it is kept once, not encoded again as a string)."""
    text = data.decode(errors="replace")
    if len(text) > _SENT_PARSED:
        return text  # kept cut short anyway: never worth parsing, nor its deep nesting
    try:
        return json.loads(text)
    except Exception:  # any payload at all: "[" * 100000 is a RecursionError
        return text


def sent_as_text(value: Any) -> str:
    """A payload as its sender wrote it, cut short."""
    try:
        text = json.dumps(value, default=str)
    except Exception:  # nothing a sender wrote may fail the handler
        try:
            text = repr(value)
        except Exception:
            text = "(what was sent cannot be shown)"
    return text if len(text) <= _SENT_KEPT else text[:_SENT_KEPT] + "…"
