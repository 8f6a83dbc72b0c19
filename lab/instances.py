"""The lab's EC2 instances from the inside: a metadata service and an SSM agent.

moto runs no instances, so SSM commands come back empty. Here each instance gets an
instance metadata service (IMDSv2) serving its role's credentials, which rotate to a new
ASIA key when the instance is stopped and started (not when it reboots), and an SSM agent
that runs AWS-RunShellScript commands for real in a restricted bash whose `curl` reaches
that metadata service and nothing else.
"""

import json
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

IMDS_HOST = "169.254.169.254"
CREDENTIAL_LIFETIME = timedelta(hours=6)

# `curl` as the instance's scripts use it against the metadata service: IMDSv2 tokens
# are required, any other host is unreachable.
_CURL = r"""
curl() {
  local method=GET url= token=
  while [ $# -gt 0 ]; do
    case "$1" in
      -X) method="$2"; shift 2 ;;
      -H) case "$2" in "X-aws-ec2-metadata-token: "*) token="${2#*: }" ;; esac; shift 2 ;;
      -*) shift ;;
      *) url="$1"; shift ;;
    esac
  done
  case "$url" in
    http://169.254.169.254/*) ;;
    *) echo "curl: (7) Failed to connect: lab instances reach only the metadata service" >&2
       return 7 ;;
  esac
  local path="${url#http://169.254.169.254/}"
  if [ "$method" = PUT ]; then
    if [ "$path" = latest/api/token ]; then printf '%s' "$LAB_IMDS_TOKEN"; return 0; fi
    echo "curl: (22) 405" >&2; return 22
  fi
  if [ "$token" != "$LAB_IMDS_TOKEN" ]; then echo "curl: (22) 401" >&2; return 22; fi
  path="${path%/}"
  if [ -f "$LAB_IMDS_ROOT/$path.list" ]; then cat "$LAB_IMDS_ROOT/$path.list"; return 0; fi
  if [ -f "$LAB_IMDS_ROOT/$path" ]; then cat "$LAB_IMDS_ROOT/$path"; return 0; fi
  echo "curl: (22) 404" >&2; return 22
}
"""


@dataclass
class InstanceCredentials:
    access_key_id: str
    secret_access_key: str
    token: str
    issued_at: datetime

    def document(self) -> dict[str, str]:
        """The metadata service's document, with its field order and formatting."""
        return {
            "Code": "Success",
            "LastUpdated": self.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Type": "AWS-HMAC",
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.token,
            "Expiration": (self.issued_at + CREDENTIAL_LIFETIME).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@dataclass
class ShellResult:
    stdout: str
    stderr: str
    exit_code: int


@dataclass
class InstanceWorld:
    """Per-instance boot generations and the credentials each generation was given."""

    mint: Any  # (instance_id, role_arn) -> InstanceCredentials
    generations: dict[str, int] = field(default_factory=dict)
    credentials: dict[tuple[str, int], InstanceCredentials] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def started_from_stopped(self, instance_id: str) -> None:
        """A stopped instance that starts again gets new role credentials."""
        with self.lock:
            self.generations[instance_id] = self.generations.get(instance_id, 0) + 1

    def current(self, instance_id: str, role_arn: str) -> InstanceCredentials:
        with self.lock:
            generation = self.generations.get(instance_id, 0)
            key = (instance_id, generation)
            if key not in self.credentials:
                self.credentials[key] = self.mint(instance_id, role_arn)
            return self.credentials[key]

    def run_shell_script(
        self, instance_id: str, role_arn: str | None, commands: list[str]
    ) -> ShellResult:
        """Run an AWS-RunShellScript command on the instance, as its SSM agent would."""
        bash, sed, cat = (shutil.which(n) for n in ("bash", "sed", "cat"))
        if not (bash and sed and cat):
            return ShellResult("", "lab instance lacks bash, sed or cat", 127)
        with tempfile.TemporaryDirectory(prefix="quench-lab-instance-") as tmp:
            root = Path(tmp) / "imds"
            bin_dir = Path(tmp) / "bin"
            self._write_metadata(root, instance_id, role_arn)
            bin_dir.mkdir()
            # Only what the probe needs; sed in sandbox mode cannot run or write anything.
            (bin_dir / "sed").write_text(f'#!{bash}\nexec {sed} --sandbox "$@"\n')
            (bin_dir / "sed").chmod(0o755)
            (bin_dir / "cat").symlink_to(cat)
            token = "lab-imds-token-" + instance_id
            try:
                done = subprocess.run(
                    [bash, "-r", "-c", _CURL + "\n".join(commands)],
                    capture_output=True,
                    text=True,
                    timeout=20,
                    cwd=tmp,
                    env={"PATH": str(bin_dir), "LAB_IMDS_ROOT": str(root), "LAB_IMDS_TOKEN": token},
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return ShellResult("", "command timed out", 124)
        return ShellResult(done.stdout, done.stderr, done.returncode)

    def _write_metadata(self, root: Path, instance_id: str, role_arn: str | None) -> None:
        meta = root / "latest" / "meta-data"
        (meta / "iam" / "security-credentials").mkdir(parents=True)
        (meta / "instance-id").write_text(instance_id)
        (meta.with_name("meta-data.list")).write_text("iam/\ninstance-id\n")
        creds_dir = meta / "iam" / "security-credentials"
        if role_arn is None:
            creds_dir.with_name("security-credentials.list").write_text("")
            return
        role_name = role_arn.rsplit("/", 1)[-1]
        creds_dir.with_name("security-credentials.list").write_text(role_name)
        document = self.current(instance_id, role_arn).document()
        (creds_dir / role_name).write_text(json.dumps(document, indent=2).replace('":', '" :'))
