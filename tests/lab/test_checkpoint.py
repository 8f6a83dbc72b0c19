"""The lab's checkpoint without a server: a checkpoint is used only whole, written by the
same moto and lab code, and at a place its recording still has; a write that fails leaves
the last one as it was; and moto's state is written without its secrets."""

import collections
import hashlib
import json
import os
import threading
import weakref
from pathlib import Path

import pytest
from moto.s3.models import FakeKey
from moto.s3.utils import _VersionedKeyStore

from activities.evidence import canonical_json
from activities.redaction import redact
from lab import checkpoint, moto_state
from lab.checkpoint import CheckpointUnusable, RecordingPlace
from lab.scrubbing import SCRUBBED

LINES = [b'{"sequence": 0}\n', b'{"sequence": 1}\n', b'{"sequence": 2}\n']


@pytest.fixture
def lab(tmp_path: Path) -> tuple[Path, Path, RecordingPlace]:
    """A recording of three requests, and a checkpoint after the first two."""
    recording = tmp_path / "lab-aws.recording.jsonl"
    recording.write_bytes(b"".join(LINES))
    place = RecordingPlace().after(LINES[0]).after(LINES[1])
    path = tmp_path / checkpoint.CHECKPOINT_NAME
    checkpoint.write(path, place, b"the state after two requests")
    return path, recording, place


def test_a_place_counts_requests_and_bytes_and_knows_its_last_line():
    place = RecordingPlace().after(LINES[0]).after(LINES[1])
    assert place.entries == 2
    assert place.offset == len(LINES[0]) + len(LINES[1])
    assert place.last_line_bytes == len(LINES[1])
    assert place.last_line_sha256 == hashlib.sha256(LINES[1]).hexdigest()


def test_a_checkpoint_reads_back_with_its_place(lab):
    path, recording, place = lab
    assert checkpoint.read(path, recording) == (place, b"the state after two requests")


def _unusable(path: Path, recording: Path) -> str:
    with pytest.raises(CheckpointUnusable) as refused:
        checkpoint.read(path, recording)
    return str(refused.value)


def test_a_damaged_checkpoint_is_not_used(lab):
    path, recording, _ = lab
    whole = path.read_bytes()
    flipped = bytearray(whole)
    flipped[-3] ^= 0xFF
    path.write_bytes(bytes(flipped))
    assert _unusable(path, recording) == "its content does not match its SHA-256"
    path.write_bytes(whole[:-5])
    assert _unusable(path, recording).startswith("it holds ")
    path.write_bytes(b"\x00\x01 not a header\n" + whole)
    assert _unusable(path, recording).startswith("its header is unreadable")


def test_a_checkpoint_of_another_moto_is_not_used(lab):
    path, recording, _ = lab
    header, payload = path.read_bytes().split(b"\n", 1)
    written = json.loads(header)
    written["fingerprint"]["moto"] = "4.0.0"
    path.write_bytes(json.dumps(written).encode() + b"\n" + payload)
    now = checkpoint.fingerprint()["moto"]
    assert _unusable(path, recording) == f"it was written by moto 4.0.0, this is {now}"
    written["fingerprint"]["moto"] = now
    written["fingerprint"]["lab server code"] = "0" * 64
    path.write_bytes(json.dumps(written).encode() + b"\n" + payload)
    assert "it was written by lab server code 000" in _unusable(path, recording)


def test_a_checkpoint_is_not_used_with_another_recording(lab):
    path, recording, _ = lab
    recording.write_bytes(LINES[0])
    assert "which has" in _unusable(path, recording)
    recording.write_bytes(LINES[0] + b'{"sequence": 7}\n' + LINES[2])
    assert _unusable(path, recording) == (
        "the recording's request 2 is not the one it was taken after"
    )


def test_a_checkpoint_before_the_recording_s_end_reads_back(lab):
    # The recording goes on after it: the rest is replayed from its place.
    path, recording, place = lab
    with recording.open("ab") as more:
        more.write(b'{"sequence": 3}\n')
    assert checkpoint.read(path, recording)[0] == place


def test_a_write_that_fails_leaves_the_last_checkpoint_whole(lab, monkeypatch):
    path, recording, place = lab
    before = path.read_bytes()

    def crash(descriptor: int) -> None:
        raise OSError("the machine went away")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        checkpoint.write(path, place.after(LINES[2]), b"the state after three requests")
    monkeypatch.undo()
    assert path.read_bytes() == before
    leftovers = list(path.parent.glob("*.tmp"))
    assert len(leftovers) == 1
    assert checkpoint.read(path, recording) == (place, b"the state after two requests")
    checkpoint.remove_leftovers(path)
    assert list(path.parent.glob("*.tmp")) == []


def test_no_checkpoint_is_a_reason_too(tmp_path):
    assert _unusable(tmp_path / "none", tmp_path / "recording") == "there is no checkpoint"


class _AccessKey:
    def __init__(self, access_key_id: str, secret: str) -> None:
        self.access_key_id = access_key_id
        self.secret_access_key = secret
        self.status = "Active"


def test_secrets_are_written_as_the_placeholder():
    key = _AccessKey("AKIAEXAMPLE000000001", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    state = {
        "keys": [key],
        "login": {"Password": "Hunter2-correct-horse"},
        "session": {"session_token": "IQoJb3JpZ2luX2VjEJ-session", "ClientToken": "run-1"},
        "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n",
    }
    written = moto_state.dumps(state)
    for secret in (b"wJalrXUtnFEMI", b"Hunter2", b"IQoJb3JpZ2lu", b"MIIEow"):
        assert secret not in written
    loaded = moto_state.loads(written)
    assert loaded["keys"][0].secret_access_key == SCRUBBED
    assert loaded["keys"][0].access_key_id == "AKIAEXAMPLE000000001"
    assert loaded["login"] == {"Password": SCRUBBED}
    # An idempotency token is no secret: a resumed world keeps it.
    assert loaded["session"] == {"session_token": SCRUBBED, "ClientToken": "run-1"}
    assert loaded["pem"] == SCRUBBED


def test_a_secret_reached_before_the_field_that_names_it_is_refused():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    with pytest.raises(moto_state.StateNotCaptured, match="reached before the field"):
        moto_state.dumps({"copied": secret, "key": _AccessKey("AKIAEXAMPLE000000001", secret)})


def test_what_moto_keeps_unpicklable_is_written_in_a_form_that_loads():
    tags: collections.defaultdict[str, dict[str, str]] = collections.defaultdict(lambda: {})
    tags["i-1"]["team"] = "orders"
    nested: collections.defaultdict[str, collections.defaultdict[str, dict[str, int]]]
    nested = collections.defaultdict(lambda: collections.defaultdict(dict))
    nested["a"]["b"]["c"] = 1
    target = _AccessKey("AKIAEXAMPLE000000002", "")
    weak = weakref.WeakValueDictionary({"arn": target})
    loaded = moto_state.loads(
        moto_state.dumps(
            {"tags": tags, "nested": nested, "lock": threading.RLock(), "weak": weak, "t": target}
        )
    )
    assert loaded["tags"]["i-1"] == {"team": "orders"} and loaded["tags"]["i-2"] == {}
    assert loaded["nested"]["x"]["y"] == {}
    assert loaded["weak"]["arn"] is loaded["t"]
    with loaded["lock"]:
        pass


def _s3_object(content: bytes) -> FakeKey:
    return FakeKey(
        "cases/c/evidence/x.json",
        content,
        account_id="123456789012",
        region_name="us-east-1",
        checksum_value="c2hhMjU2",
    )


def test_s3_objects_are_written_as_the_recording_keeps_them():
    # Redacted evidence, byte for byte; an object holding a secret field, scrubbed and
    # without the digests of what it was, as a replay of its scrubbed request writes it.
    evidence = canonical_json(redact({"password": "s3cret", "eventName": "CreateLoginProfile"}))
    stolen = json.dumps({"AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "wJalrXUtnFEMI"})
    written = moto_state.dumps([_s3_object(evidence), _s3_object(stolen.encode())])
    assert b"wJalrXUtnFEMI" not in written
    kept, scrubbed = moto_state.loads(written)
    assert kept.value == evidence and kept.checksum_value == "c2hhMjU2"
    assert json.loads(scrubbed.value) == {"AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": SCRUBBED}
    assert scrubbed.checksum_value is None
    assert scrubbed.etag == f'"{hashlib.md5(scrubbed.value, usedforsecurity=False).hexdigest()}"'


def test_every_version_of_an_s3_object_is_kept():
    # S3's store of versions reads as its latest versions, and is filled a version at a time.
    versions = _VersionedKeyStore()
    versions["cases/c/evidence/x.json"] = _s3_object(b"first")
    versions["cases/c/evidence/x.json"] = _s3_object(b"second")
    loaded = moto_state.loads(moto_state.dumps(versions))
    assert [v.value for v in loaded.getlist("cases/c/evidence/x.json")] == [b"first", b"second"]


def test_an_instance_s_secrets_are_scrubbed_from_what_its_scripts_printed():
    # moto keeps what an SSM command printed; a script that read the instance's metadata
    # printed its role's secret key and token.
    secret, token = "zoxwr/oExzfjFvy/YAhubx6bTvknBk+sGTNGfxRS", "FQoGZXIvYXdzEBYaDYmdwCIC"
    printed = f'{{\n  "AccessKeyId" : "ASIAEXAMPLE",\n  "SecretAccessKey" : "{secret}",\n'
    printed += f'  "Token" : "{token}"\n}}'
    invocation = {"StandardOutputContent": printed, "InstanceId": "i-1"}
    written = moto_state.dumps([invocation], in_text={secret, token, SCRUBBED})
    assert secret.encode() not in written and token.encode() not in written
    output = moto_state.loads(written)[0]["StandardOutputContent"]
    assert output == printed.replace(secret, SCRUBBED).replace(token, SCRUBBED)
