import pytest

from stack.embedded import EmbeddedStack, StackConfig
from stack.processes import free_port


@pytest.fixture(scope="session")
def lab_stack(tmp_path_factory):
    """The real stack: Temporal dev server, lab AWS (moto server), worker, webhook."""
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("quench-state"),
        temporal_port=free_port(),
        ui_port=free_port(),
        lab_aws_port=free_port(),
        webhook_port=free_port(),
        lab=True,
        # A short containment watch, so the case closes within the test (long enough for
        # the attacker's second try to land in it).
        extra_env={
            "QUENCH_WATCH_SECONDS": "12",
            "QUENCH_CHECK_EVERY_SECONDS": "3",
            "QUENCH_DELIVERY_LAG_SECONDS": "0",
        },
    )
    stack = EmbeddedStack(config)
    stack.start()
    yield stack
    stack.stop()
