"""The credential-scoped scan of a CloudTrail log file: the two predicates, and the fast
path returning exactly what parsing every record returns, on realistic files and on files
made to defeat it."""

import gzip
import importlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activities import trailscan
from activities.trailscan import (
    ScanStats,
    by_credential,
    log_records,
    matching_records,
    mentions_credential,
    scan_log,
)
from benchmarks.trail_files import NEAR_MISS_KEY, TARGET_KEY, TrailFactory

KEY = "AKIAQUENCHTESTKEY001"
OTHER_KEY = "ASIAQUENCHTESTKEY002"
NEAR_MISSES = ["AKIAQUENCHTESTKEY00", "AKIAQUENCHTESTKEY0011", "AKIAQUENCHTESTKEY009"]
KEYS = frozenset({KEY, OTHER_KEY})
AT = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
PREDICATES = {"by": by_credential, "mentions": mentions_credential}


def compact(document: Any) -> bytes:
    """A document as CloudTrail writes it."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def reference(data: bytes, predicate: Any, keys: frozenset[str] = KEYS) -> list[dict[str, Any]]:
    return [r for r in log_records(data) if predicate(r, keys)]


def fast(data: bytes, predicate: Any, keys: frozenset[str] = KEYS, **kwargs: Any) -> list[Any]:
    return scan_log(gzip.compress(data), keys, lambda r: predicate(r, keys), **kwargs)


def call(identity_key: str | None = None, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "accountId": "111122223333"},
        "eventTime": "2026-11-22T07:01:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": "ListUsers",
        "requestParameters": None,
        "responseElements": None,
        "eventID": "e-1",
    }
    if identity_key is not None:
        record["userIdentity"]["accessKeyId"] = identity_key
    record.update(fields)
    return record


@pytest.fixture(params=["zlib", "isal.isal_zlib"])
def inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each inflater the scan can run on: ISA-L's, which it uses, and zlib."""
    module = importlib.import_module(request.param)
    monkeypatch.setattr(trailscan, "INFLATER", module)
    return str(request.param)


# -- the two predicates -------------------------------------------------------------------


def test_by_the_credential_is_the_key_that_made_the_call() -> None:
    assert by_credential(call(KEY), KEYS)
    assert not by_credential(call(NEAR_MISSES[0]), KEYS)
    assert not by_credential(call(None), KEYS)
    assert not by_credential(call(None, requestParameters={"accessKeyId": KEY}), KEYS)
    assert not by_credential(call(None, userIdentity=None), KEYS)
    assert not by_credential(call(None, userIdentity={"accessKeyId": [KEY]}), KEYS)


@pytest.mark.parametrize(
    "fields",
    [
        {"requestParameters": {"userName": "ci", "accessKeyId": KEY, "status": "Inactive"}},
        {"responseElements": {"accessKey": {"accessKeyId": KEY, "status": "Active"}}},
        {"responseElements": {"credentials": {"items": [{"x": 1}, {"accessKeyId": KEY}]}}},
        {"requestParameters": {"tags": [{"key": "rotated-from", "value": KEY}]}},
    ],
)
def test_mentions_the_credential_is_also_a_key_named_in_the_request_or_response(
    fields: dict[str, Any],
) -> None:
    record = call(None, **fields)
    assert mentions_credential(record, KEYS)
    assert not by_credential(record, KEYS)


@pytest.mark.parametrize(
    "fields",
    [
        {"requestParameters": {"note": f"rotate {KEY} soon"}},  # inside a longer string
        {"requestParameters": {KEY: "a key of an object is no value"}},
        {"requestParameters": {"accessKeyId": NEAR_MISSES[1]}},
        {"additionalEventData": {"accessKeyId": KEY}},  # not the request or the response
        {"errorMessage": KEY},
    ],
)
def test_mentions_the_credential_is_a_whole_value_in_the_request_or_response(
    fields: dict[str, Any],
) -> None:
    assert not mentions_credential(call(None, **fields), KEYS)


# -- realistic files ----------------------------------------------------------------------


def realistic_file(seed: int = 1, records: int = 300) -> tuple[bytes, int, int]:
    """A log file from the benchmark's generator with the stolen key's own calls and
    records that only name it, shuffled in; and how many of each."""
    factory = TrailFactory(seed)
    body = [factory.background(AT, "us-east-1") for _ in range(records)]
    own = [factory.attacker(AT, "us-east-1") for _ in range(7)] + factory.app_use(AT, "us-east-1")
    named = [
        factory.naming(AT, "us-east-1", what)
        for what in ("CreateAccessKey", "UpdateAccessKey", "TagUser", "GetAccessKeyLastUsed")
    ]
    for index, record in enumerate(own + named):
        body.insert((index * 37) % len(body), record)
    return compact({"Records": body}), len(own), len(named)


def test_a_realistic_file_is_read_around_its_hits_only(inflater: str) -> None:
    data, own, named = realistic_file()
    keys = frozenset({TARGET_KEY})
    for predicate, expected in ((by_credential, own), (mentions_credential, own + named)):
        stats = ScanStats()
        found = fast(data, predicate, keys, stats=stats)
        assert found == reference(data, predicate, keys)
        assert len(found) == expected
        assert (stats.by_hits, stats.parsed) == (1, 0)
        assert stats.records_parsed == own + named  # the near-miss key's records are not read


def test_a_file_without_the_key_is_not_parsed(inflater: str) -> None:
    data, _, _ = realistic_file()
    stats = ScanStats()
    assert fast(data, mentions_credential, frozenset({"AKIAANOTHERKEY000001"}), stats=stats) == []
    assert (stats.skipped, stats.records_parsed) == (1, 0)


def test_the_near_miss_key_is_no_hit() -> None:
    data, _, _ = realistic_file()
    stats = ScanStats()
    found = fast(data, by_credential, frozenset({NEAR_MISS_KEY}), stats=stats)
    assert found == reference(data, by_credential, frozenset({NEAR_MISS_KEY}))
    assert found and all(r["userIdentity"]["accessKeyId"] == NEAR_MISS_KEY for r in found)
    assert stats.records_parsed == len(found)


@pytest.mark.parametrize("chunk", [1, 5, 23, 64, 1000])
def test_a_key_split_across_decompressed_pieces_is_found(inflater: str, chunk: int) -> None:
    data, own, named = realistic_file(records=20)
    found = fast(data, mentions_credential, frozenset({TARGET_KEY}), chunk=chunk)
    assert len(found) == own + named
    assert found == reference(data, mentions_credential, frozenset({TARGET_KEY}))


# -- files made to defeat the byte search -------------------------------------------------


def forged(key: str) -> dict[str, Any]:
    """An object an attacker's request can carry (S3 logs a bucket policy as parsed JSON):
    shaped like a record, with the key as its caller."""
    return {"eventVersion": "1.09", "userIdentity": {"accessKeyId": key}, "eventName": "Fake"}


def test_a_record_forged_inside_request_parameters_is_not_taken_for_a_record() -> None:
    # Between two objects of an array, a forged record reads like a record boundary
    # (`},{"eventVersion":`); taken for one, it would be a call the key never made.
    policy = {"Statement": [{"Sid": "a"}, forged(KEY), forged(KEY), forged(OTHER_KEY)]}
    records = [
        call(OTHER_KEY, eventID="real-1"),
        call(None, eventName="PutBucketPolicy", requestParameters={"bucketPolicy": policy}),
        call(KEY, eventID="real-2"),
    ]
    data = compact({"Records": records})
    stats = ScanStats()
    found = fast(data, by_credential, frozenset({KEY}), stats=stats)
    assert [r["eventID"] for r in found] == ["real-2"]
    assert stats.parsed == 1
    mentioned = fast(data, mentions_credential, frozenset({KEY}))
    assert mentioned == reference(data, mentions_credential, frozenset({KEY}))
    # The policy names the key, so its call mentions it; the forgery is no call of its own.
    assert [r["eventName"] for r in mentioned] == ["PutBucketPolicy", "ListUsers"]


def test_records_forged_before_a_real_call_of_the_key_are_not_taken_for_records() -> None:
    # The prefix of the file up to the real call is a valid document and every
    # "eventVersion" in it is at a `},{"eventVersion":`: only the record count tells.
    chain = [{"Sid": "a"}, forged(KEY), forged(OTHER_KEY)]
    records = [
        call(None, eventID="r0"),
        call(None, eventID="r1", requestParameters={"bucketPolicy": {"Statement": chain}}),
        call(KEY, eventID="r2"),
    ]
    data = compact({"Records": records})
    assert [r["eventID"] for r in fast(data, by_credential, frozenset({KEY}))] == ["r2"]


def test_records_forged_where_others_lack_a_leading_event_version_are_found_out() -> None:
    # Two records whose eventVersion is not their first key make up, in the count of
    # record boundaries, for two forged ones: the count of "eventVersion" strings tells.
    def reordered(record: dict[str, Any]) -> dict[str, Any]:
        return dict(reversed(record.items()))

    chain = [{"Sid": "a"}, forged(KEY), forged(OTHER_KEY)]
    records = [
        call(None, eventID="r0"),
        reordered(call(None, eventID="r1")),
        reordered(call(None, eventID="r2")),
        call(None, eventID="r3", requestParameters={"bucketPolicy": {"Statement": chain}}),
        call(KEY, eventID="r4"),
    ]
    data = compact({"Records": records})
    assert [r["eventID"] for r in fast(data, by_credential, frozenset({KEY}))] == ["r4"]


def test_records_forged_where_others_lack_an_event_version_at_all_are_found_out() -> None:
    # Two objects in the array that are no records at all, and two eventVersion keys
    # forged inside a record's parameters: the count of "eventVersion" strings matches
    # the count of records; that every record holds its own eventVersion does not.
    chain = [{}, forged(KEY), {"eventVersion": "y"}]
    records = [
        call(None, eventID="r0"),
        {"x": 1},
        {"x": 2},
        call(None, eventID="r3", requestParameters={"bucketPolicy": {"Statement": chain}}),
        call(KEY, eventID="r4"),
    ]
    data = compact({"Records": records})
    stats = ScanStats()
    found = fast(data, by_credential, frozenset({KEY}), stats=stats)
    assert found == reference(data, by_credential, frozenset({KEY}))
    assert [r["eventID"] for r in found] == ["r4"]
    assert stats.parsed == 1


@pytest.mark.parametrize("number", ["-100000000000000000000", "123456789012345678901234567890"])
def test_a_number_beyond_64_bits_before_the_hit_is_read_as_json_reads_it(number: str) -> None:
    # simdjson refuses what json.loads reads: the file is parsed whole instead.
    records = [call(None, eventID="r0", requestParameters={"maxResults": 0}), call(KEY)]
    data = compact({"Records": records})
    data = data.replace(b'"maxResults":0', f'"maxResults":{number}'.encode())
    found = fast(data, by_credential, frozenset({KEY}))
    assert found == reference(data, by_credential, frozenset({KEY}))
    assert [r["userIdentity"]["accessKeyId"] for r in found] == [KEY]


def test_a_key_written_with_escapes_is_found() -> None:
    spelled = "".join(f"\\u{ord(c):04x}" if c in "AQ" else c for c in KEY)
    data = compact({"Records": [call(None), call(KEY, eventID="escaped")]})
    data = data.replace(f'"{KEY}"'.encode(), f'"{spelled}"'.encode())
    assert KEY.encode() not in data
    assert [r["eventID"] for r in fast(data, by_credential)] == ["escaped"]


def test_a_name_written_with_escaped_slashes_is_found(inflater: str) -> None:
    name = "/app/prod/db-host"
    record = call(None, requestParameters={"name": name})
    data = compact({"Records": [call(None), record, call(None)]})
    data = data.replace(name.encode(), name.replace("/", "\\/").encode())
    assert name.encode() not in data

    def keep(r: dict[str, Any]) -> bool:
        return (r.get("requestParameters") or {}).get("name") == name

    for chunk in (4096, 7):
        assert scan_log(gzip.compress(data), [name], keep, chunk=chunk) == [record]


@pytest.mark.parametrize(
    "layout",
    [
        {"indent": 2},
        {"separators": (", ", ": ")},
        {"separators": (",", ":"), "ensure_ascii": True},
    ],
)
def test_other_layouts_give_the_same_records(layout: dict[str, Any]) -> None:
    records = [call(KEY, eventID="é-1"), call(OTHER_KEY, eventName="Écrire"), call(None)]
    data = json.dumps({"Records": records}, **layout).encode()
    for predicate in PREDICATES.values():
        assert fast(data, predicate) == reference(data, predicate)


def test_a_pretty_printed_file_is_parsed_whole() -> None:
    data = json.dumps({"Records": [call(KEY), call(None)]}, indent=2).encode()
    stats = ScanStats()
    assert len(fast(data, by_credential, stats=stats)) == 1
    assert stats.parsed == 1


def test_the_last_of_repeated_records_arrays_is_read() -> None:
    decoy = compact([call(KEY, eventID="decoy"), call(None)]).decode()
    for real, expected in (([call(None)], []), ([call(KEY, eventID="real")], ["real"])):
        data = f'{{"Records":{decoy},"Records":{compact(real).decode()}}}'.encode()
        assert [r["eventID"] for r in fast(data, by_credential)] == expected


def test_another_key_of_the_document_after_the_records_is_no_record() -> None:
    data = compact({"Records": [call(None), call(OTHER_KEY)], "Digest": [{"x": [KEY]}]})
    assert fast(data, by_credential) == reference(data, by_credential)
    data = compact({"Records": [call(None)], "Extra": [call(KEY)]})
    assert fast(data, by_credential) == []


def test_empty_records() -> None:
    for data in (b'{"Records":[]}', b'{"Records": []}\n', b"{}"):
        assert fast(data, mentions_credential) == []


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32-be"])
def test_a_file_in_another_encoding_is_read_as_json_reads_it(encoding: str) -> None:
    data = json.dumps({"Records": [call(KEY)]}).encode(encoding)
    for chunk in (4096, 3):
        assert fast(data, by_credential, chunk=chunk) == reference(data, by_credential) != []


def test_a_truncated_file_fails_as_the_plain_read_does(inflater: str) -> None:
    body = gzip.compress(compact({"Records": [call(KEY)]}))
    with pytest.raises(EOFError):
        scan_log(body[:-12], KEYS, lambda r: by_credential(r, KEYS))


def test_a_file_of_several_gzip_members_is_read_whole(inflater: str) -> None:
    document = compact({"Records": [call(KEY, eventID="one-member")]})
    body = gzip.compress(document[:20]) + gzip.compress(document[20:])
    found = scan_log(body, KEYS, lambda r: by_credential(r, KEYS))
    assert [r["eventID"] for r in found] == ["one-member"]


@pytest.mark.parametrize("needle", ['role"quoted', "rôle", "", "back\\slash"])
def test_a_needle_the_search_cannot_spell_parses_the_file(needle: str) -> None:
    record = call(None, requestParameters={"roleName": needle})
    data = compact({"Records": [record, call(None)]})
    stats = ScanStats()
    found = matching_records(
        data, [needle], lambda r: (r["requestParameters"] or {}).get("roleName") == needle, stats
    )
    assert found == [record]
    assert stats.parsed == 1


# -- the fast path is the reference, property-tested --------------------------------------

TRICKY_TEXT = [
    "",
    "}",
    "{",
    "]}",
    '"',
    '\\"',
    "\\",
    '},{"eventVersion":',
    '{"Records":[',
    '"eventVersion"',
    "eventVersion",
    "Records",
    "zoë ✓ 日本",
    "\u2028",
    "\x00",
    "\\u0041",
]

texts = st.one_of(
    st.sampled_from([KEY, OTHER_KEY, *NEAR_MISSES, *TRICKY_TEXT]),
    st.text(max_size=8),
    st.builds(
        lambda a, k, b: a + k + b,
        st.sampled_from(TRICKY_TEXT),
        st.sampled_from([KEY, OTHER_KEY]),
        st.sampled_from(TRICKY_TEXT),
    ),
)
values = st.recursive(
    st.one_of(texts, st.none(), st.booleans(), st.integers(-5, 5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(texts, inner, max_size=4),
        # Records forged in an array, after an object: each reads like a record boundary.
        st.lists(
            st.builds(forged, st.sampled_from([KEY, OTHER_KEY, NEAR_MISSES[0]])), max_size=3
        ).map(lambda chain: [{"Sid": "x"}, *chain]),
    ),
    max_leaves=12,
)


@st.composite
def records(draw: st.DrawFn) -> Any:
    identity: dict[str, Any] = {"type": draw(st.sampled_from(["IAMUser", "AssumedRole"]))}
    if draw(st.booleans()):
        identity["accessKeyId"] = draw(texts)
    record: dict[str, Any] = {"eventVersion": "1.09", "userIdentity": identity}
    for field in ("eventTime", "eventName", "requestParameters", "responseElements", "extra"):
        if draw(st.booleans()):
            record[field] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        # Not CloudTrail's key order, or not even an object.
        return draw(st.one_of(st.just(dict(reversed(record.items()))), values))
    return record


def _escaped(data: bytes) -> bytes:
    """The keys' letters written as \\u escapes, as no JSON writer does but JSON allows."""
    for key in (KEY, OTHER_KEY):
        data = data.replace(key.encode(), key.replace("A", "\\u0041").encode())
    return data


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    body = draw(st.lists(records(), max_size=6))
    layout = draw(st.sampled_from(["aws", "aws", "aws", "ascii", "spaced", "pretty"]))
    document: dict[str, Any] = {"Records": body}
    if draw(st.integers(0, 9)) == 0:
        document[draw(st.sampled_from(["Digest", "Records2"]))] = draw(values)
    if layout == "aws":
        data = compact(document)
    elif layout == "ascii":
        data = json.dumps(document, separators=(",", ":")).encode()
    elif layout == "spaced":
        data = json.dumps(document).encode()
    else:
        data = json.dumps(document, indent=draw(st.integers(0, 2)), ensure_ascii=False).encode()
    if draw(st.integers(0, 9)) == 0:
        data = _escaped(data)
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=documents(),
    chunk=st.sampled_from([3, 17, 4096]),
    predicate=st.sampled_from(["by", "mentions"]),
)
def test_the_scan_returns_exactly_what_parsing_every_record_returns(
    data: bytes, chunk: int, predicate: str
) -> None:
    check = PREDICATES[predicate]
    expected = reference(data, check)
    assert fast(data, check, chunk=chunk) == expected
    assert matching_records(data, KEYS, lambda r: check(r, KEYS)) == expected


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), records=st.integers(0, 40))
def test_files_as_cloudtrail_writes_them_never_need_the_whole_parse(
    seed: int, records: int
) -> None:
    factory = TrailFactory(seed)
    body = [factory.background(AT, "us-east-1") for _ in range(records)]
    body.insert(seed % (records + 1), factory.attacker(AT, "eu-west-1"))
    data = compact({"Records": body})
    stats = ScanStats()
    keys = frozenset({TARGET_KEY})
    found = fast(data, mentions_credential, keys, stats=stats)
    assert found == reference(data, mentions_credential, keys)
    assert (stats.by_hits, stats.parsed) == (1, 0)
