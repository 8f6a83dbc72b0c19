"""The embedded stack: what `make demo` and `python starter.py up` run on one machine.

Order matters, and each piece is ready-checked before the next starts: the Temporal dev
server (file-backed, with Quench's search attributes), the lab's AWS, the worker, and
the webhook. Once up, the stack is supervised until it stops, and it holds its state
directory so that no second stack can run on it.
"""

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import boto3
import httpx
from pydantic import ValidationError
from pydantic_settings import SettingsError

from codec.server import generate_token
from config import names
from config.settings import Settings, settings_problem
from lab import organization as lab_organization
from lab import world as lab_world
from stack.binaries import temporal_cli
from stack.processes import ManagedProcess, StackError, port_open
from stack.state_lock import StateDirInUseError, StateDirLock
from stack.supervisor import Supervisor

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAB_READY_FILE = "lab-aws.ready"
WORKER_READY_LINE = b"worker polling"
# The lab worker's own access key: a finding naming it names Quench itself.
LAB_WORKER_KEY = "AKIAQUENCHLABWORKER1"

# The worker and the webhook hold no state: a new one carries on where the dead one
# stopped, so they are restarted. The Temporal dev server and the lab's AWS are not: they
# hold the state (case histories; the lab's world, replayed from its recording at start),
# so their death points at the machine or that state (disk full, a damaged database),
# which a restart loop would hide while cases stall. Their death stops the stack, saying
# why; `up` again resumes every case.
RESTARTED = ("worker", "webhook", "codec")

# WAL with normal sync gave about 2.6x the workflow throughput of SQLite's defaults.
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


@dataclass
class StackConfig:
    state_dir: Path = Path(".quench")
    host: str = "127.0.0.1"
    temporal_port: int = 7233
    ui_port: int = 8233
    lab_aws_port: int = 5055
    webhook_port: int = 8787
    codec_port: int = 8089
    namespace: str = "default"
    lab: bool = True
    # More QUENCH_* settings for the worker and webhook (tests shorten the watch).
    extra_env: dict[str, str] = field(default_factory=dict)
    # The chaos run kills and restarts pieces itself, and does not want them restarted
    # (or their death called the stack's end) behind its back.
    supervise: bool = True
    # More of the lab's AWS command line (a benchmark writes its checkpoints only when idle).
    lab_options: tuple[str, ...] = ()


class EmbeddedStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.state_dir = config.state_dir.resolve()
        # The codec server's token: the user's, or one for this run of the stack (the UI is
        # told it with the endpoint, and nothing else needs it).
        self._codec_token = self._setting("QUENCH_CODEC_TOKEN") or generate_token()
        self._started: list[ManagedProcess] = []
        self.processes = self._processes()
        self._lock = StateDirLock(self.state_dir)
        self._supervisor: Supervisor | None = None

    @property
    def temporal_address(self) -> str:
        return f"{self.config.host}:{self.config.temporal_port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.config.host}:{self.config.ui_port}"

    @property
    def aws_url(self) -> str:
        return f"http://{self.config.host}:{self.config.lab_aws_port}"

    @property
    def webhook_url(self) -> str:
        return f"http://{self.config.host}:{self.config.webhook_port}"

    @property
    def codec_url(self) -> str:
        return f"http://{self.config.host}:{self.config.codec_port}"

    @property
    def encrypts(self) -> bool:
        """Whether the stack's payloads are encrypted: keys are set (in its settings, the
        shell or `.env`), so the codec server runs and the Web UI decodes through it."""
        if self._setting("QUENCH_PAYLOAD_KEYS"):
            return True
        with mock.patch.dict(os.environ, self.child_env()):
            try:
                return Settings().payload_keys is not None
            except (ValidationError, SettingsError, ValueError):
                return False  # check_settings says what is wrong

    def _setting(self, name: str) -> str | None:
        """A QUENCH_* setting as the children get it: the stack's own, or the shell's."""
        return self.config.extra_env.get(name) or os.environ.get(name)

    def case_url(self, case_id: str) -> str:
        return f"{self.ui_url}/namespaces/{self.config.namespace}/workflows/{case_id}"

    def child_env(self) -> dict[str, str]:
        """Settings for the worker and webhook (QUENCH_*), and for the lab a fake AWS
        identity, so nothing can reach a real account by accident."""
        env = {
            "QUENCH_TEMPORAL_ADDRESS": self.temporal_address,
            "QUENCH_TEMPORAL_NAMESPACE": self.config.namespace,
            "QUENCH_TEMPORAL_UI_URL": self.ui_url,
            "QUENCH_WEBHOOK_HOST": self.config.host,
            "QUENCH_WEBHOOK_PORT": str(self.config.webhook_port),
            "QUENCH_CODEC_HOST": self.config.host,
            "QUENCH_CODEC_PORT": str(self.config.codec_port),
            "QUENCH_CODEC_TOKEN": self._codec_token,
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.config.extra_env)
        if self.config.lab:
            env.update(
                {
                    "QUENCH_LAB": "true",
                    "QUENCH_AWS_ENDPOINT_URL": self.aws_url,
                    "QUENCH_AWS_REGION": lab_world.REGION,
                    "QUENCH_EVIDENCE_BUCKET": lab_world.EVIDENCE_BUCKET,
                    "QUENCH_CLOUDTRAIL_BUCKET": lab_world.CLOUDTRAIL_BUCKET,
                    "QUENCH_NOTIFY_SNS_TOPIC_ARN": lab_world.NOTIFY_TOPIC_ARN,
                    "AWS_ACCESS_KEY_ID": LAB_WORKER_KEY,
                    "AWS_SECRET_ACCESS_KEY": "quench-lab-not-a-secret",
                    "AWS_SESSION_TOKEN": "",
                    "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_CONFIG_FILE": "/dev/null",
                    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                }
            )
            # The lab's organisation, unless the accounts are named otherwise.
            named = {"QUENCH_ACCOUNTS_FILE", "QUENCH_ACCOUNT_ID"} & {*env, *os.environ}
            if not named:
                env["QUENCH_ACCOUNTS_FILE"] = str(lab_organization.ACCOUNTS_FILE)
        return env

    def check_settings(self) -> None:
        """The settings the worker and webhook will start with, checked before anything
        starts: a mistake (a QUENCH_LAB_FAULTS typo) is one line now, rather than a
        traceback in a child's log once Temporal runs. Raises StackError saying what is
        wrong."""
        with mock.patch.dict(os.environ, self.child_env()):
            try:
                settings = Settings()
                if not self.config.lab:
                    settings.require_aws_targets()
                    settings.require_payload_encryption()
            except (ValidationError, SettingsError) as exc:
                raise StackError(settings_problem(exc)) from None
            except ValueError as exc:
                raise StackError(f"{exc} (needed without the lab)") from None
            if not self.config.lab and boto3.Session().get_credentials() is None:
                raise StackError(
                    "no AWS credentials for the worker: without the lab it acts on real AWS "
                    "and needs credentials as the AWS CLI finds them (AWS_PROFILE, "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, or an "
                    "instance role) with the policy in docs/worker-iam-policy.json"
                )

    def _processes(self) -> list[ManagedProcess]:
        cfg, state = self.config, self.state_dir
        temporal_argv = [
            str(temporal_cli()),
            "server",
            "start-dev",
            "--ip",
            cfg.host,
            "--port",
            str(cfg.temporal_port),
            "--ui-port",
            str(cfg.ui_port),
            "--db-filename",
            str(state / "temporal.db"),
            "--namespace",
            cfg.namespace,
            "--ui-disable-news-fetch",
            "--log-level",
            "warn",
        ]
        for pragma in SQLITE_PRAGMAS:
            temporal_argv += ["--sqlite-pragma", pragma]
        if self.encrypts:
            # The UI cannot send a token of its own: it is in the endpoint's path.
            temporal_argv += ["--ui-codec-endpoint", f"{self.codec_url}/ui/{self._codec_token}"]
        for key in names.SEARCH_ATTRIBUTES:
            temporal_argv += [
                "--search-attribute",
                f"{key.name}={names.search_attribute_type_name(key)}",
            ]
        python = sys.executable
        env = self.child_env()
        processes = [
            ManagedProcess(
                "temporal",
                temporal_argv,
                ready=self._temporal_ready,
                state_dir=state,
                ports=[cfg.temporal_port, cfg.ui_port],
                host=cfg.host,
            )
        ]
        if cfg.lab:
            processes.append(
                lab_aws_process(
                    state, cfg.lab_aws_port, cfg.host, *cfg.lab_options, env=env, ready_timeout=180
                )
            )
        # The same commands as the README's "Running against your AWS" (`quench worker`,
        # `quench webhook`), run as modules so they need no particular working directory.
        if self.encrypts:
            processes.append(
                self._served("codec", "codec-server", f"{self.codec_url}/healthz", cfg.codec_port)
            )
        worker = ManagedProcess(
            "worker",
            [python, "-m", "starter", "worker"],
            ready=lambda: False,
            state_dir=state,
            env=env,
        )
        worker.ready = lambda: WORKER_READY_LINE in worker.log_since_start()
        processes.append(worker)
        # Its listen address is QUENCH_WEBHOOK_HOST and _PORT, from child_env.
        processes.append(
            self._served("webhook", "webhook", f"{self.webhook_url}/readyz", cfg.webhook_port)
        )
        return processes

    def _served(self, name: str, command: str, health_url: str, port: int) -> ManagedProcess:
        """A `quench COMMAND` process that serves HTTP on `port`, ready once `health_url`
        answers 200."""
        return ManagedProcess(
            name,
            [sys.executable, "-m", "starter", command],
            ready=lambda: _http_ok(health_url),
            state_dir=self.state_dir,
            ports=[port],
            host=self.config.host,
            env=self.child_env(),
        )

    def _temporal_ready(self) -> bool:
        if not port_open(self.config.host, self.config.temporal_port):
            return False
        health = subprocess.run(
            [
                str(temporal_cli()),
                "operator",
                "cluster",
                "health",
                "--address",
                self.temporal_address,
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return "SERVING" in health.stdout and _http_ok(self.ui_url)

    def start(self, report: Callable[[str], None] | None = None) -> None:
        """Start every piece, then supervise them until stop(). Raises StateDirInUseError,
        having touched nothing, when another stack holds the state directory."""
        self._lock.acquire()
        try:
            # Holding the lock, any process named in the pid files is a dead run's.
            for process in self.processes:
                if process.stop_leftover() and report:
                    report(f"stopped {process.name} left over from an earlier run")
            (self.state_dir / LAB_READY_FILE).unlink(missing_ok=True)
            for process in self.processes:
                process.start()
                self._started.append(process)
                if report:
                    report(f"{process.name} ready (log: {process.log_path})")
            if not self.config.supervise:
                return
            self._supervisor = Supervisor(
                restarted=[p for p in self.processes if p.name in RESTARTED],
                foundation=[p for p in self.processes if p.name not in RESTARTED],
                report=report,
            )
            self._supervisor.start()
        except BaseException:
            self.stop()
            raise

    @property
    def holds_state_dir(self) -> bool:
        return self._lock.held

    @property
    def failure(self) -> str | None:
        """Why the stack cannot go on (a foundation process died, or the supervisor gave up
        on one); None while it runs."""
        return self._supervisor.failure if self._supervisor else None

    def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
        while self._started:
            self._started.pop().stop()
        self._lock.release()

    def __enter__(self) -> "EmbeddedStack":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def lab_aws_process(
    state_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    *options: str,
    env: dict[str, str] | None = None,
    ready_timeout: float = 180,
) -> ManagedProcess:
    """The lab's AWS (`python -m lab.aws_server`), ready once it has restored its world
    and listens; `options` are more of its command line (--checkpoint-every...)."""
    return ManagedProcess(
        "lab-aws",
        [
            sys.executable,
            "-m",
            "lab.aws_server",
            "--host",
            host,
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            *options,
        ],
        ready=lambda: (state_dir / LAB_READY_FILE).exists() and port_open(host, port),
        state_dir=state_dir,
        ports=[port],
        host=host,
        env=env or {},
        ready_timeout=ready_timeout,
    )


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


__all__ = ["EmbeddedStack", "StackConfig", "StackError", "StateDirInUseError"]
