"""SNS HTTPS subscriptions: the message envelope, its signature, and the subscription's
confirmation.

A message is trusted only when its topic is one of QUENCH_SNS_TOPIC_ARNS and its
signature verifies with the certificate SNS publishes for the topic's region, fetched
over HTTPS from that region's SNS host and nowhere else. The certificate fetcher and the
confirmer are injected, so tests sign with a key of their own.
"""

import asyncio
import base64
import binascii
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from pydantic import BaseModel, ConfigDict, Field, model_validator

from config.settings import SNS_TOPIC_ARN_PATTERN

CertificateFetcher = Callable[[str], Awaitable[bytes]]
SubscriptionConfirmer = Callable[[str], Awaitable[None]]

MAX_CERTIFICATE_BYTES = 64 * 1024
FETCH_TIMEOUT_SECONDS = 5.0


class SnsMessage(BaseModel):
    """The JSON document SNS POSTs to an HTTPS subscription. Values that are signed stay
    the exact strings SNS sent."""

    model_config = ConfigDict(extra="ignore")
    Type: Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
    MessageId: str = Field(min_length=1, max_length=100)
    TopicArn: str = Field(pattern=SNS_TOPIC_ARN_PATTERN)
    Message: str = Field(max_length=512 * 1024)
    Timestamp: str = Field(min_length=1, max_length=40)
    SignatureVersion: Literal["1", "2"]
    Signature: str = Field(min_length=1, max_length=4096)
    SigningCertURL: str = Field(min_length=1, max_length=2048)
    Subject: str | None = Field(default=None, max_length=100)
    SubscribeURL: str | None = Field(default=None, max_length=4096)
    Token: str | None = Field(default=None, max_length=4096)
    UnsubscribeURL: str | None = Field(default=None, max_length=4096)

    @model_validator(mode="after")
    def _confirmations_carry_their_url(self) -> "SnsMessage":
        if self.Type != "Notification" and (self.SubscribeURL is None or self.Token is None):
            raise ValueError(f"a {self.Type} carries SubscribeURL and Token")
        return self

    @property
    def region(self) -> str:
        return self.TopicArn.split(":")[3]


class SnsRejected(Exception):
    """A message that cannot be trusted or used; `status` is the HTTP answer."""

    def __init__(self, status: int, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.status = status
        self.field = field
        self.problem = problem


def string_to_sign(message: SnsMessage) -> bytes:
    """AWS's canonical form: each signed name and its value on lines of their own, names in
    byte order, Subject only when present, and only the names of this message type."""
    if message.Type == "Notification":
        fields = [("Message", message.Message), ("MessageId", message.MessageId)]
        if message.Subject is not None:
            fields.append(("Subject", message.Subject))
        fields += [
            ("Timestamp", message.Timestamp),
            ("TopicArn", message.TopicArn),
            ("Type", message.Type),
        ]
    else:
        fields = [
            ("Message", message.Message),
            ("MessageId", message.MessageId),
            ("SubscribeURL", message.SubscribeURL or ""),
            ("Timestamp", message.Timestamp),
            ("Token", message.Token or ""),
            ("TopicArn", message.TopicArn),
            ("Type", message.Type),
        ]
    return "".join(f"{name}\n{value}\n" for name, value in fields).encode()


def sns_host(region: str) -> str:
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"sns.{region}.{suffix}"


def require_sns_url(url: str, region: str, field: str) -> None:
    """An https URL on the SNS host of the message's own region: no other host, port,
    credentials or scheme, so a forged message cannot point us at a key of its choosing."""
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.netloc.lower() != sns_host(region):
        raise SnsRejected(401, field, f"must be an https URL on {sns_host(region)}")


class SigningCertificates:
    """SNS signing certificates by URL, fetched once and kept (a few at most)."""

    def __init__(self, fetch: CertificateFetcher, keep: int = 16) -> None:
        self._fetch = fetch
        self._keep = keep
        self._cache: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._fetching: dict[str, asyncio.Future[x509.Certificate]] = {}

    async def public_key(self, url: str) -> RSAPublicKey:
        certificate = self._cache.get(url)
        if certificate is None:
            certificate = await self._load(url)
        else:
            self._cache.move_to_end(url)
        now = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            self._cache.pop(url, None)
            raise SnsRejected(401, "SigningCertURL", "the signing certificate is not valid now")
        key = certificate.public_key()
        if not isinstance(key, RSAPublicKey):
            raise SnsRejected(401, "SigningCertURL", "the signing certificate has no RSA key")
        return key

    async def _load(self, url: str) -> x509.Certificate:
        # A burst of messages signed with a certificate not yet seen fetches it once.
        pending = self._fetching.get(url)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[x509.Certificate] = asyncio.get_running_loop().create_future()
        self._fetching[url] = future
        try:
            pem = await self._fetch(url)
            try:
                certificate = x509.load_pem_x509_certificate(pem)
            except ValueError:
                raise SnsRejected(
                    401, "SigningCertURL", "the signing certificate is not a PEM certificate"
                ) from None
            self._cache[url] = certificate
            while len(self._cache) > self._keep:
                self._cache.popitem(last=False)
            future.set_result(certificate)
            return certificate
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so a future nobody else awaits stays quiet
            raise
        finally:
            del self._fetching[url]


class SnsGateway:
    """Checks SNS messages and confirms subscriptions."""

    def __init__(self, certificates: SigningCertificates, confirm: SubscriptionConfirmer) -> None:
        self.certificates = certificates
        self._confirm = confirm

    async def verify(self, message: SnsMessage) -> None:
        require_sns_url(message.SigningCertURL, message.region, "SigningCertURL")
        if not urlsplit(message.SigningCertURL).path.endswith(".pem"):
            raise SnsRejected(401, "SigningCertURL", "must name a .pem certificate")
        try:
            signature = base64.b64decode(message.Signature, validate=True)
        except (binascii.Error, ValueError):
            raise SnsRejected(401, "Signature", "not base64") from None
        digest = hashes.SHA1() if message.SignatureVersion == "1" else hashes.SHA256()  # noqa: S303
        key = await self.certificates.public_key(message.SigningCertURL)
        try:
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), digest)
        except InvalidSignature:
            raise SnsRejected(401, "Signature", "the message signature does not verify") from None

    async def confirm(self, message: SnsMessage) -> None:
        """Visit the SubscribeURL of a verified confirmation, once it is shown to be SNS's
        own confirmation of this topic."""
        url = message.SubscribeURL or ""
        require_sns_url(url, message.region, "SubscribeURL")
        query = parse_qs(urlsplit(url).query)
        if query.get("Action") != ["ConfirmSubscription"] or query.get("TopicArn") != [
            message.TopicArn
        ]:
            raise SnsRejected(400, "SubscribeURL", "is not a confirmation of this topic")
        await self._confirm(url)


async def fetch_over_https(url: str) -> bytes:
    """The default certificate fetcher: TLS-verified, no redirects, a small body. SNS
    answering 4xx means there is no such certificate; anything else is worth a retry
    (httpx.HTTPError, answered 503)."""
    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as http:
        response = await http.get(url)
    if 400 <= response.status_code < 500 or response.is_redirect:
        raise SnsRejected(401, "SigningCertURL", f"SNS answered {response.status_code}")
    response.raise_for_status()
    if len(response.content) > MAX_CERTIFICATE_BYTES:
        raise SnsRejected(401, "SigningCertURL", "the signing certificate is too large")
    return response.content


async def confirm_over_https(url: str) -> None:
    """The default confirmer: a GET of the SubscribeURL, as AWS asks."""
    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as http:
        response = await http.get(url)
        response.raise_for_status()


def default_gateway() -> SnsGateway:
    return SnsGateway(SigningCertificates(fetch_over_https), confirm_over_https)
