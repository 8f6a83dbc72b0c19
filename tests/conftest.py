import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from stack.binaries import temporal_test_server
from tests.support import register_search_attributes


@pytest_asyncio.fixture(scope="session")
async def time_skipping_env():
    """One time-skipping test server for the session; timers run in test time."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(temporal_test_server()),
    )
    await register_search_attributes(env.client)
    yield env
    await env.shutdown()
