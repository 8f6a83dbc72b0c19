"""The compose stack and the image, checked against the code they must agree with.

Nothing here starts a container: the files are parsed and every address, port, search
attribute and image pin is compared with its owner (config/names.py, config/settings.py,
pyproject.toml), so a rename on one side cannot leave the deployment behind.
"""

import inspect
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.names import SEARCH_ATTRIBUTES, search_attribute_type_name
from config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

TEMPORAL = "temporal"
TEMPORAL_GRPC_PORT = 7233  # the frontend's gRPC port, what SDK clients and the CLI dial
TEMPORAL_ADDRESS = f"{TEMPORAL}:{TEMPORAL_GRPC_PORT}"
SETUP = "temporal-setup"
UI = "temporal-ui"
UI_PORT = 8080
APP_SERVICES = ("worker", "webhook")

# A value compose must find in the shell or `.env`, or refuse to start: ${NAME:?message}.
REQUIRED_FROM_ENVIRONMENT = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):\?[^}]+\}$")
SECRET_NAME = re.compile(r"PASSWORD|PWD|SECRET|TOKEN")
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"]


@pytest.fixture(scope="module")
def compose_volumes() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose.get("volumes") or {}


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


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


def depends_on_of(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in raw.items()}


def container_ports_of(service: dict[str, Any]) -> set[int]:
    """The container side of every published port, short ("[ip:]host:container") or long."""
    ports = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


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


def registered_search_attributes(script: str) -> list[tuple[str, str]]:
    """(name, type) pairs of the one `search-attribute create` command, paired by position
    as the CLI pairs them. Only flags on the command's own logical line count, so a lost
    line continuation drops attributes here exactly as it would in the container."""
    logical_lines = script.replace("\\\n", " ").splitlines()
    creates = [
        line.split()
        for line in logical_lines
        if line.strip().startswith("temporal operator search-attribute create")
    ]
    assert len(creates) == 1, f"expected one search-attribute create command, got {creates}"
    words = creates[0]
    names = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--name"]
    types = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--type"]
    assert len(names) == len(types), f"unpaired --name/--type: {names} {types}"
    return list(zip(names, types, strict=True))


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


def test_temporal_serves_grpc_where_clients_dial_it(services):
    temporal = services[TEMPORAL]
    assert temporal["image"].startswith("temporalio/auto-setup:")
    assert TEMPORAL_GRPC_PORT in container_ports_of(temporal)
    health = text_of(temporal["healthcheck"])
    assert "operator cluster health" in health and TEMPORAL_ADDRESS in health


def test_temporal_is_wired_to_postgresql(services, compose_volumes):
    temporal, postgresql = env_of(services[TEMPORAL]), services["postgresql"]
    database = env_of(postgresql)
    assert temporal["DB"] == "postgres12"
    assert temporal["POSTGRES_SEEDS"] == "postgresql"
    assert temporal["DB_PORT"] == "5432"
    assert temporal["POSTGRES_USER"] == database["POSTGRES_USER"]
    assert temporal["POSTGRES_PWD"] == database["POSTGRES_PASSWORD"]
    assert depends_on_of(services[TEMPORAL]) == {"postgresql": "service_healthy"}
    assert "pg_isready" in text_of(postgresql["healthcheck"])
    data_volume = next(v.split(":")[0] for v in postgresql["volumes"] if "/var/lib/postgresql" in v)
    assert data_volume in compose_volumes, "postgres data must live in a named volume"


def test_app_services_dial_temporal_grpc(services):
    for name in APP_SERVICES:
        assert env_of(services[name])["QUENCH_TEMPORAL_ADDRESS"] == TEMPORAL_ADDRESS, name


def test_app_services_wait_for_temporal_and_the_search_attributes(services):
    for name in APP_SERVICES:
        depends_on = depends_on_of(services[name])
        assert depends_on.get(TEMPORAL) == "service_healthy", name
        assert depends_on.get(SETUP) == "service_completed_successfully", name


def test_setup_registers_exactly_the_search_attributes_of_names_py(services):
    setup = services[SETUP]
    # One script string to a shell; a bare string command would be split into words.
    assert setup["entrypoint"] == ["/bin/sh", "-c"]
    assert isinstance(setup["command"], list) and len(setup["command"]) == 1
    assert env_of(setup)["TEMPORAL_ADDRESS"] == TEMPORAL_ADDRESS
    assert setup["image"] == services[TEMPORAL]["image"], "CLI and server versions must match"

    registered = registered_search_attributes(setup["command"][0])
    assert len(registered) == len(set(registered)), f"registered twice: {registered}"
    assert set(registered) == {
        (key.name, search_attribute_type_name(key)) for key in SEARCH_ATTRIBUTES
    }


def test_search_attributes_land_in_the_namespace_the_apps_use(services):
    script = services[SETUP]["command"][0]
    namespaces = set(re.findall(r"--namespace\s+(\S+)", script))
    default = Settings.model_fields["temporal_namespace"].default
    assert namespaces == {default}
    for name in APP_SERVICES:
        assert env_of(services[name]).get("QUENCH_TEMPORAL_NAMESPACE", default) == default, name


def test_ui_points_at_temporal(services):
    ui = services[UI]
    assert env_of(ui)["TEMPORAL_ADDRESS"] == TEMPORAL_ADDRESS
    assert UI_PORT in container_ports_of(ui)
    assert TEMPORAL in depends_on_of(ui)


def test_pulled_images_are_pinned(services):
    pulled = {name: s["image"] for name, s in services.items() if "build" not in s}
    assert set(pulled) == {"postgresql", TEMPORAL, SETUP, UI}
    for name, image in pulled.items():
        tag = image_tag(image)
        assert tag, f"{name}: {image} has no tag"
        assert tag != "latest" and "$" not in tag, f"{name}: {image} is not pinned"
    assert re.fullmatch(r"postgres:\d+(\.\d+)?(-[a-z0-9]+)?", pulled["postgresql"])
    assert re.fullmatch(r"temporalio/auto-setup:1\.[23]\d\.\d+", pulled[TEMPORAL])
    assert re.fullmatch(r"temporalio/ui:\d+\.\d+\.\d+", pulled[UI])


def test_worker_and_webhook_run_one_image_built_here(services):
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1
    for name in APP_SERVICES:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (ROOT / context / dockerfile).is_file(), name


def test_webhook_token_is_required_from_the_environment(services):
    token = env_of(services["webhook"])["QUENCH_WEBHOOK_TOKEN"]
    match = REQUIRED_FROM_ENVIRONMENT.match(token or "")
    assert match and match["name"] == "QUENCH_WEBHOOK_TOKEN", token
    holders = [name for name, s in services.items() if "QUENCH_WEBHOOK_TOKEN" in env_of(s)]
    assert holders == ["webhook"]
    assert "QUENCH_WEBHOOK_TOKEN" not in (ROOT / "Dockerfile").read_text()


def test_no_secret_is_written_inline(services):
    for name, service in services.items():
        for key, value in env_of(service).items():
            if SECRET_NAME.search(key) and not key.endswith("_HEADER"):
                assert value is None or REQUIRED_FROM_ENVIRONMENT.match(value), (
                    f"{name}: {key} is written inline"
                )


def test_worker_requires_the_aws_targets_it_checks_at_start(services):
    env = env_of(services["worker"])
    for setting in ("evidence_bucket", "cloudtrail_bucket"):
        variable = f"QUENCH_{setting.upper()}"
        match = REQUIRED_FROM_ENVIRONMENT.match(env.get(variable) or "")
        assert match and match["name"] == variable, variable


def test_webhook_listens_on_the_settings_default_port(services):
    port = Settings.model_fields["webhook_port"].default
    webhook = services["webhook"]
    command = webhook["command"]
    assert command[:2] == ["uvicorn", "webhook.app:app"]
    # Inside its container the webhook must listen beyond loopback for the published port.
    assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104
    assert command[command.index("--port") + 1] == str(port)
    assert env_of(webhook).get("QUENCH_WEBHOOK_PORT", str(port)) == str(port)
    assert port in container_ports_of(webhook)
    assert str(port) in text_of(webhook["healthcheck"])


def test_commands_run_code_the_image_installs(services, dockerfile, pyproject):
    setuptools = pyproject["tool"]["setuptools"]
    cmd = json.loads(next(args for keyword, args in dockerfile if keyword == "CMD"))
    assert cmd == ["python", "worker.py"]
    assert services["worker"]["command"] == cmd
    assert (ROOT / "worker.py").is_file()
    assert "worker" in setuptools["py-modules"]
    # webhook/app.py is written elsewhere; what this file owns is that the package ships.
    app_module = services["webhook"]["command"][1].split(":")[0]
    assert app_module == "webhook.app"
    assert app_module.split(".")[0] in setuptools["packages"]
    dependencies = {re.split(r"[<>=\[ ]", d)[0] for d in pyproject["project"]["dependencies"]}
    assert "uvicorn" in dependencies


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
    required = {"pyproject.toml", "requirements/runtime.txt", *setuptools["packages"]}
    required |= {f"{module}.py" for module in setuptools["py-modules"]}
    assert required <= admitted, f"missing from the image: {required - admitted}"
    assert not {a for a in admitted if a.startswith((".env", ".venv", ".quench", ".aws"))}


def test_the_webhook_passes_on_every_case_policy_setting(services):
    """The webhook fixes the case policy into each case it opens: every setting the policy
    is made from must reach it, or compose would silently run the default policy."""
    source = inspect.getsource(Settings.case_policy)
    used = set(re.findall(r"self\.([a-z]\w*)", source)) & set(Settings.model_fields)
    assert {"approvers", "approval_deadlines", "no_approval_actions"} <= used
    env = env_of(services["webhook"])
    missing = sorted(f"QUENCH_{name.upper()}" for name in used)
    assert [v for v in missing if v not in env] == []


def test_worker_and_webhook_take_the_managed_accounts_alike(services):
    """The webhook ignores findings of accounts the worker does not act in: both must
    read the same setting, passed through from the environment."""
    for name in ("worker", "webhook"):
        env = env_of(services[name])
        assert env.get("QUENCH_ACCOUNT_ID", "") is None, name
        assert env.get("QUENCH_ACCOUNTS_FILE", "") is None, name


def test_the_worker_takes_the_notification_channels(services):
    env = env_of(services["worker"])
    assert "QUENCH_NOTIFY_SNS_TOPIC_ARN" in env and "QUENCH_NOTIFY_WEBHOOK_URL" in env
    # The chat webhook's URL is a secret: passed through, never written in the file.
    assert env["QUENCH_NOTIFY_WEBHOOK_URL"] is None
