"""The codec server over HTTP: the protocol's JSON both ways, the token, CORS for the Web
UI's origin only, and the reasons it gives for what it refuses."""

import base64
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from codec.aesgcm import AesGcmCodec
from codec.server import create_codec_app, uvicorn_config

KEY = bytes(range(32))
TOKEN = "codec-server-test-token-0123456789abcdef"
UI_ORIGIN = "http://localhost:8233"
SECRET = "the-stolen-key-is-ASIAEXAMPLE"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def _json_plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


def _wire(*payloads: Payload) -> str:
    """The body as the CLI and the Web UI send it: protobuf's JSON form of Payloads."""
    return json_format.MessageToJson(Payloads(payloads=payloads))


def _protos(body: dict) -> list[Payload]:
    return list(json_format.ParseDict(body, Payloads()).payloads)


@pytest.fixture
def codec() -> AesGcmCodec:
    return AesGcmCodec({"k1": KEY}, "k1")


@pytest_asyncio.fixture
async def http(codec) -> AsyncIterator[httpx.AsyncClient]:
    app = create_codec_app(codec, TOKEN, ui_origin=UI_ORIGIN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://codec"
    ) as client:
        yield client


async def test_encode_then_decode_gives_back_the_payload(http):
    encoded = await http.post("/encode", content=_wire(_json_plain(SECRET)), headers=BEARER)
    assert encoded.status_code == 200, encoded.text
    [sealed] = _protos(encoded.json())
    assert sealed.metadata["encoding"] == b"binary/encrypted"
    assert sealed.metadata["encryption-key-id"] == b"k1"
    assert SECRET not in encoded.text
    assert SECRET.encode() not in sealed.data

    decoded = await http.post("/decode", json=encoded.json(), headers=BEARER)

    assert decoded.status_code == 200, decoded.text
    assert decoded.headers["content-type"] == "application/json"
    assert decoded.json() == {
        "payloads": [
            {
                "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                "data": base64.b64encode(f'"{SECRET}"'.encode()).decode(),
            }
        ]
    }


async def test_decode_opens_what_the_workers_codec_wrote(http, codec):
    written = await codec.encode([_json_plain(SECRET), _json_plain("second")])

    decoded = await http.post("/decode", content=_wire(*written), headers=BEARER)

    assert decoded.status_code == 200, decoded.text
    assert _protos(decoded.json()) == [_json_plain(SECRET), _json_plain("second")]


async def test_url_safe_unpadded_base64_is_read_as_protobuf_json_allows(http, codec):
    [written] = await codec.encode([_json_plain(SECRET)])
    body = {
        "payloads": [
            {
                "metadata": {
                    key: base64.urlsafe_b64encode(value).decode().rstrip("=")
                    for key, value in written.metadata.items()
                },
                "data": base64.urlsafe_b64encode(written.data).decode().rstrip("="),
            }
        ]
    }

    decoded = await http.post("/decode", json=body, headers=BEARER)

    assert decoded.status_code == 200, decoded.text
    assert _protos(decoded.json()) == [_json_plain(SECRET)]


async def test_unencrypted_payloads_pass_through_with_every_field(http):
    unencrypted = _json_plain("written before encryption")
    unencrypted.external_payloads.add(size_bytes=1234)

    decoded = await http.post("/decode", content=_wire(unencrypted), headers=BEARER)

    assert decoded.status_code == 200, decoded.text
    assert _protos(decoded.json()) == [unencrypted]


@pytest.mark.parametrize("route", ["/encode", "/decode"])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789abcdef0123456789", f"Basic {TOKEN}", TOKEN, "Bearer "],
)
async def test_every_codec_request_needs_the_bearer_token(http, route, authorization):
    headers = {"Authorization": authorization} if authorization else {}

    refused = await http.post(route, content=_wire(_json_plain(SECRET)), headers=headers)

    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "token" in refused.json()["error"]


async def test_the_token_is_checked_before_the_body_is_read(http):
    refused = await http.post("/decode", content=b"not json")

    assert refused.status_code == 401


@pytest.mark.parametrize("route", ["encode", "decode"])
async def test_the_web_ui_path_carries_the_token(http, codec, route):
    written = await codec.encode([_json_plain(SECRET)])

    answered = await http.post(f"/ui/{TOKEN}/{route}", content=_wire(*written))
    refused = await http.post(f"/ui/{TOKEN[:-1]}x/{route}", content=_wire(*written), headers=BEARER)

    assert answered.status_code == 200, answered.text
    assert refused.status_code == 401


async def test_without_a_ui_origin_there_is_no_web_ui_path_and_no_cors(codec):
    app = create_codec_app(codec, TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://codec"
    ) as http:
        by_path = await http.post(f"/ui/{TOKEN}/decode", content=_wire(_json_plain("x")))
        by_bearer = await http.post(
            "/decode", content=_wire(_json_plain("x")), headers={**BEARER, "Origin": UI_ORIGIN}
        )

    assert by_path.status_code == 404
    assert by_bearer.status_code == 200
    assert "access-control-allow-origin" not in by_bearer.headers


async def test_the_web_ui_origin_may_read_the_answers_and_no_other(http):
    from_the_ui = await http.post(
        f"/ui/{TOKEN}/decode",
        content=_wire(_json_plain("x")),
        headers={"Origin": UI_ORIGIN, "X-Namespace": "default"},
    )
    from_elsewhere = await http.post(
        f"/ui/{TOKEN}/decode",
        content=_wire(_json_plain("x")),
        headers={"Origin": "https://evil.example", "X-Namespace": "default"},
    )

    assert from_the_ui.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "access-control-allow-origin" not in from_elsewhere.headers
    assert "access-control-allow-credentials" not in from_elsewhere.headers


async def test_the_web_ui_preflight_is_answered_for_its_origin_only(http):
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }

    for_the_ui = await http.options(
        f"/ui/{TOKEN}/decode", headers={**preflight, "Origin": UI_ORIGIN}
    )
    for_elsewhere = await http.options(
        f"/ui/{TOKEN}/decode", headers={**preflight, "Origin": "http://localhost:9999"}
    )

    assert for_the_ui.status_code == 200
    assert for_the_ui.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "POST" in for_the_ui.headers["access-control-allow-methods"]
    allowed = for_the_ui.headers["access-control-allow-headers"].lower()
    assert {"content-type", "x-namespace", "authorization"} <= {
        header.strip() for header in allowed.split(",")
    }
    assert for_elsewhere.status_code == 400
    assert "access-control-allow-origin" not in for_elsewhere.headers


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (b"{not json", None, "Invalid JSON"),
        (b'{"payloads": 3}', "payloads", "valid array"),
        (b'{"payloads": [{"data": "!!!"}]}', "payloads.0.data", "not valid base64"),
        (b'{"payloads": [{"data": "QUJD="}]}', "payloads.0.data", "not valid base64"),
        (b'{"payloads": [{"data": "QUJDR"}]}', "payloads.0.data", "not valid base64"),
        (
            b'{"payloads": [{"metadata": {"encoding": 7}}]}',
            "payloads.0.metadata.encoding",
            "must be a base64 string",
        ),
    ],
)
async def test_a_body_that_is_not_protobufs_payloads_json_is_a_400(http, body, field, reason):
    refused = await http.post("/decode", content=body, headers=BEARER)

    assert refused.status_code == 400
    assert refused.json()["field"] == field
    assert reason in refused.json()["error"]


@pytest.mark.parametrize("path", ["/encode", "/decode"])
async def test_no_payloads_is_protobufs_empty_list_as_the_cli_sends_it(http, path):
    # `temporal workflow query --codec-endpoint` encodes its empty input as `{}`.
    answered = await http.post(path, content=b"{}", headers=BEARER)

    assert answered.status_code == 200, answered.text
    assert answered.json() == {"payloads": []}


async def test_a_payload_under_an_unknown_key_is_a_400_naming_the_key_id(http):
    elsewhere = AesGcmCodec({"k0": bytes(range(64, 96))}, "k0")
    [written] = await elsewhere.encode([_json_plain(SECRET)])

    refused = await http.post("/decode", content=_wire(written), headers=BEARER)

    assert refused.status_code == 400
    assert "'k0'" in refused.json()["error"]
    assert base64.b64encode(KEY).decode() not in refused.text
    assert KEY.hex() not in refused.text


async def test_a_tampered_payload_is_a_400(http, codec):
    [written] = await codec.encode([_json_plain(SECRET)])
    written.data = written.data[:-1] + bytes([written.data[-1] ^ 0x80])

    refused = await http.post("/decode", content=_wire(written), headers=BEARER)

    assert refused.status_code == 400
    assert "authentication failed" in refused.json()["error"]
    assert "'k1'" in refused.json()["error"]


async def test_payloads_and_tokens_never_reach_the_log(http, codec, caplog):
    caplog.set_level(logging.DEBUG)
    [written] = await codec.encode([_json_plain(SECRET)])
    tampered = Payload()
    tampered.CopyFrom(written)
    tampered.data = written.data[:-1] + bytes([written.data[-1] ^ 1])

    await http.post(f"/ui/{TOKEN}/decode", content=_wire(written))
    await http.post(f"/ui/{TOKEN[:-4]}abcd/decode", content=_wire(written))
    await http.post("/decode", content=_wire(tampered), headers=BEARER)
    await http.post("/encode", content=_wire(_json_plain(SECRET)), headers=BEARER)

    # The test's own HTTP client (httpx) logs the URLs it calls: the server's log is the rest.
    server_log = "\n".join(r.getMessage() for r in caplog.records if r.name != "httpx")
    assert "refused" in server_log
    assert SECRET not in server_log
    assert TOKEN[:-4] not in server_log


def test_an_access_log_line_for_the_web_ui_hides_the_token(codec, caplog):
    uvicorn_config(create_codec_app(codec, TOKEN, ui_origin=UI_ORIGIN), "127.0.0.1", 1)
    access = logging.getLogger("uvicorn.access")
    # What a handler added after start-up (a deployment's logging set-up) brings back.
    access.addHandler(caplog.handler)
    try:
        # The line uvicorn's HTTP protocols write for each request.
        access.warning(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", f"/ui/{TOKEN}/decode", "1.1", 200
        )
    finally:
        access.removeHandler(caplog.handler)

    assert "/ui/<token hidden>/decode" in caplog.text
    assert TOKEN not in caplog.text


async def test_health_needs_no_token(http):
    answered = await http.get("/healthz")

    assert answered.status_code == 200
    assert answered.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("token", "ui_origin"),
    [
        ("short", None),
        ("a token with spaces in it, long enough to pass", None),
        (TOKEN, "http://localhost:8233/"),
        (TOKEN, "localhost:8233"),
    ],
)
def test_the_app_refuses_an_unsafe_token_or_an_origin_that_is_not_one(codec, token, ui_origin):
    with pytest.raises(ValueError):
        create_codec_app(codec, token, ui_origin=ui_origin)
