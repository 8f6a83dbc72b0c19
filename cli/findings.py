"""Findings read from a file for `start`: GuardDuty findings, EventBridge events (GuardDuty
or Security Hub), or a JSON list of them, triaged exactly as the webhook triages them.

Every entry is read and triaged before any is handed to a case, so a file with one bad
entry starts nothing.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic_core

from config.settings import Settings
from models.finding import FindingParseError
from webhook.events import Triage, triage_event, triage_guardduty_finding

STDIN = "-"
# Far more than any finding: GuardDuty's and Security Hub's events are at most 256 KiB.
MAX_FILE_BYTES = 64 * 1024 * 1024
# Keys only an EventBridge envelope has; anything else is taken for a bare finding.
_ENVELOPE_KEYS = ("detail-type", "detail", "source")
_JSON_TYPES = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


class FindingFileError(Exception):
    """A file that is not findings Quench can read; nothing was started."""


@dataclass(frozen=True)
class Entry:
    """One finding of the file, triaged: where it sits (for messages) and what it is."""

    where: str
    triage: Triage


def read_document(source: str) -> Any:
    """The JSON in a file (or standard input for '-'), strictly: no NaN or Infinity."""
    name = "standard input" if source == STDIN else source
    try:
        # One byte past the limit is enough to refuse a file: a huge one is never held.
        if source == STDIN:
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with Path(source).open("rb") as file:
                data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FindingFileError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise FindingFileError(f"{name} is larger than {MAX_FILE_BYTES} bytes")
    if not data.strip():
        raise FindingFileError(f"{name} is empty")
    try:
        return pydantic_core.from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        raise FindingFileError(f"{name} is not JSON: {exc}") from None


def triage_document(document: Any, settings: Settings) -> list[Entry]:
    """Every finding in the document, triaged; the first that cannot be read is an error."""
    if isinstance(document, list):
        if not document:
            raise FindingFileError("the list holds no findings")
        return [_triage(item, f"entry {n}", settings) for n, item in enumerate(document, 1)]
    return [_triage(document, "the finding", settings)]


def _triage(item: Any, where: str, settings: Settings) -> Entry:
    if not isinstance(item, dict):
        raise FindingFileError(
            f"{where}: expected a GuardDuty finding or an EventBridge event (a JSON object), "
            f"found {_JSON_TYPES.get(type(item), type(item).__name__)}"
        )
    bare = False
    try:
        if any(key in item for key in _ENVELOPE_KEYS):
            return Entry(where, triage_event(item, settings))
        if "Findings" in item:
            raise FindingFileError(
                f"{where}: the output of `aws guardduty get-findings` (AWS's PascalCase names) "
                "is not read; give the findings' EventBridge events, or their `detail`"
            )
        if "ProductArn" in item or "SchemaVersion" in item:
            raise FindingFileError(
                f"{where}: a Security Hub finding on its own; give the EventBridge event it "
                "came in ('Security Hub Findings - Imported'), as the webhook receives it"
            )
        bare = True
        return Entry(where, triage_guardduty_finding(item, settings))
    except FindingParseError as exc:
        # A finding on its own has no `detail.` around it: name its fields as they stand.
        field = exc.field.removeprefix("detail.") if bare else exc.field
        raise FindingFileError(f"{where}: {field}: {exc.problem}") from None
