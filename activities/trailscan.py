"""The hot path of every CloudTrail scan: the records of one log file that name some access
keys, found by matching raw bytes before parsing anything.

Parsing a whole log file costs some eight to twenty times what decompressing it does, and
most files do not hold the keys asked for. So a file is searched, as it is decompressed, for
each key as a JSON string (`"AKIA…"`, quotes included, so a key that merely shares a prefix
is no hit); a file without a hit is done, and in a file with hits only the records around
them are parsed. Every record the caller's predicate accepts must hold one of the keys as
a whole JSON string, and the answer is then exactly what parsing every record gives: where
that cannot be proved cheaply (another layout, an escape that could spell a key, a record
whose bounds are uncertain) the whole file is parsed instead.

Two predicates over a record and a set of keys: `by_credential`, the calls made with the
credential (userIdentity.accessKeyId; what classification and the containment watch use),
and `mentions_credential`, also the calls that name it anywhere in their requestParameters
or responseElements (CreateAccessKey, UpdateAccessKey, the AssumeRole that minted it...);
the benchmark and the tests hold the scan to both, and no case uses the second yet.
"""

import gzip
import json
import re
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, cast

import simdjson
from isal import isal_zlib

Record = dict[str, Any]
Predicate = Callable[[Record], bool]


# ISA-L's inflate: twice zlib's speed, and decompression is most of a scan's time. It
# reads gzip with wbits=31 as zlib does (the benchmark and the tests swap zlib in).
INFLATER: Any = isal_zlib
# What reading a file that is not a gzip JSON log raises, with either inflater.
UNREADABLE_LOG_ERRORS: tuple[type[Exception], ...] = (
    EOFError,
    OSError,
    ValueError,
    RecursionError,  # JSON nested deeper than the json module goes
    zlib.error,
    cast(type[Exception], isal_zlib.error),  # typed as an instance in isal's stubs
)


def unreadable_because(error: Exception) -> str:
    """What is wrong with a file that raised one of UNREADABLE_LOG_ERRORS, in words that
    do not depend on the inflater."""
    if isinstance(error, EOFError):
        return "its gzip stream ends early"
    if isinstance(error, ValueError):
        return "its content is not JSON"  # json's errors and UnicodeDecodeError
    if isinstance(error, RecursionError):
        return "its JSON nests too deeply to read"
    return "it is not gzip, or its gzip stream is damaged"


CHUNK = 512 * 1024  # decompressed bytes searched at a time, while they are in cache

# How CloudTrail writes a log file: compact JSON, one "Records" array, every record's first
# key eventVersion.
_DOCUMENT_START = b'{"Records":[{"eventVersion":'
_RECORD_START = b'{"eventVersion":'
_NEXT_RECORD = b'},{"eventVersion":'
_EVENT_VERSION = b'"eventVersion"'
_RECORDS = b'"Records"'
_WHITESPACE = b" \t\n\r"
_BACKSLASH = b"\\"
_ESCAPES = (b"\\u",)
_ESCAPES_WITH_SLASH = (b"\\u", b"\\/")
_WINDOW = 1024
# Characters a needle may hold: those JSON writes as themselves ('/' may be written '\/').
_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def by_credential(record: Any, keys: Collection[str]) -> bool:
    """The record is a call made with one of the keys."""
    identity = record.get("userIdentity") if isinstance(record, dict) else None
    key = identity.get("accessKeyId") if isinstance(identity, dict) else None
    return isinstance(key, str) and key in keys


def mentions_credential(record: Any, keys: Collection[str]) -> bool:
    """The record is a call made with one of the keys, or one that has a key as a value
    anywhere in its requestParameters or responseElements."""
    if by_credential(record, keys):
        return True
    if not isinstance(record, dict):
        return False
    return _holds(record.get("requestParameters"), keys) or _holds(
        record.get("responseElements"), keys
    )


def _holds(value: Any, keys: Collection[str]) -> bool:
    if isinstance(value, str):
        return value in keys
    if isinstance(value, dict):
        return any(_holds(v, keys) for v in value.values())
    if isinstance(value, list):
        return any(_holds(v, keys) for v in value)
    return False


def read_log(body: bytes) -> bytes:
    """A log file's JSON, from the gzip CloudTrail writes."""
    return gzip.decompress(body)


def log_records(data: bytes) -> list[Record]:
    """Every record of a log file, parsed: what the fast path must agree with."""
    return list(json.loads(data).get("Records", []))


@dataclass
class ScanStats:
    """How the files of a scan were read."""

    files: int = 0
    skipped: int = 0  # no key in the file: nothing parsed
    by_hits: int = 0  # only the records around the hits parsed
    parsed: int = 0  # parsed whole: a layout, escape or encoding the search cannot trust
    records_parsed: int = 0


class _NotOneMember(ValueError):
    """The gzip stream is truncated, or holds more than one member."""


def inflate(body: bytes, chunk: int = CHUNK) -> Iterator[bytes]:
    """The content of a one-member gzip file, in pieces of at most `chunk` bytes (a piece
    is searched while it is still in cache, and none is copied into a whole file unless
    needed: faster than one decompress call)."""
    inflater = INFLATER.decompressobj(wbits=31)
    pending = body
    while pending:
        yield inflater.decompress(pending, chunk)
        pending = inflater.unconsumed_tail
    if not inflater.eof or inflater.unused_data:
        raise _NotOneMember


def scan_log(
    body: bytes,
    needles: Collection[str],
    keep: Predicate,
    stats: ScanStats | None = None,
    chunk: int = CHUNK,
) -> list[Record]:
    """The records of one gzip log file that `keep` accepts, in file order.

    `needles`: strings one of which every record `keep` accepts holds as a whole JSON
    string (the access keys, for either predicate; a resource's name, for a resource query).
    """
    stats = stats if stats is not None else ScanStats()
    wanted = _needle_bytes(needles)
    if wanted is None:
        return matching_records(read_log(body), needles, keep, stats)
    seam = max(len(n) for n in wanted) - 1
    parts: list[bytes] = []
    hits: list[int] = []
    offset = 0  # where the piece starts in the file
    tail = b""  # the file's last `seam` bytes before the piece, for needles across pieces
    # An escape the byte search cannot see through: the file is decided on the whole.
    escapes = _ESCAPES_WITH_SLASH if any("/" in n for n in needles) else _ESCAPES
    unusual = after_backslash = False
    try:
        for part in inflate(body, chunk):
            parts.append(part)
            for needle in wanted:
                hits.extend(offset + at for at in _find_all(part, needle))
                across = tail + part[: len(needle) - 1]
                hits.extend(
                    offset - len(tail) + at
                    for at in _find_all(across, needle)
                    if at + len(needle) > len(tail)
                )
            if not unusual:
                unusual, after_backslash = _escape(part, after_backslash, escapes)
            tail = part[-seam:] if len(part) >= seam else (tail + part)[-seam:]
            offset += len(part)
    except _NotOneMember:
        # Truncated (gzip raises, as the plain read does) or several members.
        return matching_records(read_log(body), needles, keep, stats)
    stats.files += 1
    head = b"".join(parts[:4])[:4]
    if json.detect_encoding(head) != "utf-8":
        unusual = True  # UTF-16 or UTF-32, which json.loads reads too
    if not hits and not unusual:
        stats.skipped += 1
        return []
    data = b"".join(parts)
    if unusual:
        if json.detect_encoding(data) != "utf-8" or _escapes_any(data, needles):
            return _parse_all(data, keep, stats)
    return _around_hits(data, sorted(hits), keep, stats)


def _find_all(data: bytes, needle: bytes) -> Iterator[int]:
    at = data.find(needle)
    while at != -1:
        yield at
        at = data.find(needle, at + 1)


def _escape(part: bytes, after_backslash: bool, escapes: tuple[bytes, ...]) -> tuple[bool, bool]:
    """Whether one of `escapes` (a \\u escape; a \\/ when a needle has a slash) may be in
    this piece of the file, over-cautiously (an escaped backslash before the u counts too),
    and whether the piece ends with a backslash. The backslashes of a file come in clusters
    (a policy document in a string), so the search skips a window at a time."""
    if not part:
        return False, after_backslash
    if after_backslash and any(part[:1] == e[1:] for e in escapes):
        return True, False
    at = part.find(_BACKSLASH)
    while at != -1:
        if any(part.find(e, at, at + _WINDOW) != -1 for e in escapes):
            return True, False
        at = part.find(_BACKSLASH, at + _WINDOW - 1)
    return False, part[-1:] == _BACKSLASH


def _needle_bytes(needles: Collection[str]) -> list[bytes] | None:
    """The needles as they appear in a file, or None if one could be written otherwise
    than as itself."""
    if not needles or any(not n or not _PLAIN.issuperset(n) for n in needles):
        return None
    return [b'"' + n.encode() + b'"' for n in needles]


def matching_records(
    data: bytes,
    needles: Collection[str],
    keep: Predicate,
    stats: ScanStats | None = None,
) -> list[Record]:
    """The records of one decompressed log file that `keep` accepts, in file order (see
    `scan_log`)."""
    stats = stats if stats is not None else ScanStats()
    stats.files += 1
    wanted = _needle_bytes(needles)
    if wanted is None:
        return _parse_all(data, keep, stats)
    if json.detect_encoding(data) != "utf-8" or _escapes_any(data, needles):
        return _parse_all(data, keep, stats)
    hits = sorted(at for needle in wanted for at in _find_all(data, needle))
    return _around_hits(data, hits, keep, stats)


def _around_hits(data: bytes, hits: list[int], keep: Predicate, stats: ScanStats) -> list[Record]:
    if not hits:
        stats.skipped += 1
        return []
    spans = _record_spans(data, hits)
    if spans is None:
        return _parse_all(data, keep, stats)
    found = []
    for start, end in spans:
        try:
            record = json.loads(data[start:end])
        except ValueError:
            # Not one JSON value: the records are not laid out as CloudTrail's (the last
            # one's span runs to the array's end, and something follows it there).
            return _parse_all(data, keep, stats)
        if keep(record):
            found.append(record)
    stats.by_hits += 1
    stats.records_parsed += len(spans)
    return found


def _parse_all(data: bytes, keep: Predicate, stats: ScanStats) -> list[Record]:
    records = log_records(data)
    stats.parsed += 1
    stats.records_parsed += len(records)
    return [r for r in records if keep(r)]


def _escapes_any(data: bytes, needles: Collection[str]) -> bool:
    """Whether an escape in the file could spell a needle's character, or a letter of the
    names the layout check counts ("Records", "eventVersion"): a byte search would miss
    what json.loads reads. CloudTrail escapes quotes, backslashes and control characters
    only; most files have no \\u escape at all."""
    if b"\\" not in data:
        return False
    chars = set("".join(needles)) | set("Records") | set("eventVersion")
    codes = "|".join(sorted(f"{ord(c):02x}" for c in chars))
    pattern = rb"\\u00(?:" + codes.encode() + rb")"
    if "/" in chars:
        pattern += rb"|\\/"
    return re.search(pattern, data, re.IGNORECASE) is not None


def _record_spans(data: bytes, hits: list[int]) -> list[tuple[int, int]] | None:
    """The (start, end) of every record holding a hit, in file order; None when the file
    does not prove them.

    A record is taken to start at the last `{"eventVersion":` before its hit and to end at
    the next `},{"eventVersion":` (or the array's end); the caller parses that span, which
    must be one JSON value. The starts are proved for the part of the file up to the last
    such record, the prefix: closed as `prefix]}` it must be a JSON document whose Records
    are N objects each with an eventVersion key, and it must hold exactly N strings
    "eventVersion". Then each is a record's own key, so a `{"eventVersion":` is a record's
    start and is never inside a value. (A string cannot hold an unescaped quote, but an
    attacker's request parameters can hold an object whose first key is eventVersion, in
    an array after another object: that fails the count.)
    """
    if not data.startswith(_DOCUMENT_START):
        return None
    tail = len(data)
    while tail and data[tail - 1] in _WHITESPACE:
        tail -= 1
    if data[tail - 2 : tail] != b"]}":
        return None
    spans: dict[int, int] = {}
    for hit in hits:
        start = data.rfind(_RECORD_START, 0, hit + len(_RECORD_START))
        if start == -1:
            return None
        if start in spans:
            continue
        boundary = data.find(_NEXT_RECORD, start)
        spans[start] = tail - 2 if boundary == -1 else boundary + 1
    prefix_end = max(spans.values())
    # json.loads keeps the last of repeated keys: another "Records" of the document would
    # come after the array the prefix is in.
    if data.find(_RECORDS, prefix_end) != -1:
        return None
    records = _records_with_event_version(data[:prefix_end] + b"]}")
    if records is None or data.count(_EVENT_VERSION, 0, prefix_end) != records:
        return None
    return sorted(spans.items())


def _records_with_event_version(document: bytes) -> int | None:
    """How many records the document holds, if it is `{"Records":[...]}` and nothing else,
    every record an object with an eventVersion key; None otherwise.

    simdjson validates the whole document (structure and UTF-8) several times faster than
    any parser that builds it, and its records are looked at in place, never built: the
    proof costs a fraction of the decompression. A document it refuses (NaN, a number out
    of its range...) is only parsed whole by the caller, as json.loads would."""
    try:
        # A parser a call: one holds a single document at a time, and scans share threads.
        root = simdjson.Parser().parse(document)
    except (ValueError, RuntimeError):
        # RuntimeError: a number beyond 64 bits, or nesting deeper than simdjson's 1024.
        return None
    if not isinstance(root, simdjson.Object) or len(root) != 1:
        return None  # len counts a repeated key, which json.loads would read as its last
    records = root.get("Records")
    if not isinstance(records, simdjson.Array):
        return None
    if all(isinstance(r, simdjson.Object) and "eventVersion" in r for r in records):
        return len(records)
    return None
