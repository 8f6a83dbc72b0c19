"""The compose stack and the image, checked against the code they must agree with.

Nothing here starts a container (no Docker engine runs the tests): the files are parsed,
compose's `${...}` interpolation is applied as compose applies it, and each service's
command and environment go through the code that reads them (`quench`'s own argument
parser, Settings), so a rename on one side cannot leave the deployment behind. The schema
script runs for real, against a stand-in for temporal-sql-tool.
"""

import argparse
import inspect
import json
import os
import re
import subprocess
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import starter
import worker
from codec.aesgcm import generate_key_entry
from codec.server import UI_PATH, generate_token
from config.names import SEARCH_ATTRIBUTES, search_attribute_type_name
from config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"

POSTGRESQL = "postgresql"
POSTGRES_PORT = 5432  # the postgres image's
SCHEMA = "temporal-schema"
TEMPORAL = "temporal"
TEMPORAL_GRPC_PORT = 7233  # the frontend's gRPC port, what SDK clients and the CLI dial
TEMPORAL_ADDRESS = f"{TEMPORAL}:{TEMPORAL_GRPC_PORT}"
UI = "temporal-ui"
UI_PORT = 8080  # the temporalio/ui image's
COLLECTOR = "otel-collector"
QUENCH = "quench"  # the console script the image installs
LOOPBACK = "127.0.0.1"
# The one port published beyond this host: findings arrive from EventBridge or SNS.
PUBLIC_SERVICES = {"webhook"}

# A value compose must find in the shell or `.env`, or refuse to start: ${NAME:?message}.
REQUIRED_FROM_ENVIRONMENT = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):\?[^}]+\}$")
SECRET_NAME = re.compile(r"PASSWORD|PWD|SECRET|TOKEN|PAYLOAD_KEYS")
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# Compose's interpolation: $$, $NAME, ${NAME}, ${NAME:-default}, ${NAME:?error}, ${NAME:+alt}
# (and the forms without the colon, which test set-ness rather than emptiness).
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<word>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)
# The OTLP exporter package that speaks each OTEL_EXPORTER_OTLP_PROTOCOL.
OTLP_EXPORTER_PACKAGES = {
    "http/protobuf": "opentelemetry-exporter-otlp-proto-http",
    "grpc": "opentelemetry-exporter-otlp-proto-grpc",
}
# Temporal's PostgreSQL visibility schema (schema/postgresql/v12/visibility/schema.sql)
# keeps custom search attributes in columns allocated in advance: this many of each type.
SQL_VISIBILITY_COLUMNS = {
    "Keyword": 10,
    "Int": 3,
    "Double": 3,
    "Bool": 3,
    "Datetime": 3,
    "Text": 3,
    "KeywordList": 3,
}


class MissingVariable(Exception):
    """A ${NAME:?message} with NAME unset: compose refuses to start."""


def interpolate(text: str, environment: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        value = environment.get(name)
        op, word = match["op"], match["word"]
        unset = (not value) if op and op.startswith(":") else value is None
        if op in {":-", "-"}:
            return word if unset else str(value)
        if op in {":?", "?"}:
            if unset:
                raise MissingVariable(f"{name}: {word}")
            return str(value)
        if op in {":+", "+"}:
            return "" if unset else word
        return value or ""

    return INTERPOLATION.sub(replace, text)


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text) -> dict[str, Any]:
    return yaml.safe_load(compose_text)


@pytest.fixture(scope="module")
def services(compose) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def environment() -> dict[str, str]:
    """What an operator's `.env` holds: the required settings, and the managed account."""
    key_id, key = generate_key_entry()
    return {
        "POSTGRES_PASSWORD": "a-database-password",
        "QUENCH_WEBHOOK_TOKEN": "a-webhook-token-of-32-characters",
        "QUENCH_EVIDENCE_BUCKET": "evidence-bucket",
        "QUENCH_CLOUDTRAIL_BUCKET": "cloudtrail-bucket",
        "QUENCH_PAYLOAD_KEYS": json.dumps({key_id: key}),
        "QUENCH_CODEC_TOKEN": generate_token(),
        "QUENCH_ACCOUNT_ID": "111122223333",
    }


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def env_of(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment, either syntax; None means passed through from the shell."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = [entry.split("=", 1) for entry in raw]
        return {pair[0]: (pair[1] if len(pair) == 2 else None) for pair in pairs}
    return {key: (None if value is None else str(value)) for key, value in raw.items()}


def container_environment(
    service: dict[str, Any], environment: Mapping[str, str]
) -> dict[str, str]:
    """The variables the container starts with, given the operator's environment."""
    resolved = {}
    for key, value in env_of(service).items():
        if value is None:
            if key in environment:
                resolved[key] = environment[key]
        else:
            resolved[key] = interpolate(value, environment)
    return resolved


def depends_on_of(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in raw.items()}


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port, either syntax."""
    published = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            host = (entry.get("host_ip", "0.0.0.0"), int(entry.get("published", 0)))  # noqa: S104
            published.append((*host, int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) == 1:  # a container port alone: any free host port, every address
            parts = ["0.0.0.0", "0", *parts]  # noqa: S104
        elif len(parts) == 2:
            parts = ["0.0.0.0", *parts]  # noqa: S104
        published.append((parts[0], int(parts[1]), int(parts[2])))
    return published


def bind_mounts(service: dict[str, Any]) -> dict[str, tuple[Path, bool]]:
    """Container path -> (file of this repository, read-only) for each bind mount."""
    mounts = {}
    for volume in service.get("volumes") or []:
        source, target, *options = volume.split(":")
        if source.startswith((".", "/")):
            mounts[target] = (ROOT / source, "ro" in options)
    return mounts


def text_of(value: Any) -> str:
    """A command or healthcheck test as one string, whichever form compose was given."""
    if isinstance(value, dict):
        value = value.get("test")
    if isinstance(value, list):
        return " ".join(str(part) for part in value)
    return str(value or "")


def image_tag(image: str) -> str | None:
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def parse_quench(command: list[str]) -> argparse.Namespace:
    """The command as the image's `quench` reads it; a failure if it would refuse it."""
    assert command[0] == QUENCH, f"{command} does not run {QUENCH}"
    try:
        return starter.parser(QUENCH).parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"`{' '.join(command)}` is not a command {QUENCH} accepts")


@pytest.fixture(scope="module")
def commands(services) -> dict[str, argparse.Namespace]:
    """Each service built from this repository, and the `quench` command it runs."""
    return {
        name: parse_quench(service["command"])
        for name, service in services.items()
        if "build" in service
    }


@pytest.fixture(scope="module")
def apps(services, commands) -> list[str]:
    """The long-running Quench services (the one-shot setup aside)."""
    return [name for name in commands if services[name].get("restart", "no") != "no"]


def running(commands: dict[str, argparse.Namespace], command: str) -> list[str]:
    return [name for name, args in commands.items() if args.command == command]


@pytest.fixture
def settings_of(services, environment, monkeypatch) -> Callable[..., Settings]:
    """The Settings a service starts with, from its compose environment alone."""

    def load(name: str, **overrides: str) -> Settings:
        for key in [key for key in os.environ if key.startswith("QUENCH_")]:
            monkeypatch.delenv(key)
        given = {**environment, **overrides}
        for key, value in container_environment(services[name], given).items():
            monkeypatch.setenv(key, value)
        return Settings(_env_file=None)

    return load


@pytest.fixture(scope="module")
def collector_config(services) -> dict[str, Any]:
    collector = services[COLLECTOR]
    (path,) = [arg.split("=", 1)[1] for arg in collector["command"] if arg.startswith("--config=")]
    source, read_only = bind_mounts(collector)[path]
    assert read_only, "the collector's config is mounted read-only"
    return yaml.safe_load(source.read_text())


# The order services start in.


def test_every_depends_on_target_exists_and_its_condition_can_be_met(services):
    for name, service in services.items():
        for target, condition in depends_on_of(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition in DEPENDS_ON_CONDITIONS, f"{name} -> {target}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                # A container restarted by policy never counts as completed.
                assert services[target].get("restart", "no") == "no", target


def test_temporal_starts_on_a_current_schema_and_quench_on_a_ready_temporal(services, commands):
    assert depends_on_of(services[SCHEMA]) == {POSTGRESQL: "service_healthy"}
    assert depends_on_of(services[TEMPORAL]) == {
        POSTGRESQL: "service_healthy",
        SCHEMA: "service_completed_successfully",
    }
    (setup,) = running(commands, "setup")
    assert depends_on_of(services[setup]) == {TEMPORAL: "service_healthy"}
    # Whatever talks to Temporal waits for the namespace and the search attributes.
    for name in running(commands, "worker") + running(commands, "webhook"):
        assert depends_on_of(services[name]).get(setup) == "service_completed_successfully", name


# Images.


def test_pulled_images_are_pinned(services):
    pulled = {name: s["image"] for name, s in services.items() if "build" not in s}
    assert set(pulled) == {POSTGRESQL, SCHEMA, TEMPORAL, UI, COLLECTOR}
    for name, image in pulled.items():
        tag = image_tag(image)
        assert tag, f"{name}: {image} has no tag"
        assert tag != "latest" and "$" not in tag, f"{name}: {image} is not pinned"
    assert re.fullmatch(r"postgres:\d+\.\d+(-[a-z0-9.]+)?", pulled[POSTGRESQL]), "major.minor"
    assert re.fullmatch(r"temporalio/server:1\.\d+\.\d+", pulled[TEMPORAL])
    assert re.fullmatch(r"temporalio/admin-tools:1\.\d+\.\d+", pulled[SCHEMA])
    assert re.fullmatch(r"temporalio/ui:\d+\.\d+\.\d+", pulled[UI])
    assert re.fullmatch(r"otel/opentelemetry-collector-contrib:0\.\d+\.\d+", pulled[COLLECTOR])


def test_the_schema_is_the_servers_version(services):
    assert image_tag(services[SCHEMA]["image"]) == image_tag(services[TEMPORAL]["image"])


def test_quench_services_run_one_image_built_here(services, commands):
    assert len(running(commands, "setup")) == 1
    assert {services[name]["image"] for name in commands} == {"quench:local"}
    for name in commands:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (ROOT / context / dockerfile).is_file(), name


# Temporal on PostgreSQL.


@pytest.mark.parametrize("user", [None, "temporal_admin"])
def test_schema_step_and_server_use_the_same_database(services, environment, user):
    given = {**environment, "POSTGRES_USER": user} if user else environment
    schema = container_environment(services[SCHEMA], given)
    server = container_environment(services[TEMPORAL], given)
    database = container_environment(services[POSTGRESQL], given)
    assert schema["SQL_PLUGIN"] == server["DB"] == "postgres12"
    assert schema["SQL_HOST"] == server["POSTGRES_SEEDS"] == POSTGRESQL
    assert schema["SQL_PORT"] == server["DB_PORT"] == str(POSTGRES_PORT)
    assert schema["SQL_USER"] == server["POSTGRES_USER"] == database["POSTGRES_USER"]
    assert schema["SQL_PASSWORD"] == server["POSTGRES_PWD"] == database["POSTGRES_PASSWORD"]
    assert schema["SQL_PASSWORD"] == environment["POSTGRES_PASSWORD"]
    assert schema["DBNAME"] == server["DBNAME"]
    assert schema["VISIBILITY_DBNAME"] == server["VISIBILITY_DBNAME"]
    assert schema["DBNAME"] != schema["VISIBILITY_DBNAME"]


def test_postgres_data_lives_in_a_named_volume(services, compose):
    volumes = services[POSTGRESQL]["volumes"]
    data_volume = next(v.split(":")[0] for v in volumes if "/var/lib/postgresql" in v)
    assert data_volume in (compose.get("volumes") or {})
    assert "pg_isready" in text_of(services[POSTGRESQL]["healthcheck"])


@pytest.fixture(scope="module")
def schema_script(services) -> Path:
    """The file of this repository that the schema step runs."""
    schema = services[SCHEMA]
    entrypoint = schema["entrypoint"]
    assert entrypoint[0] == "/bin/sh" and len(entrypoint) == 2, entrypoint
    source, read_only = bind_mounts(schema)[entrypoint[1]]
    assert read_only and source.is_file()
    return source


SQL_TOOL_STAND_IN = """#!/bin/sh
# Records its arguments, and answers `create` as STUB_CREATE says: new, exists, or refused.
printf '%s\\n' "$*" >> "$STUB_CALLS"
[ -n "${SQL_PASSWORD:-}" ] || { echo "no SQL_PASSWORD" >&2; exit 3; }
case "$*" in
  *" create")
    case "$STUB_CREATE" in
      new) exit 0 ;;
      exists) echo 'Unable to create SQL database. pq: database "x" already exists'; exit 1 ;;
      *) echo 'Unable to connect to SQL database. dial tcp: connection refused'; exit 1 ;;
    esac ;;
esac
exit 0
"""


def run_schema_script(
    tmp_path: Path, script: Path, env: dict[str, str], create: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    tool = tools / "temporal-sql-tool"
    tool.write_text(SQL_TOOL_STAND_IN)
    tool.chmod(0o755)
    calls = tmp_path / f"calls-{create}"
    result = subprocess.run(
        ["sh", str(script)],
        env={
            **env,
            "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
            "STUB_CALLS": str(calls),
            "STUB_CREATE": create,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize("create", ["new", "exists"])
def test_schema_step_sets_up_both_databases_and_can_run_again(
    tmp_path, services, environment, schema_script, create
):
    """`exists` is the second `docker compose up`, with the tool of a version that fails on
    an existing database: the step must go on to bring the schema up to date."""
    env = container_environment(services[SCHEMA], environment)
    result, calls = run_schema_script(tmp_path, schema_script, env, create)
    assert result.returncode == 0, result.stderr
    major = re.fullmatch(r"postgres(\d+)(_pgx)?", env["SQL_PLUGIN"])
    assert major, env["SQL_PLUGIN"]
    schemas = f"/etc/temporal/schema/postgresql/v{major[1]}"
    expected = []
    for database, kind in ((env["DBNAME"], "temporal"), (env["VISIBILITY_DBNAME"], "visibility")):
        expected += [
            f"--db {database} create",
            f"--db {database} setup-schema -v 0.0",
            f"--db {database} update-schema -d {schemas}/{kind}/versioned",
        ]
    assert calls == expected
    # The password reaches the tool in its environment, never on a command line.
    assert not any(env["SQL_PASSWORD"] in call for call in calls)


def test_schema_step_fails_when_a_database_cannot_be_made(
    tmp_path, services, environment, schema_script
):
    env = container_environment(services[SCHEMA], environment)
    result, calls = run_schema_script(tmp_path, schema_script, env, "refused")
    assert result.returncode != 0
    assert calls == [f"--db {env['DBNAME']} create"]
    assert "connection refused" in result.stderr


def test_temporal_serves_grpc_where_clients_dial_it(services, environment):
    temporal = services[TEMPORAL]
    server = container_environment(temporal, environment)
    # Bound to every interface: other containers dial it, and so does the loopback check.
    assert server["BIND_ON_IP"] == "0.0.0.0"  # noqa: S104
    assert TEMPORAL_GRPC_PORT in {target for _, _, target in published_ports(temporal)}
    health = text_of(temporal["healthcheck"])
    assert str(TEMPORAL_GRPC_PORT) in health


def test_temporal_reads_the_dynamic_config_mounted_for_it(services):
    path = env_of(services[TEMPORAL])["DYNAMIC_CONFIG_FILE_PATH"]
    assert path is not None
    source, read_only = bind_mounts(services[TEMPORAL])[path]
    assert read_only
    config = yaml.safe_load(source.read_text())
    assert config and all(
        isinstance(values, list) and all("value" in v for v in values) for values in config.values()
    )


def test_search_attributes_fit_the_sql_visibility_store(services):
    """Beyond its pre-allocated columns PostgreSQL visibility refuses a search attribute,
    and `quench setup` would fail."""
    assert env_of(services[TEMPORAL])["DB"] == "postgres12"
    wanted = Counter(search_attribute_type_name(key) for key in SEARCH_ATTRIBUTES)
    over = {kind: n for kind, n in wanted.items() if n > SQL_VISIBILITY_COLUMNS[kind]}
    assert over == {}


# Quench's commands and settings.


def test_every_quench_variable_is_a_setting(services):
    """A misspelt QUENCH_* variable would be ignored without a word."""
    passed = {key for service in services.values() for key in env_of(service)}
    unknown = sorted(
        key
        for key in passed
        if key.startswith("QUENCH_")
        and key.removeprefix("QUENCH_").lower() not in Settings.model_fields
    )
    assert unknown == []


def test_image_runs_quench_by_default(dockerfile, pyproject):
    script = pyproject["project"]["scripts"][QUENCH]
    assert script.split(":")[0] == starter.__name__, "parse_quench reads starter's parser"
    cmd = json.loads(next(args for keyword, args in dockerfile if keyword == "CMD"))
    assert parse_quench(cmd).command == "worker"


def test_each_quench_service_starts_with_the_environment_compose_gives_it(commands, settings_of):
    """What each process checks before it starts, on the settings compose hands it."""
    for name, args in commands.items():
        settings = settings_of(name)
        assert settings.log_format == "json", name
        if args.command in {"setup", "worker", "webhook"}:
            assert settings.temporal_address == TEMPORAL_ADDRESS, name
        if args.command in {"worker", "webhook"}:
            settings.require_payload_encryption()
        if args.command == "worker":
            settings.require_aws_targets()
        if args.command == "webhook":
            assert settings.webhook_tokens() and settings.managed_accounts
        if args.command == "codec-server":
            assert settings.payload_codec() is not None and settings.codec_token is not None


@pytest.mark.parametrize("namespace", [None, "quench-prod"])
def test_setup_prepares_the_namespace_the_apps_and_the_ui_use(
    services, commands, environment, settings_of, namespace
):
    overrides = {"QUENCH_TEMPORAL_NAMESPACE": namespace} if namespace else {}
    (setup,) = running(commands, "setup")
    wanted = settings_of(setup, **overrides)
    assert wanted.temporal_namespace == (
        namespace or Settings.model_fields["temporal_namespace"].default
    )
    for name in running(commands, "worker") + running(commands, "webhook"):
        settings = settings_of(name, **overrides)
        assert settings.temporal_address == wanted.temporal_address, name
        assert settings.temporal_namespace == wanted.temporal_namespace, name
    ui = container_environment(services[UI], {**environment, **overrides})
    assert ui["TEMPORAL_DEFAULT_NAMESPACE"] == wanted.temporal_namespace


def test_a_worker_serves_each_task_queue(commands):
    served = Counter(
        queue
        for name in running(commands, "worker")
        for queue in (worker.QUEUES if commands[name].queue == "both" else (commands[name].queue,))
    )
    assert served == Counter(worker.QUEUES), "each queue served, by one worker service"


@pytest.mark.parametrize("queues", [{}, {"QUENCH_TASK_QUEUE": "c", "QUENCH_SCAN_TASK_QUEUE": "s"}])
def test_workers_poll_the_queues_the_webhooks_cases_use(commands, settings_of, queues):
    (webhook,) = running(commands, "webhook")
    opened = settings_of(webhook, **queues)
    policy = opened.case_policy()
    for name in running(commands, "worker"):
        polled = settings_of(name, **queues)
        if commands[name].queue in {"cases", "both"}:
            assert polled.task_queue == opened.task_queue, name
        if commands[name].queue in {"scans", "both"}:
            assert polled.scan_task_queue == policy.scan_task_queue, name


def test_the_webhook_passes_on_every_case_policy_setting(services):
    """The webhook fixes the case policy into each case it opens: every setting the policy
    is made from must reach it, or compose would silently run the default policy."""
    source = inspect.getsource(Settings.case_policy)
    used = set(re.findall(r"self\.([a-z]\w*)", source)) & set(Settings.model_fields)
    assert {"approvers", "approval_deadlines", "scan_task_queue"} <= used
    env = env_of(services["webhook"])
    missing = sorted(f"QUENCH_{name.upper()}" for name in used)
    assert [v for v in missing if v not in env] == []


def test_workers_and_webhook_take_the_managed_accounts_alike(services, commands):
    """The webhook ignores findings of accounts the workers do not act in: all must read
    the same setting, passed through from the environment."""
    for name in running(commands, "worker") + running(commands, "webhook"):
        env = env_of(services[name])
        assert env.get("QUENCH_ACCOUNT_ID", "") is None, name
        assert env.get("QUENCH_ACCOUNTS_FILE", "") is None, name


def test_workers_require_the_aws_targets_they_check_at_start(services, commands):
    for name in running(commands, "worker"):
        env = env_of(services[name])
        for setting in ("evidence_bucket", "cloudtrail_bucket"):
            variable = f"QUENCH_{setting.upper()}"
            match = REQUIRED_FROM_ENVIRONMENT.match(env.get(variable) or "")
            assert match and match["name"] == variable, (name, variable)


def test_workers_take_the_notification_channels(services, commands):
    for name in running(commands, "worker"):
        env = env_of(services[name])
        assert "QUENCH_NOTIFY_SNS_TOPIC_ARN" in env, name
        # The chat webhook's URL is a secret: passed through, never written in the file.
        assert env["QUENCH_NOTIFY_WEBHOOK_URL"] is None, name


# Ports.


def test_only_the_webhook_is_published_beyond_this_host(services):
    """The UI and the codec server have no login of their own, Temporal's frontend none
    either: loopback only, reached through a tunnel or an authenticating proxy."""
    for name, service in services.items():
        for address, _, _ in published_ports(service):
            assert name in PUBLIC_SERVICES or address == LOOPBACK, f"{name} on {address}"


def test_webhook_listens_where_it_is_published(services, commands, settings_of):
    (name,) = running(commands, "webhook")
    settings = settings_of(name)
    # Inside its container the webhook must listen beyond loopback for the published port.
    assert settings.webhook_host == "0.0.0.0"  # noqa: S104
    assert settings.webhook_port in {target for _, _, target in published_ports(services[name])}
    assert str(settings.webhook_port) in text_of(services[name]["healthcheck"])


def test_ui_points_at_temporal(services):
    ui = services[UI]
    assert env_of(ui)["TEMPORAL_ADDRESS"] == TEMPORAL_ADDRESS
    assert UI_PORT in {target for _, _, target in published_ports(ui)}
    assert TEMPORAL in depends_on_of(ui)


def test_the_ui_decodes_through_the_codec_server_the_browser_can_reach(
    services, commands, environment, settings_of
):
    (name,) = running(commands, "codec-server")
    codec = settings_of(name)
    assert codec.codec_host == "0.0.0.0"  # noqa: S104
    ((codec_address, codec_port, target),) = published_ports(services[name])
    assert target == codec.codec_port
    assert f":{codec.codec_port}/healthz" in text_of(services[name]["healthcheck"])
    # The browser that opens the UI calls the codec server at its published address, with
    # the token in the path: the UI has no other way to send it.
    ui = container_environment(services[UI], environment)
    endpoint = f"http://{codec_address}:{codec_port}{UI_PATH}/{environment['QUENCH_CODEC_TOKEN']}"
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == endpoint
    # ... from the UI's origin, the one the codec server answers.
    ((ui_address, ui_port, _),) = published_ports(services[UI])
    assert codec.codec_origin == f"http://{ui_address}:{ui_port}"
    for app in running(commands, "worker") + running(commands, "webhook"):
        link = urlsplit(settings_of(app).temporal_ui_url)
        assert f"{link.scheme}://{link.netloc}" == codec.codec_origin, app


# Secrets.


def holders(services: dict[str, Any], variable: str) -> set[str]:
    return {name for name, s in services.items() if variable in env_of(s)}


@pytest.mark.parametrize(
    ("variable", "needed_by"),
    [
        ("QUENCH_WEBHOOK_TOKEN", {"webhook"}),
        ("QUENCH_CODEC_TOKEN", {"codec-server"}),
        ("QUENCH_PAYLOAD_KEYS", {"worker", "webhook", "codec-server"}),
    ],
)
def test_a_secret_comes_from_the_environment_to_the_services_that_need_it(
    services, commands, variable, needed_by
):
    expected = {name for name, args in commands.items() if args.command in needed_by}
    assert holders(services, variable) == expected
    for name in expected:
        match = REQUIRED_FROM_ENVIRONMENT.match(env_of(services[name])[variable] or "")
        assert match and match["name"] == variable, name
    assert variable not in (ROOT / "Dockerfile").read_text()


def test_the_database_password_comes_from_the_environment(services):
    for name, key in (
        (POSTGRESQL, "POSTGRES_PASSWORD"),
        (TEMPORAL, "POSTGRES_PWD"),
        (SCHEMA, "SQL_PASSWORD"),
    ):
        match = REQUIRED_FROM_ENVIRONMENT.match(env_of(services[name])[key] or "")
        assert match and match["name"] == "POSTGRES_PASSWORD", name


def test_no_secret_is_written_inline(services):
    for name, service in services.items():
        for key, value in env_of(service).items():
            if SECRET_NAME.search(key) and not key.endswith("_HEADER"):
                assert value is None or REQUIRED_FROM_ENVIRONMENT.match(value), (
                    f"{name}: {key} is written inline"
                )


def test_the_readme_names_every_variable_compose_requires(compose_text):
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Production shape")
    section = readme[start : readme.index("\n## ", start + 1)]
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", compose_text))
    assert required
    assert sorted(name for name in required if f"`{name}`" not in section) == []


def test_compose_refuses_to_start_without_each_required_variable(services, environment):
    def render(given: Mapping[str, str]) -> None:
        for service in services.values():
            container_environment(service, given)

    render(environment)
    for name in environment.keys() - {"QUENCH_ACCOUNT_ID"}:
        with pytest.raises(MissingVariable, match=name):
            render({key: value for key, value in environment.items() if key != name})


# Telemetry.


def test_every_quench_service_sends_its_spans_to_the_collector(
    services, apps, environment, collector_config, pyproject
):
    protocols = collector_config["receivers"]["otlp"]["protocols"]
    dependencies = {re.split(r"[<>=\[ ]", d)[0] for d in pyproject["project"]["dependencies"]}
    names = set()
    for name in apps:
        env = container_environment(services[name], environment)
        names.add(env["OTEL_SERVICE_NAME"])
        assert env["OTEL_SERVICE_NAME"].startswith("quench-"), name
        protocol = env["OTEL_EXPORTER_OTLP_PROTOCOL"]
        assert OTLP_EXPORTER_PACKAGES[protocol] in dependencies, f"{name}: {protocol}"
        endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert endpoint.hostname == COLLECTOR, name
        receiver = "grpc" if protocol == "grpc" else "http"
        assert endpoint.port == port_of(protocols[receiver]["endpoint"]), name
        assert COLLECTOR in depends_on_of(services[name]), name
    assert len(names) == len(apps), "one service name each, to tell their spans apart"


def test_the_collector_listens_beyond_its_own_container(collector_config):
    for protocol in collector_config["receivers"]["otlp"]["protocols"].values():
        assert protocol["endpoint"].rsplit(":", 1)[0] == "0.0.0.0"  # noqa: S104


def test_the_collector_scrapes_exactly_the_workers_metrics(
    services, commands, environment, collector_config, settings_of
):
    binds = {
        name: container_environment(services[name], environment).get("QUENCH_PROMETHEUS_BIND")
        for name in commands
    }
    serving = {name: bind for name, bind in binds.items() if bind}
    assert set(serving) == set(running(commands, "worker"))
    for name, bind in serving.items():
        assert settings_of(name).prometheus_bind == bind
        assert bind.rsplit(":", 1)[0] == "0.0.0.0", name  # noqa: S104
        assert not published_ports(services[name]), f"{name}'s metrics stay inside"
    scraped = {
        target
        for job in collector_config["receivers"]["prometheus"]["config"]["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert scraped == {f"{name}:{port_of(bind)}" for name, bind in serving.items()}


def test_the_collector_pipelines_use_what_it_defines(collector_config):
    pipelines = collector_config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for kind, pipeline in pipelines.items():
        assert "otlp" in pipeline["receivers"], kind
        for part in ("receivers", "processors", "exporters"):
            assert pipeline[part], (kind, part)
            assert set(pipeline[part]) <= set(collector_config[part]), (kind, part)
    assert "prometheus" in pipelines["metrics"]["receivers"]


# The image.


def test_image_installs_the_runtime_lock_and_the_project_without_dev_deps_as_non_root(dockerfile):
    keywords = [keyword for keyword, _ in dockerfile]
    assert dockerfile[keywords.index("FROM")] == ("FROM", "python:3.11-slim")
    runs = [args for keyword, args in dockerfile if keyword == "RUN"]
    # The dependencies exactly as locked, hashes checked; then Quench alone, resolving nothing.
    lock = r"pip install --require-hashes -r requirements/runtime\.txt(\s|$)"
    assert any(re.search(lock, run) for run in runs)
    assert any(
        re.search(r"pip install --no-deps --no-build-isolation \.(\s|$)", run) for run in runs
    )
    assert not any(re.search(r"\.\[|\[test\]|optional-dependencies|test\.txt", run) for run in runs)
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert dockerfile[last_user][1].split(":")[0] not in {"root", "0"}
    assert last_user < keywords.index("CMD"), "CMD must run as the non-root user"
    assert "RUN" not in keywords[last_user:], "nothing after USER should need root"


def test_dockerignore_admits_what_pip_install_needs_and_nothing_private(pyproject):
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allowlist: exclude everything, then admit"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    setuptools = pyproject["tool"]["setuptools"]
    # A subpackage (workflows.case) comes in with its package's folder.
    folders = {package.split(".")[0] for package in setuptools["packages"]}
    required = {"pyproject.toml", "requirements/runtime.txt", *folders}
    required |= {f"{module}.py" for module in setuptools["py-modules"]}
    assert required <= admitted, f"missing from the image: {required - admitted}"
    assert not {a for a in admitted if a.startswith((".env", ".venv", ".quench", ".aws"))}
