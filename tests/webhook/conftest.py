import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest_asyncio
from temporalio.client import Client
from temporalio.worker import Worker

from config.settings import Settings
from tests.support import ACCOUNT
from webhook.app import app
from webhook.sns import SigningCertificates, SnsGateway, SnsRejected
from worker import WORKFLOWS

TOKEN = "a-real-webhook-secret-0123456789"
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:guardduty-findings"


@dataclass
class FakeSns:
    """What the SNS gateway would fetch and visit, recorded: certificates by URL, and the
    SubscribeURLs it confirmed."""

    certificates: dict[str, bytes] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)
    unreachable: bool = False

    async def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if self.unreachable:
            raise httpx.ConnectError("no route to SNS")
        if url not in self.certificates:
            # What the real fetcher makes of SNS's 404 for a certificate it does not have.
            raise SnsRejected(401, "SigningCertURL", "SNS answered 404")
        return self.certificates[url]

    async def confirm(self, url: str) -> None:
        self.confirmed.append(url)

    def gateway(self) -> SnsGateway:
        return SnsGateway(SigningCertificates(self.fetch), self.confirm)


@dataclass
class Webhook:
    http: httpx.AsyncClient
    client: Client
    queue: str
    sns: FakeSns

    def configure(self, **settings: Any) -> Settings:
        """The app's settings for this test: a real key, this test's task queue, the test
        topic allowed, and whatever the test changes."""
        values: dict[str, Any] = {
            "webhook_token": TOKEN,
            "account_id": ACCOUNT,
            "task_queue": self.queue,
            "scan_task_queue": self.queue,
            "sns_topic_arns": [TOPIC_ARN],
        }
        values.update(settings)
        app.state.settings = Settings(**values)
        return app.state.settings


@pytest_asyncio.fixture
async def webhook(dev_server_env) -> AsyncIterator[Webhook]:
    """The app on an in-process transport, talking to the dev server, with a worker that
    runs case workflows (it has no activities: a case opens, answers its updates and waits
    for its first activity, as the webhook left it)."""
    queue = f"webhook-{uuid.uuid4()}"
    sns = FakeSns()
    app.state.client = dev_server_env.client
    app.state.sns = sns.gateway()
    hook = Webhook(http=None, client=dev_server_env.client, queue=queue, sns=sns)  # type: ignore[arg-type]
    hook.configure()
    transport = httpx.ASGITransport(app=app)
    async with (
        Worker(dev_server_env.client, task_queue=queue, workflows=WORKFLOWS),
        httpx.AsyncClient(transport=transport, base_url="http://quench") as http,
    ):
        hook.http = http
        yield hook
