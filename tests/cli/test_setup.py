"""`quench setup` on a Temporal of one's own: a namespace registered when missing, the
search attributes added, again changing nothing; one of another type refused, naming it."""

import uuid
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

from cli.serve import SetupError, ensure_namespace, ensure_search_attributes
from config import names
from config.temporal import search_attributes_wanting

# A namespace just registered reaches every frontend within this.
_A_MINUTE = timedelta(minutes=1)


async def test_a_new_namespace_is_registered_and_given_every_search_attribute(
    dev_server_env, capsys
):
    client = dev_server_env.client
    namespace = f"quench-{uuid.uuid4().hex[:8]}"
    await ensure_namespace(client, namespace, retention_days=7)
    await ensure_search_attributes(client, namespace)
    first = capsys.readouterr().out
    assert f"namespace {namespace}: registered, histories kept 7 days" in first
    assert first.count(": added") == len(names.SEARCH_ATTRIBUTES)
    assert await search_attributes_wanting(client, namespace) == ([], [])

    # Again: nothing to do, and it says so.
    await ensure_namespace(client, namespace, retention_days=7)
    await ensure_search_attributes(client, namespace)
    again = capsys.readouterr().out
    assert f"namespace {namespace}: exists" in again
    assert again.count(": exists") == len(names.SEARCH_ATTRIBUTES) + 1


async def test_a_search_attribute_of_another_type_is_refused_and_left_alone(dev_server_env):
    client = dev_server_env.client
    namespace = f"quench-{uuid.uuid4().hex[:8]}"
    await ensure_namespace(client, namespace, retention_days=1)
    missing, _ = await search_attributes_wanting(client, namespace, wait=_A_MINUTE)
    assert len(missing) == len(names.SEARCH_ATTRIBUTES)
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace,
            search_attributes={names.SA_PHASE.name: IndexedValueType.INDEXED_VALUE_TYPE_INT},
        )
    )
    with pytest.raises(SetupError, match="QuenchPhase is Int, Quench needs Keyword"):
        await ensure_search_attributes(client, namespace)
    # Nothing was added beside it: the namespace is left for a person to fix.
    missing, clashes = await search_attributes_wanting(client, namespace)
    assert len(missing) == len(names.SEARCH_ATTRIBUTES) - 1
    assert clashes == ["QuenchPhase is Int, Quench needs Keyword"]
