"""moto's state in memory as bytes that hold no secret, and back: every service's backends
(the lab's additions to moto live inside them), in one pickle so that what two services
share (an instance's profile is IAM's object) is still shared once loaded.

Secrets are found by the name of the field that holds them, as moto and the lab name them,
and written as a reference that loads as the recording's placeholder: the console password
reads back as a full replay has it (the recording keeps the password scrubbed), and access
keys, session tokens and service passwords read back scrubbed, where a full replay would
draw them again. moto verifies no signature, so every key still works. What an instance's
scripts printed (moto keeps SSM commands' output) is kept without its role's credentials.
S3 objects are kept as the recording keeps them: byte for byte, unless they hold a secret
field.
"""

import collections
import copyreg
import functools
import importlib
import io
import json
import pickle
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from activities.redaction import REDACTED
from lab import id_streams
from lab.scrubbing import SCRUBBED, scrub_s3_content

# Fields (normalised: no "_" or "-", lower case) that hold a secret in moto's objects and
# the lab's: IAM's AccessKey, User (its console password) and SigningCertificate, STS's
# AssumedRole, the lab's service-specific credentials. Not "token" alone: moto's
# ClientTokens are idempotency tokens that a resumed world must keep.
_SECRET_FIELDS = frozenset(
    {
        "secretaccesskey",
        "sessiontoken",
        "password",
        "newpassword",
        "oldpassword",
        "servicepassword",
        "privatekey",
        "keymaterial",
        "secretstring",
        "secretbinary",
    }
)
# A private key is a secret whatever holds it (an EC2 key pair's "material").
_PRIVATE_KEY = "PRIVATE KEY-----"
# What the lab writes where a secret was: not a secret.
_PLACEHOLDERS = frozenset({SCRUBBED, REDACTED})
_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())


class StateNotCaptured(Exception):
    """moto's state holds something this module cannot write without a secret, or at all."""


def _is_secret_field(name: Any) -> bool:
    return (
        isinstance(name, str) and name.replace("_", "").replace("-", "").lower() in _SECRET_FIELDS
    )


def _defaultdict_of_dicts() -> collections.defaultdict[Any, dict[Any, Any]]:
    return collections.defaultdict(dict)


def _picklable_factory(factory: Callable[[], Any] | None) -> Callable[[], Any] | None:
    """A default factory that pickles, doing what `factory` does. moto makes some of its
    defaultdicts with a lambda (SSM's tags, Lambda's aliases); each makes an empty dict or
    an empty defaultdict of dicts."""
    if factory is None or "<locals>" not in getattr(factory, "__qualname__", ""):
        return factory
    made = factory()
    if type(made) is dict and not made:
        return dict
    if type(made) is list and not made:
        return list
    if type(made) is collections.defaultdict and made.default_factory is dict and not made:
        return _defaultdict_of_dicts
    raise StateNotCaptured(f"moto keeps a defaultdict of {factory.__qualname__}")


def _empty_mapping(kind: type[dict[Any, Any]], factory: Callable[[], Any] | None) -> dict[Any, Any]:
    mapping = kind.__new__(kind)
    if factory is not None:
        mapping.default_factory = factory  # type: ignore[attr-defined]
    return mapping


def _fill_mapping(
    mapping: dict[Any, Any], state: tuple[dict[str, Any] | None, list[tuple[Any, Any]]]
) -> None:
    attributes, items = state
    if attributes:
        vars(mapping).update(attributes)
    dict.update(mapping, items)


# AWS's managed policies are most of moto's state: moto makes all 1,595 in every IAM
# backend, and a backend for each account in each of six partitions. One still as moto made
# it is written as its name, account, id and attachment count, and made again from moto's
# data when loaded: after `make demo`'s cases, 16 MB to write instead of 161 MB.
_AWS_POLICY_OWN = frozenset({"account_id", "id", "attachment_count", "versions"})


@functools.cache
def _aws_policy_data() -> dict[str, Any]:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    data: dict[str, Any] = json.loads(aws_managed_policies_data)
    return data


@functools.cache
def _aws_policy_as_made(partition: str, name: str) -> Any:
    """The AWS managed policy `name` as moto makes it in `partition`, but for its own
    fields; its id is drawn from a stream no request uses."""
    from moto.iam.models import AWSManagedPolicy

    with id_streams.named("checkpoint/aws-managed-policies"):
        return AWSManagedPolicy.from_data(name, "", partition, _aws_policy_data()[name])


def _as_made(policy: Any) -> tuple[str, str, str, str, int] | None:
    """How to make an AWS managed policy again (partition, name, account, id, attachment
    count), if nothing but those changed since moto made it."""
    if policy.name not in _aws_policy_data():
        return None
    made = _aws_policy_as_made(policy.partition, policy.name)
    mine, theirs = vars(policy), vars(made)
    if mine.keys() != theirs.keys() or any(
        mine[field] != theirs[field] for field in mine if field not in _AWS_POLICY_OWN
    ):
        return None
    versions = mine["versions"]
    if len(versions) != 1 or vars(versions[0]) != vars(made.versions[0]):
        return None
    return policy.partition, policy.name, policy.account_id, policy.id, policy.attachment_count


def _aws_policy(
    partition: str, name: str, account_id: str, policy_id: str, attachment_count: int
) -> Any:
    made = _aws_policy_as_made(partition, name)
    policy = _fresh_copy(made)
    policy.versions = [_fresh_copy(version) for version in made.versions]
    policy.account_id = account_id
    policy.id = policy_id
    policy.attachment_count = attachment_count
    return policy


def _fresh_copy(made: Any) -> Any:
    """A copy of `made` that shares none of its dicts and lists (its tags)."""
    copied = object.__new__(type(made))
    copied.__dict__ = {
        field: value.copy() if type(value) in (dict, list) else value
        for field, value in vars(made).items()
    }
    return copied


def _registry() -> dict[int, tuple[str, ...]]:
    """Where each of moto's live registries of backends is imported from, by object:
    (module, attribute) for a service's, and the account's id for an account's."""
    from moto.core.base_backend import BackendDict

    in_use = {id(backends): backends for backends in BackendDict._instances}  # type: ignore[misc]
    places: dict[int, tuple[str, ...]] = {}
    for module_name in sorted(sys.modules, key=lambda name: (len(name), name)):
        if not module_name.startswith("moto."):
            continue
        for attribute, value in list(vars(sys.modules[module_name]).items()):
            if id(value) in in_use and id(value) not in places:
                places[id(value)] = ("backends", module_name, attribute)
    for key, backends in in_use.items():
        if key not in places:
            raise StateNotCaptured(f"moto's {backends.service_name} backends have no module")
        for account_id, account in backends.items():
            places[id(account)] = ("account", *places[key][1:], account_id)
    return places


class _Pickler(pickle.Pickler):
    """Pickles moto's objects: their locks as new ones, what moto made unpicklable in a
    form that pickles, and secrets as a reference.

    A secret is recognised by the field that holds it, when the dict of that field is
    written; the string itself comes after, and is written as a reference. Secrets that
    moto keeps inside text are named up front (`in_text`): an instance's role credentials,
    which its scripts can print, and moto keeps what SSM commands printed. A secret string
    reached first from a field of another name would already be written as it is: every
    string written as it is is remembered by hash, and the state is refused if a
    secret is among them."""

    def __init__(
        self, file: io.BytesIO, registry: dict[int, tuple[str, ...]], in_text: set[str]
    ) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._registry = registry
        self._in_text = tuple(in_text - _PLACEHOLDERS - {""})
        self._shortest_in_text = min((len(s) for s in self._in_text), default=0)
        self.secrets: set[str] = set(self._in_text)
        self._written: set[int] = set()
        self._secret_field: dict[Any, bool] = {}  # by dict key: most keys recur
        from moto.iam.models import AWSManagedPolicy
        from moto.s3.models import FakeKey

        self._s3_object = FakeKey
        self._aws_policy = AWSManagedPolicy

    def persistent_id(self, obj: Any) -> Any:  # called for every object written
        kind = type(obj)
        if kind is str:
            if obj in self.secrets or _PRIVATE_KEY in obj:
                return ("secret",)
            if len(obj) > self._shortest_in_text and any(s in obj for s in self._in_text):
                for held in self._in_text:
                    obj = obj.replace(held, SCRUBBED)
                return ("text", obj)
            self._written.add(hash(obj))
            return None
        if isinstance(obj, dict):
            for name in obj:
                named = self._secret_field.get(name)
                if named is None:
                    named = self._secret_field[name] = _is_secret_field(name)
                value = obj[name]
                if named and type(value) is str and value and value not in _PLACEHOLDERS:
                    self.secrets.add(value)
            return None
        return self._registry.get(id(obj))

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is self._aws_policy:
            as_made = _as_made(obj)
            return NotImplemented if as_made is None else (_aws_policy, as_made)
        if kind is _LOCK:
            return threading.Lock, ()
        if kind is _RLOCK:
            return threading.RLock, ()
        if kind is weakref.WeakValueDictionary:
            return weakref.WeakValueDictionary, (dict(obj.items()),)
        if (
            kind is not dict
            and isinstance(obj, dict)
            and not isinstance(obj, collections.OrderedDict)
        ):
            # A dict of moto's own kind, as it holds it: pickle's way would read it and
            # fill it through its own methods, and S3's store of versions reads and
            # fills the latest version only.
            default = getattr(obj, "default_factory", None)
            factory = _picklable_factory(default) if default is not None else None
            state = (getattr(obj, "__dict__", None), list(dict.items(obj)))
            return _empty_mapping, (kind, factory), state, None, None, _fill_mapping
        if kind is self._s3_object:
            return copyreg.__newobj__, (kind,), _s3_object_state(obj)  # type: ignore[attr-defined]
        return NotImplemented

    def leaked(self) -> bool:
        """Whether a secret was written as it is before the field naming it was seen."""
        return any(hash(secret) in self._written for secret in self.secrets)


def _s3_object_state(obj: Any) -> dict[str, Any]:
    """An S3 object as a full replay writes it: its content scrubbed as the recording
    scrubs it, and then without the digests the scrubbed request no longer carries."""
    state: dict[str, Any] = obj.__getstate__()
    content = state.get("value")
    if isinstance(content, bytes):
        scrubbed = scrub_s3_content(content)
        if scrubbed != content:
            state.update(value=scrubbed, _etag=None, checksum_value=None, checksum_algorithm=None)
    return state


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        match pid:
            case ("secret",):
                return SCRUBBED
            case ("text", text):
                return text
            case ("backends", module_name, attribute):
                return getattr(importlib.import_module(module_name), attribute)
            case ("account", module_name, attribute, account_id):
                return getattr(importlib.import_module(module_name), attribute)[account_id]
        raise pickle.UnpicklingError(f"unknown reference {pid!r}")


def dumps(
    value: Any,
    registry: dict[int, tuple[str, ...]] | None = None,
    in_text: set[str] | None = None,
) -> bytes:
    """`value` pickled without its secrets; the objects in `registry` as references, and
    the secrets `in_text` scrubbed from any text that holds them."""
    out = io.BytesIO()
    pickler = _Pickler(out, registry or {}, in_text or set())
    try:
        pickler.dump(value)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise StateNotCaptured(f"moto's state does not pickle: {exc}") from exc
    if pickler.leaked():
        raise StateNotCaptured("a secret was reached before the field that names it")
    return out.getvalue()


def loads(data: bytes) -> Any:
    """What `dumps` wrote, each secret the recording's placeholder."""
    return _Unpickler(io.BytesIO(data)).load()


def capture(lab: Any, in_text: set[str]) -> bytes:
    """moto's state and the lab's own (`lab`, already without secrets), as bytes; the
    secrets `in_text` are scrubbed from any text that holds them. Call it while no request
    is being answered."""
    from moto.core.base_backend import BackendDict

    registry = _registry()
    backends = {
        registry[id(service)][1:]: {
            account_id: dict(account.items()) for account_id, account in service.items()
        }
        for service in BackendDict._instances  # type: ignore[misc]
    }
    return dumps({"backends": backends, "lab": lab}, registry, in_text)


def restore(data: bytes) -> Any:
    """Put the state `capture` wrote into moto, which has no backend yet; the lab's own
    state is returned. Nothing is put in place unless all of it loads."""
    state = loads(data)
    services = [
        (getattr(importlib.import_module(module_name), attribute), accounts)
        for (module_name, attribute), accounts in state["backends"].items()
    ]
    for backends, accounts in services:
        for account_id, regions in accounts.items():
            account = backends[account_id]
            for region, backend in regions.items():
                dict.__setitem__(account, region, backend)
    return state["lab"]
