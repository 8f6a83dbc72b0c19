import pytest

from stack.embedded import EmbeddedStack
from tests.e2e.support import lab_stack_config


@pytest.fixture(scope="session")
def lab_stack(tmp_path_factory):
    """The real stack: Temporal dev server, lab AWS (moto server), worker, webhook."""
    config = lab_stack_config(tmp_path_factory.mktemp("quench-state"))
    stack = EmbeddedStack(config)
    stack.start()
    yield stack
    stack.stop()
