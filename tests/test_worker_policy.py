"""The worker's IAM policy (docs/worker-iam-policy.json) against the code, not against AWS:
moto does not enforce IAM, so this is what keeps the policy and the calls in step.

Every AWS call in the worker's modules (a client method called or handed on, a paginator, a
getattr on a client) is found with `ast` and mapped to the IAM actions it needs: the policy
must allow each one, and grant nothing that no call needs.
"""

import ast
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from activities.permissions import ACTIONS, actions_of

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "docs" / "worker-iam-policy.json"
# The role Quench assumes in each member account: what the activities do there.
MEMBER_POLICY = ROOT / "docs" / "member-role-policy.json"
MEMBER_TRUST = ROOT / "docs" / "member-role-trust-policy.json"
# The role Quench assumes in the organisation's policy account, for the quarantine.
QUARANTINE_POLICY = ROOT / "docs" / "quarantine-role-policy.json"
QUARANTINE_MODULES = {"activities/organizations.py"}
# Modules whose calls are made with Quench's own credentials in the security account:
# evidence, notifications, the Athena table, and the assumption of member roles itself.
CENTRAL_MODULES = {
    "activities/evidence.py",
    "activities/notify.py",
    "activities/athena.py",
    "activities/accounts.py",
    *QUARANTINE_MODULES,
}
README = ROOT / "README.md"

# The places a client is made for a service named by a variable: the factories themselves.
FACTORIES = {
    ("activities.aws", "AwsClients", "client"),
    ("activities.accounts", "AccountClients", "client"),
}
# Attributes of a client that are no AWS call.
NOT_CALLS = {"exceptions", "meta", "can_paginate"}

FuncKey = tuple[str, str | None, str]  # module, class, function
ModuleSources = dict[str, tuple[str, str]]  # module -> (path, source)


@dataclass(frozen=True)
class AwsCall:
    path: str
    line: int
    service: str
    method: str  # boto3's name: list_objects_v2

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Found:
    calls: set[AwsCall] = field(default_factory=set)
    errors: set[str] = field(default_factory=set)


@cache
def operations(service: str) -> dict[str, str]:
    """boto3's method names of a service's operations, each with the operation's name."""
    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


def actions_for(service: str, method: str) -> frozenset[str] | None:
    """The IAM actions a call by boto3's method name needs (None: unknown)."""
    if (service, method) in ACTIONS:
        return ACTIONS[(service, method)]
    operation = operations(service).get(method)
    return None if operation is None else actions_of(service, operation)


# -- finding the calls ---------------------------------------------------------------


def worker_modules() -> ModuleSources:
    """The project's modules the worker imports, directly or not, and all of activities/."""
    found: ModuleSources = {}
    todo = ["worker"] + [f"activities.{p.stem}" for p in (ROOT / "activities").glob("*.py")]
    while todo:
        name = todo.pop()
        base = ROOT.joinpath(*name.split("."))
        path = next(
            (p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None
        )
        if name in found or path is None:
            continue
        source = path.read_text()
        found[name] = (path.relative_to(ROOT).as_posix(), source)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return found


def own_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function or module body, without those of the functions and classes
    defined in it (lambdas are part of it)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        yield child
        yield from own_nodes(child)


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


@dataclass
class _Context:
    module: str
    path: str
    cls: str | None
    key: FuncKey
    node: ast.AST
    scope: dict[str, str] = field(default_factory=dict)  # local name -> service


class CallFinder:
    """Which expressions are boto3 clients, and of which service: a `.client("<service>")`
    call, a name assigned one, a parameter some call site passes one, `self.x` assigned one,
    and a property or function that returns one."""

    def __init__(self, modules: ModuleSources) -> None:
        self.found = Found()
        self.functions: dict[FuncKey, _Context] = {}
        self.properties: set[FuncKey] = set()
        self.imports: dict[str, dict[str, FuncKey]] = {}
        self.returns: dict[FuncKey, str] = {}
        self.params: dict[FuncKey, dict[str, str]] = {}
        self.attributes: dict[tuple[str, str | None, str], str] = {}
        self.services: set[str] = set()
        self.traced: set[int] = set()  # the nodes found to be AWS calls
        for module, (path, source) in modules.items():
            tree = ast.parse(source)
            self.imports[module] = {
                alias.asname or alias.name: (node.module, None, alias.name)
                for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module
                for alias in node.names
            }
            self.functions[(module, None, "<module>")] = _Context(
                module, path, None, (module, None, "<module>"), tree
            )
            for top in tree.body:
                defs: list[tuple[str | None, ast.stmt]] = [(None, top)]
                if isinstance(top, ast.ClassDef):
                    defs = [(top.name, item) for item in top.body]
                for cls, item in defs:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        key = (module, cls, item.name)
                        self.functions[key] = _Context(module, path, cls, key, item)
                        if any(
                            _name_of(d) in {"property", "cached_property"}
                            for d in item.decorator_list
                        ):
                            self.properties.add(key)
        self._resolve()
        self._collect()

    # A client flows through assignments, arguments and returns: resolved to a fixpoint.
    def _resolve(self) -> None:
        while True:
            before = (dict(self.returns), repr(self.params), dict(self.attributes))
            for ctx in self.functions.values():
                ctx.scope = dict(self.params.get(ctx.key, {}))
                while True:  # until a chain of local names is followed to its end
                    scope = dict(ctx.scope)
                    for node in own_nodes(ctx.node):
                        self._bind(node, ctx)
                    if scope == ctx.scope:
                        break
                for node in own_nodes(ctx.node):
                    if isinstance(node, ast.Return) and node.value is not None:
                        if service := self.service_of(node.value, ctx):
                            self.returns[ctx.key] = service
                    if isinstance(node, ast.Call):
                        self._bind_arguments(node, ctx)
            if before == (dict(self.returns), repr(self.params), dict(self.attributes)):
                return

    def _bind(self, node: ast.AST, ctx: _Context) -> None:
        pairs: list[tuple[ast.expr, ast.expr]] = []
        if isinstance(node, ast.Assign):
            pairs = [(target, node.value) for target in node.targets]
        elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and node.value is not None:
            pairs = [(node.target, node.value)]
        while pairs:
            target, value = pairs.pop()
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                pairs += zip(target.elts, value.elts, strict=False)
            elif service := self.service_of(value, ctx):
                if isinstance(target, ast.Name):
                    ctx.scope[target.id] = service
                elif isinstance(target, ast.Attribute) and _is_self(target.value):
                    self.attributes[(ctx.module, ctx.cls, target.attr)] = service

    def _callee(self, call: ast.Call, ctx: _Context) -> FuncKey | None:
        func = call.func
        if isinstance(func, ast.Attribute) and _is_self(func.value):
            key: FuncKey = (ctx.module, ctx.cls, func.attr)
            return key if key in self.functions else None
        if isinstance(func, ast.Name):
            local: FuncKey = (ctx.module, None, func.id)
            if local in self.functions:
                return local
            imported = self.imports[ctx.module].get(func.id)
            return imported if imported in self.functions else None
        return None

    def _bind_arguments(self, call: ast.Call, ctx: _Context) -> None:
        callee = self._callee(call, ctx)
        if callee is None:
            return
        definition = self.functions[callee].node
        assert isinstance(definition, ast.FunctionDef | ast.AsyncFunctionDef)
        names = [a.arg for a in definition.args.posonlyargs + definition.args.args]
        if callee[1] is not None:
            names = names[1:]  # self
        passed = list(zip(names, call.args, strict=False))
        passed += [(kw.arg, kw.value) for kw in call.keywords if kw.arg]
        for name, value in passed:
            if service := self.service_of(value, ctx):
                self.params.setdefault(callee, {})[name] = service

    def service_of(self, expr: ast.AST, ctx: _Context) -> str | None:
        """The service of the client `expr` evaluates to, or None if it is no client."""
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
            if expr.func.attr == "client":
                return self._client_service(expr, ctx)
            if expr.func.attr == "resource":
                self.found.errors.add(
                    f"{ctx.path}:{expr.lineno}: a boto3 resource; the test maps client calls only"
                )
        if isinstance(expr, ast.Call):
            callee = self._callee(expr, ctx)
            return self.returns.get(callee) if callee and callee not in self.properties else None
        if isinstance(expr, ast.Name):
            return ctx.scope.get(expr.id)
        if isinstance(expr, ast.Attribute) and _is_self(expr.value):
            prop: FuncKey = (ctx.module, ctx.cls, expr.attr)
            if prop in self.properties:
                return self.returns.get(prop)
            return self.attributes.get((ctx.module, ctx.cls, expr.attr))
        return None

    def _client_service(self, call: ast.Call, ctx: _Context) -> str | None:
        first = call.args[0] if call.args else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            self.services.add(first.value)
            return first.value
        if ctx.key not in FACTORIES:
            self.found.errors.add(
                f"{ctx.path}:{call.lineno}: a client whose service is not written as a string"
            )
        return None

    # -- the calls -------------------------------------------------------------------

    def _collect(self) -> None:
        for ctx in self.functions.values():
            for node in own_nodes(ctx.node):
                if isinstance(node, ast.Call):
                    self._collect_named(node, ctx)
                if isinstance(node, ast.Attribute) and node.attr not in NOT_CALLS:
                    service = self.service_of(node.value, ctx)
                    if service is not None and node.attr != "get_paginator":
                        self._add(ctx, node, service, node.attr)
        # Anywhere in a module (a nested function, a class body...): what looks like an AWS
        # call and was not traced to a client fails, rather than going unmapped.
        known = {op for service in self.services for op in operations(service)}
        for ctx in self.functions.values():
            if ctx.key[2] != "<module>":
                continue
            for node in ast.walk(ctx.node):
                if id(node) in self.traced:
                    continue
                if isinstance(node, ast.Call) and _name_of(node.func) == "getattr":
                    named = node.args[1] if len(node.args) > 1 else None
                    names = set(_strings(named, ctx.node) or [])
                    if isinstance(named, ast.JoinedStr) or names & known:
                        self._untraced(ctx, node, "getattr", node.args[0])
                elif isinstance(node, ast.Attribute) and node.attr in known | {"get_paginator"}:
                    self._untraced(ctx, node, f".{node.attr}", node.value)

    def _untraced(self, ctx: _Context, node: ast.expr, what: str, receiver: ast.expr) -> None:
        self.found.errors.add(
            f"{ctx.path}:{node.lineno}: {what} looks like an AWS call, on "
            f"{ast.unparse(receiver)}, which the test cannot trace to a client"
        )

    def _collect_named(self, call: ast.Call, ctx: _Context) -> None:
        """A paginator, or a getattr on a client: the operation is named by a string."""
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "get_paginator" and call.args:
            receiver, named = func.value, call.args[0]
        elif isinstance(func, ast.Name) and func.id == "getattr" and len(call.args) > 1:
            receiver, named = call.args[0], call.args[1]
        else:
            return
        service = self.service_of(receiver, ctx)
        if service is None:
            return
        self.traced.add(id(call))
        self.traced.add(id(func))
        names = _strings(named, ctx.node)
        if names is None:
            self.found.errors.add(
                f"{ctx.path}:{call.lineno}: cannot tell which {service} operation "
                f"{ast.unparse(named)} names"
            )
        for name in names or []:
            self._add(ctx, call, service, name)

    def _add(self, ctx: _Context, node: ast.expr, service: str, method: str) -> None:
        self.traced.add(id(node))
        self.found.calls.add(AwsCall(ctx.path, node.lineno, service, method))


def _name_of(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _strings(expr: ast.expr | None, function: ast.AST) -> list[str] | None:
    """Every value a string expression can have: a literal, or an f-string over parameters
    typed Literal["a", "b"]; None when it could be anything."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [expr.value]
    if not isinstance(expr, ast.JoinedStr):
        return None
    parts: list[list[str]] = []
    for value in expr.values:
        if isinstance(value, ast.Constant):
            parts.append([str(value.value)])
        elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name):
            options = _literal_parameter(function, value.value.id)
            if options is None:
                return None
            parts.append(options)
        else:
            return None
    return ["".join(combination) for combination in itertools.product(*parts)]


def _literal_parameter(function: ast.AST, name: str) -> list[str] | None:
    if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    for arg in function.args.posonlyargs + function.args.args + function.args.kwonlyargs:
        note = arg.annotation
        if arg.arg == name and isinstance(note, ast.Subscript):
            if _name_of(note.value) != "Literal":
                return None
            items = note.slice.elts if isinstance(note.slice, ast.Tuple) else [note.slice]
            if all(isinstance(i, ast.Constant) and isinstance(i.value, str) for i in items):
                return [str(i.value) for i in items if isinstance(i, ast.Constant)]
    return None


def find_aws_calls(modules: ModuleSources) -> Found:
    return CallFinder(modules).found


def unknown_calls(found: Found) -> list[str]:
    problems = sorted(found.errors)
    for call in sorted(found.calls, key=lambda c: (c.path, c.line, c.method)):
        if call.method not in operations(call.service):
            problems.append(f"{call.where}: {call.service}.{call.method} is no AWS operation")
        elif actions_for(call.service, call.method) is None:
            problems.append(
                f"{call.where}: {call.service}.{call.method} has no IAM action: add it to "
                "ACTIONS in tests/test_worker_policy.py"
            )
    return problems


# -- the policy ----------------------------------------------------------------------


def load_policy(path: Path = POLICY) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def in_member_accounts(found: Found) -> Found:
    """The calls made in the case's account, through the role Quench assumes there."""
    return Found(calls={c for c in found.calls if c.path not in CENTRAL_MODULES})


def by_the_worker(found: Found) -> Found:
    """The calls the worker's own identity makes: all but the quarantine's."""
    return Found(calls={c for c in found.calls if c.path not in QUARANTINE_MODULES})


def for_the_quarantine(found: Found) -> Found:
    return Found(calls={c for c in found.calls if c.path in QUARANTINE_MODULES})


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value)


def granted(policy: dict[str, Any]) -> list[str]:
    return [a for s in policy["Statement"] for a in _as_list(s["Action"])]


def allows(pattern: str, action: str) -> bool:
    """IAM's match of an Action entry: case-insensitive, `*` and `?` as wildcards."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, action, re.IGNORECASE) is not None


def needed(found: Found) -> dict[str, list[AwsCall]]:
    """Each action the calls need, with the calls that need it."""
    by_action: dict[str, list[AwsCall]] = {}
    for call in found.calls:
        for action in actions_for(call.service, call.method) or ():
            by_action.setdefault(action, []).append(call)
    return by_action


def not_allowed(found: Found, grants: list[str]) -> list[str]:
    return sorted(
        f"{call.where}: {call.service}.{call.method} needs {action}"
        for action, calls in needed(found).items()
        if not any(allows(g, action) for g in grants)
        for call in calls
    )


def not_needed(found: Found, grants: list[str]) -> list[str]:
    """Grants no call needs. A wildcard is refused outright: what it reaches beyond the
    calls cannot be checked here, and least privilege names each action."""
    wanted = needed(found)
    return sorted(
        grant
        for grant in grants
        if "*" in grant or "?" in grant or not any(allows(grant, a) for a in wanted)
    )


# -- the tests -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker_calls() -> Found:
    return find_aws_calls(worker_modules())


def test_every_aws_call_of_the_worker_is_found_and_known(worker_calls):
    assert unknown_calls(worker_calls) == []
    # One call reached by each way a client travels, so a finder that lost one would fail.
    reached = {(c.service, c.method) for c in worker_calls.calls}
    assert {
        ("s3", "put_object"),  # clients.client("s3") called in place
        ("s3", "list_objects_v2"),  # a paginator
        ("iam", "list_user_policies"),  # a paginator named by an f-string over a Literal
        ("iam", "get_role_policy"),  # getattr on a client passed as an argument
        ("iam", "delete_service_specific_credential"),  # a bound method given to partial
        ("iam", "update_access_key"),  # a property returning the client
        ("ssm", "get_command_invocation"),  # a client passed to a method
        ("glue", "get_table"),  # a method returning the client
        ("cloudtrail", "get_trail_status"),  # a regional client in a local name
        ("sns", "publish"),
    } <= reached


def test_the_policy_allows_every_call(worker_calls):
    assert not_allowed(by_the_worker(worker_calls), granted(load_policy())) == []


def test_the_policy_grants_nothing_no_call_needs(worker_calls):
    assert not_needed(by_the_worker(worker_calls), granted(load_policy())) == []


def test_the_quarantine_role_policy_allows_the_quarantine_and_no_more(worker_calls):
    quarantine = for_the_quarantine(worker_calls)
    assert quarantine.calls, "found no call of the quarantine"
    grants = granted(load_policy(QUARANTINE_POLICY))
    assert not_allowed(quarantine, grants) == []
    assert not_needed(quarantine, grants) == []


def test_the_member_role_policy_allows_what_is_done_in_a_member_account_and_no_more(
    worker_calls,
):
    member = in_member_accounts(worker_calls)
    grants = granted(load_policy(MEMBER_POLICY))
    assert not_allowed(member, grants) == []
    assert not_needed(member, grants) == []
    # Evidence, notifications and the assumption itself stay with the worker's own role.
    assert not any(allows(g, a) for g in grants for a in ("s3:PutObject", "sts:AssumeRole"))


def test_the_member_role_trusts_the_worker_with_its_external_id_and_source_identity():
    (statement,) = load_policy(MEMBER_TRUST)["Statement"]
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:SetSourceIdentity"]
    assert statement["Principal"]["AWS"].endswith(":role/<worker-role-name>")
    assert statement["Condition"]["StringEquals"]["sts:ExternalId"] == "<external-id>"


@pytest.mark.parametrize("path", [POLICY, MEMBER_POLICY, QUARANTINE_POLICY])
def test_the_policy_is_an_allow_list_grouped_by_purpose(path):
    policy = load_policy(path)
    assert policy["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in policy["Statement"]]
    assert len(sids) == len(set(sids))
    for statement in policy["Statement"]:
        assert re.fullmatch(r"[A-Za-z0-9]+", statement["Sid"])
        assert statement["Effect"] == "Allow"
        assert {"Action", "Resource"} <= set(statement), statement["Sid"]
        assert not {"NotAction", "NotResource", "Principal"} & set(statement), statement["Sid"]
        # Only what the optional features need goes in the statements marked optional.
        optional_only = {a.split(":")[0] for a in _as_list(statement["Action"])} & {
            "athena",
            "glue",
            "sns",
        }
        assert not optional_only or statement["Sid"].startswith("Optional"), statement["Sid"]


@pytest.mark.parametrize(
    ("paths", "heading"),
    [
        ((POLICY,), "### AWS permissions for the worker"),
        ((MEMBER_POLICY, MEMBER_TRUST), "### The role in each member account"),
        ((QUARANTINE_POLICY,), "### Quarantine the attacker cannot lift"),
    ],
)
def test_the_readme_explains_every_placeholder(paths, heading):
    placeholders = {p for path in paths for p in re.findall(r"<[a-z0-9-]+>", path.read_text())}
    assert placeholders
    section = README.read_text().split(heading, 1)[1]
    section = re.split(r"\n#+ ", section, maxsplit=1)[0]
    assert {p for p in placeholders if f"`{p}`" not in section} == set()


def test_the_table_names_real_operations():
    assert [key for key in ACTIONS if key[1] not in operations(key[0])] == []


# A module as someone might add it: a new client, a call outside the table, a helper
# handed the client, and a client the finder cannot trace.
NEW_MODULE = """
class Keys:
    def __init__(self, clients, store):
        self._clients = clients
        self._store = store
        self._kms = clients.client("kms")

    def rotate(self, user):
        iam = self._clients.client("iam")
        _delete(iam, user)
        self._kms.schedule_key_deletion(KeyId="k")
        self._clients.client("s3").get_bucket_policy(Bucket="b")
        self._store.iam.delete_role(RoleName=user)


def _delete(client, user):
    client.create_access_key(UserName=user)

    def later():
        client.delete_user(UserName=user)
"""


def test_a_new_call_fails_the_test_naming_its_file_and_line():
    found = find_aws_calls({"activities.keys": ("activities/keys.py", NEW_MODULE)})
    grants = granted(load_policy())
    assert not_allowed(found, grants) == [
        "activities/keys.py:17: iam.create_access_key needs iam:CreateAccessKey"
    ]
    assert unknown_calls(found) == [
        "activities/keys.py:13: .delete_role looks like an AWS call, on self._store.iam, "
        "which the test cannot trace to a client",
        "activities/keys.py:20: .delete_user looks like an AWS call, on client, which the "
        "test cannot trace to a client",
        "activities/keys.py:11: kms.schedule_key_deletion has no IAM action: add it to "
        "ACTIONS in tests/test_worker_policy.py",
        "activities/keys.py:12: s3.get_bucket_policy has no IAM action: add it to "
        "ACTIONS in tests/test_worker_policy.py",
    ]


@pytest.mark.parametrize(
    ("pattern", "action", "allowed"),
    [
        ("iam:GetRole", "iam:GetRole", True),
        ("iam:getrole", "iam:GetRole", True),
        ("iam:Get*", "iam:GetRole", True),
        ("iam:Get?ole", "iam:GetRole", True),
        ("*", "s3:GetObject", True),
        ("iam:GetRole", "iam:GetRolePolicy", False),
        ("iam:Get*", "iam:ListRoles", False),
        ("s3:Get*", "iam:GetRole", False),
    ],
)
def test_a_grant_matches_as_iam_matches_it(pattern, action, allowed):
    assert allows(pattern, action) is allowed


def test_a_missing_grant_fails_and_so_does_an_extra_or_a_wildcard(worker_calls):
    worker_calls = by_the_worker(worker_calls)
    grants = granted(load_policy())
    missing = not_allowed(worker_calls, [g for g in grants if g != "ssm:SendCommand"])
    assert [m.split(": ", 1)[1] for m in missing] == ["ssm.send_command needs ssm:SendCommand"]
    assert not_needed(worker_calls, [*grants, "iam:CreateUser"]) == ["iam:CreateUser"]
    # A wildcard allows what it matches, yet grants more than any call needs.
    wildcard = [g for g in grants if not g.startswith("iam:Get")] + ["iam:Get*"]
    assert not_allowed(worker_calls, wildcard) == []
    assert not_needed(worker_calls, wildcard) == ["iam:Get*"]
