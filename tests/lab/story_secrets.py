"""The secrets a lab scenario makes or steals, caught as they pass through the test's own
process (the scenario runs there; they are kept in memory only), to look for on disk."""

from collections.abc import Iterator
from typing import Any

import pytest

from lab import attack as lab_attack
from lab.calls import Caller

# Where the attack's secrets are, by field name: its calls' parameters (a console
# password) and responses (a new key's secret), and the instance's credential document.
STORY_SECRET_FIELDS = frozenset(
    {"password", "newpassword", "secretaccesskey", "sessiontoken", "token"}
)


def _walk_secret_fields(value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key).replace("_", "").lower()
            if name in STORY_SECRET_FIELDS and isinstance(item, str) and item:
                yield name, item
            else:
                yield from _walk_secret_fields(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_secret_fields(item)


def capture_story_secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """The secrets the scenario makes or steals, by field name, as they pass through this
    process (the scenario runs here; they are kept in memory only)."""
    captured: dict[str, set[str]] = {}

    def keep(document: Any) -> None:
        for key, item in _walk_secret_fields(document):
            captured.setdefault(key, set()).add(item)

    steal = lab_attack.steal_instance_credentials

    def stealing(*args: Any, **kwargs: Any) -> dict[str, str]:
        stolen = steal(*args, **kwargs)
        keep(stolen)
        return stolen

    call = Caller.__call__

    def calling(self: Caller, service: str, operation: str, *args: Any, **params: Any) -> Any:
        keep(params)
        response = call(self, service, operation, *args, **params)
        keep(response)
        return response

    monkeypatch.setattr(lab_attack, "steal_instance_credentials", stealing)
    monkeypatch.setattr(Caller, "__call__", calling)
    return captured
