"""The AES-GCM payload codec: what it writes, which keys open it, what it refuses, and the
codec keys' JSON."""

import base64
import json

import pytest
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter

from codec.aesgcm import (
    ENCRYPTED_ENCODING,
    KEY_ID_METADATA,
    AesGcmCodec,
    CodecKeyError,
    PayloadDecryptionError,
    encrypting_data_converter,
    generate_key_entry,
    keys_json,
    parse_keys,
)

OLD_KEY = bytes(range(32))
NEW_KEY = bytes(range(100, 132))
SECRET = "wJalrXUtnFEMI-the-words-nobody-may-read"


class Note(BaseModel):
    text: str


def _plain(text: str = SECRET) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([Note(text=text)])[0]


def _key_material_in(message: str, *keys: bytes) -> bool:
    return any(base64.b64encode(key).decode() in message or key.hex() in message for key in keys)


async def test_round_trip_through_the_data_converter_hides_the_payload():
    converter = encrypting_data_converter(AesGcmCodec({"old": OLD_KEY}, "old"))

    [written] = await converter.encode([Note(text=SECRET)])

    assert written.metadata["encoding"] == ENCRYPTED_ENCODING
    assert written.metadata[KEY_ID_METADATA] == b"old"
    assert SECRET.encode() not in written.SerializeToString()
    assert await converter.decode([written], [Note]) == [Note(text=SECRET)]


async def test_each_payload_has_its_own_nonce():
    codec = AesGcmCodec({"old": OLD_KEY}, "old")

    first, second = await codec.encode([_plain(), _plain()])

    assert first.data[:12] != second.data[:12]
    assert first.data != second.data


async def test_payloads_under_the_old_key_still_read_once_a_new_key_encrypts():
    before = AesGcmCodec({"old": OLD_KEY}, "old")
    after = AesGcmCodec({"old": OLD_KEY, "new": NEW_KEY}, "new")
    [under_old] = await before.encode([_plain("written last year")])

    [under_new] = await after.encode([_plain("written today")])

    assert under_new.metadata[KEY_ID_METADATA] == b"new"
    assert await after.decode([under_old, under_new]) == [
        _plain("written last year"),
        _plain("written today"),
    ]


async def test_a_payload_under_a_key_no_longer_configured_names_its_key_id():
    [under_old] = await AesGcmCodec({"old": OLD_KEY}, "old").encode([_plain()])
    retired = AesGcmCodec({"new": NEW_KEY}, "new")

    with pytest.raises(PayloadDecryptionError) as refused:
        await retired.decode([under_old])

    assert refused.value.key_id == "old"
    assert "'old'" in str(refused.value)
    assert "no such key" in str(refused.value)
    assert not _key_material_in(str(refused.value), OLD_KEY, NEW_KEY)


async def test_a_tampered_ciphertext_fails_authentication():
    codec = AesGcmCodec({"old": OLD_KEY}, "old")
    [written] = await codec.encode([_plain()])
    tampered = Payload()
    tampered.CopyFrom(written)
    tampered.data = written.data[:-1] + bytes([written.data[-1] ^ 1])

    with pytest.raises(PayloadDecryptionError, match="authentication failed") as refused:
        await codec.decode([tampered])

    assert refused.value.key_id == "old"
    assert not _key_material_in(str(refused.value), OLD_KEY)


async def test_a_payload_relabelled_to_another_key_id_does_not_open():
    # The same key under two ids (a key re-registered under a new name): only the key id
    # bound as associated data tells the relabelled payload apart.
    codec = AesGcmCodec({"old": OLD_KEY, "alias": OLD_KEY}, "old")
    [written] = await codec.encode([_plain()])
    relabelled = Payload()
    relabelled.CopyFrom(written)
    relabelled.metadata[KEY_ID_METADATA] = b"alias"

    with pytest.raises(PayloadDecryptionError, match="authentication failed") as refused:
        await codec.decode([relabelled])

    assert refused.value.key_id == "alias"


async def test_an_encrypted_payload_without_a_key_id_is_refused():
    codec = AesGcmCodec({"old": OLD_KEY}, "old")
    [written] = await codec.encode([_plain()])
    del written.metadata[KEY_ID_METADATA]

    with pytest.raises(PayloadDecryptionError, match=KEY_ID_METADATA):
        await codec.decode([written])


async def test_an_encrypted_payload_too_short_for_a_nonce_and_tag_is_refused():
    codec = AesGcmCodec({"old": OLD_KEY}, "old")
    short = Payload(
        metadata={"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA: b"old"}, data=b"\0" * 27
    )

    with pytest.raises(PayloadDecryptionError, match="too short"):
        await codec.decode([short])


async def test_payloads_written_before_encryption_pass_through():
    written_before = await pydantic_data_converter.encode([Note(text=SECRET)])
    codec = AesGcmCodec({"old": OLD_KEY}, "old")

    assert await codec.decode(written_before) == written_before
    assert await encrypting_data_converter(codec).decode(written_before, [Note]) == [
        Note(text=SECRET)
    ]


@pytest.mark.parametrize(
    ("keys", "encrypting", "reason"),
    [
        ({}, "old", "no codec keys"),
        ({"old": OLD_KEY}, "new", "'new' is not among the codec keys (old)"),
        ({"old": OLD_KEY[:16]}, "old", "'old' is 16 bytes; AES-256 needs 32"),
        ({"old key": OLD_KEY}, "old key", "'old key' is not 1 to 64 letters"),
    ],
)
def test_the_codec_refuses_keys_it_cannot_use(keys, encrypting, reason):
    with pytest.raises(CodecKeyError) as refused:
        AesGcmCodec(keys, encrypting)

    assert reason in str(refused.value)


def test_keys_are_read_from_json():
    text = json.dumps(
        {
            "2025-01": base64.b64encode(OLD_KEY).decode(),
            "2026-01": base64.b64encode(NEW_KEY).decode(),
        }
    )

    assert parse_keys(text) == {"2025-01": OLD_KEY, "2026-01": NEW_KEY}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"old": ', "not JSON"),
        ('["a", "b"]', "must be a JSON object"),
        ("{}", "no codec keys"),
        ('{"old": "c2hvcnQ="}', "'old' is 5 bytes; AES-256 needs 32"),
        ('{"old": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8!"}', "'old' is not valid base64"),
        ('{"old": 12345}', "'old' must be a base64 string"),
        ('{"../old": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}', "'../old' is not 1 to 64"),
        ('{"": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}', "'' is not 1 to 64"),
        (
            '{"old": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", '
            '"old": "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM="}',
            "'old' appears twice",
        ),
    ],
)
def test_unusable_keys_json_is_refused_without_quoting_the_key(text, reason):
    with pytest.raises(CodecKeyError) as refused:
        parse_keys(text)

    assert reason in str(refused.value)
    assert "AAECAwQF" not in str(refused.value)
    assert "c2hvcnQ" not in str(refused.value)


async def test_a_generated_key_entry_is_a_usable_key():
    key_id, encoded = generate_key_entry()
    other_id, other = generate_key_entry("2026-spare")

    keys = parse_keys(json.dumps({key_id: encoded, other_id: other}))

    assert other_id == "2026-spare"
    assert keys[key_id] != keys[other_id]
    assert parse_keys(keys_json(keys)) == keys
    codec = AesGcmCodec(keys, key_id)
    assert await codec.decode(await codec.encode([_plain()])) == [_plain()]


def test_a_generated_key_entry_refuses_an_unusable_id():
    with pytest.raises(CodecKeyError):
        generate_key_entry("has spaces")
