"""The AES-256-GCM payload codec: what Quench writes to Temporal is encrypted, under a key
named in each payload's metadata, so keys rotate without losing older histories."""

import base64
import binascii
import dataclasses
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

# The encoding Temporal's samples and Web UI know as an encrypted payload.
ENCRYPTED_ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
TAG_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEYS_FORMAT = '{"<key id>": "<base64 of 32 random bytes>", ...}'


class CodecKeyError(ValueError):
    """Codec keys that cannot be used. The message names the key id, never the key."""


class PayloadDecryptionError(ValueError):
    """An encrypted payload this codec cannot open. Names the key id, never the key."""

    def __init__(self, key_id: str | None, reason: str) -> None:
        under = f" encrypted with key {key_id!r}" if key_id is not None else ""
        super().__init__(f"cannot decrypt a payload{under}: {reason}")
        self.key_id = key_id


class AesGcmCodec(PayloadCodec):
    """Encrypts with one key and decrypts with any configured one: while a new key
    encrypts, payloads written under the keys before it still read.

    A payload that is not encrypted passes through, so histories written before
    encryption was turned on still read.
    """

    def __init__(self, keys: Mapping[str, bytes], encrypting_key_id: str) -> None:
        if not keys:
            raise CodecKeyError(f"no codec keys; expected {_KEYS_FORMAT}")
        for key_id, key in keys.items():
            check_key_id(key_id)
            if len(key) != KEY_BYTES:
                raise CodecKeyError(
                    f"codec key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}"
                )
        if encrypting_key_id not in keys:
            raise CodecKeyError(
                f"the encrypting key {encrypting_key_id!r} is not among the codec keys "
                f"({', '.join(sorted(keys))})"
            )
        self.encrypting_key_id = encrypting_key_id
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    @classmethod
    def from_json(cls, keys_json: str, encrypting_key_id: str) -> "AesGcmCodec":
        return cls(parse_keys(keys_json), encrypting_key_id)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.encrypting_key_id.encode()
        # A random 96-bit nonce is safe for about 2**32 payloads under one key; keys
        # rotate long before that.
        nonce = os.urandom(NONCE_BYTES)
        # The key id is the associated data: a payload relabelled with another key id
        # fails authentication instead of being tried under a key it was not sealed with.
        sealed = self._ciphers[self.encrypting_key_id].encrypt(
            nonce, payload.SerializeToString(), key_id
        )
        return Payload(
            metadata={"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA: key_id},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCRYPTED_ENCODING:
            return payload
        label = payload.metadata.get(KEY_ID_METADATA)
        if label is None:
            raise PayloadDecryptionError(None, f"it has no {KEY_ID_METADATA} metadata")
        key_id = label.decode("utf-8", "replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(
                key_id, f"no such key among the codec keys ({', '.join(self.key_ids)})"
            )
        if len(payload.data) < NONCE_BYTES + TAG_BYTES:
            raise PayloadDecryptionError(key_id, "the payload is too short to be AES-GCM")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            serialised = cipher.decrypt(nonce, sealed, label)
        except InvalidTag:
            raise PayloadDecryptionError(
                key_id,
                "authentication failed: the payload was altered or relabelled, or this "
                "key id now names another key",
            ) from None
        try:
            return Payload.FromString(serialised)
        except DecodeError:
            raise PayloadDecryptionError(
                key_id, "the decrypted bytes are not a Temporal payload"
            ) from None


def encrypting_data_converter(codec: PayloadCodec) -> DataConverter:
    """Quench's pydantic data converter, with `codec` over every payload, and failures'
    messages and stack traces moved into an encoded (so encrypted) attribute: they name
    principals, keys and resources as the payloads do."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def check_key_id(key_id: str) -> None:
    # The id travels in every payload's metadata and in error messages: kept plain.
    if not _KEY_ID.fullmatch(key_id):
        raise CodecKeyError(
            f"codec key id {key_id!r} is not 1 to 64 letters, digits, '.', '_' or '-' "
            f"starting with a letter or digit"
        )


def parse_keys(keys_json: str) -> dict[str, bytes]:
    """Codec keys from a JSON object of key id to the base64 of a 32-byte key."""
    try:
        document = json.loads(keys_json, object_pairs_hook=_refuse_repeated_ids)
    except json.JSONDecodeError as exc:
        # The position only: the text around it is key material.
        raise CodecKeyError(
            f"codec keys are not JSON ({exc.msg}, line {exc.lineno} column {exc.colno}); "
            f"expected {_KEYS_FORMAT}"
        ) from None
    if not isinstance(document, dict):
        raise CodecKeyError(f"codec keys must be a JSON object {_KEYS_FORMAT}")
    if not document:
        raise CodecKeyError(f"no codec keys; expected {_KEYS_FORMAT}")
    keys = {}
    for key_id, encoded in document.items():
        check_key_id(key_id)
        keys[key_id] = _decode_key(key_id, encoded)
    return keys


def keys_json(keys: Mapping[str, bytes]) -> str:
    """The JSON that `parse_keys` reads."""
    return json.dumps({key_id: base64.b64encode(key).decode() for key_id, key in keys.items()})


def generate_key_entry(key_id: str | None = None) -> tuple[str, str]:
    """A new key id and the base64 of a new random key, to add to the codec keys. The
    default id starts with today's date, so the newest key is easy to tell."""
    if key_id is None:
        key_id = f"{datetime.now(UTC):%Y-%m-%d}-{secrets.token_hex(3)}"
    check_key_id(key_id)
    return key_id, base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


def _refuse_repeated_ids(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would keep the last of two equal ids without a word; a key would be lost.
    document: dict[str, Any] = {}
    for key_id, value in pairs:
        if key_id in document:
            raise CodecKeyError(f"codec key id {key_id!r} appears twice")
        document[key_id] = value
    return document


def _decode_key(key_id: str, encoded: object) -> bytes:
    if not isinstance(encoded, str):
        raise CodecKeyError(f"codec key {key_id!r} must be a base64 string")
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise CodecKeyError(f"codec key {key_id!r} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise CodecKeyError(f"codec key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
    return key
