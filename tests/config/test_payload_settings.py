"""The payload keys and the codec server's settings: refused at start when they cannot
work, and the worker and webhook refuse to write cases in clear outside the lab."""

import json

import pytest
from pydantic import ValidationError

from codec.aesgcm import generate_key_entry
from config.settings import Settings, settings_problem

ACCOUNT = "111122223333"


def keys(*ids: str) -> str:
    return json.dumps(dict(generate_key_entry(key_id) for key_id in ids))


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"payload_keys": '{"k1": "c2hvcnQ="}'}, "QUENCH_PAYLOAD_KEYS"),
        ({"payload_keys": "not json"}, "QUENCH_PAYLOAD_KEYS"),
        ({"payload_keys": keys("a", "b")}, "QUENCH_PAYLOAD_KEY_ID must name"),
        ({"payload_keys": keys("a"), "payload_key_id": "b"}, "QUENCH_PAYLOAD_KEY_ID 'b'"),
        ({"payload_key_id": "a"}, "QUENCH_PAYLOAD_KEYS is unset"),
        ({"payload_keys": keys("a"), "encrypt_payloads": False}, "unset one"),
        ({"codec_token": "short"}, "QUENCH_CODEC_TOKEN"),
    ],
)
def test_unusable_encryption_settings_are_refused_naming_the_setting(given, named):
    with pytest.raises(ValidationError) as refused:
        Settings(account_id=ACCOUNT, **given)
    problem = settings_problem(refused.value)
    assert named in problem
    # No key material in the message.
    for value in given.values():
        if isinstance(value, str) and len(value) > 20:
            assert value not in problem


def test_the_codec_encrypts_with_the_key_named_and_reads_every_key():
    settings = Settings(account_id=ACCOUNT, payload_keys=keys("old", "new"), payload_key_id="new")
    codec = settings.payload_codec()
    assert codec is not None and sorted(codec.key_ids) == ["new", "old"]


def test_outside_the_lab_the_processes_that_write_cases_need_keys_or_a_plain_no():
    with pytest.raises(ValueError, match="QUENCH_PAYLOAD_KEYS"):
        Settings(account_id=ACCOUNT).require_payload_encryption()
    Settings(account_id=ACCOUNT, encrypt_payloads=False).require_payload_encryption()
    Settings(account_id=ACCOUNT, payload_keys=keys("a")).require_payload_encryption()
    # The lab is in clear unless told otherwise.
    Settings(lab=True).require_payload_encryption()
    with pytest.raises(ValueError, match="QUENCH_PAYLOAD_KEYS"):
        Settings(lab=True, encrypt_payloads=True).require_payload_encryption()


def test_the_codec_server_answers_the_web_uis_origin():
    settings = Settings(lab=True, temporal_ui_url="https://temporal.example.com/ui/")
    assert settings.codec_origin == "https://temporal.example.com"
    assert Settings(lab=True, codec_url="https://codec.example.com/").codec_endpoint == (
        "https://codec.example.com"
    )
