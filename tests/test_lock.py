"""The lock (requirements/, written by `make lock`) against pyproject.toml: every dependency
pyproject names is pinned, hashed, in each lock that installs it, at a version pyproject
allows, and the image's runtime lock pins what the suite's test lock pins. A lock out of
date with pyproject fails here, naming the package."""

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = "requirements/runtime.txt"
TEST_LOCK = "requirements/test.txt"
# uv's annotation of a requirement that came from the project itself.
DIRECT = "quench (pyproject.toml)"


@dataclass(frozen=True)
class Pin:
    name: str  # canonical: types-pyyaml
    version: Version
    hashes: tuple[str, ...]
    applies: bool  # its environment marker holds here (Python 3.11)
    direct: bool  # pyproject.toml asked for it


def parse_lock(text: str) -> list[Pin]:
    """The pins of a hashed pip-tools-format file: `name==version ; marker` with its
    continued --hash lines and its `# via` comments."""
    entries: list[tuple[str, list[str]]] = []
    line = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):
            if entries and not line:
                entries[-1][1].append(stripped.lstrip("# ").removeprefix("via").strip())
            continue
        line += " " + stripped.removesuffix("\\")
        if not stripped.endswith("\\") and line.strip():
            entries.append((line.strip(), []))
            line = ""
    pins = []
    for entry, via in entries:
        hashes = tuple(re.findall(r"--hash=(\S+)", entry))
        requirement = Requirement(re.sub(r"\s*--hash=\S+", "", entry))
        exact = [s for s in requirement.specifier if s.operator == "=="]
        if len(exact) != 1 or len(requirement.specifier) != 1:
            raise ValueError(f"not an exact pin: {entry[:120]}")
        pins.append(
            Pin(
                name=canonicalize_name(requirement.name),
                version=Version(exact[0].version),
                hashes=hashes,
                applies=requirement.marker is None or requirement.marker.evaluate(),
                direct=DIRECT in via,
            )
        )
    return pins


def lock_problems(project: dict[str, Any], locks: dict[str, list[Pin]]) -> list[str]:
    """What makes the locks disagree with pyproject.toml (or with each other), one line a
    package: nothing when the lock is what `make lock` writes from this pyproject."""
    runtime = project["project"]["dependencies"] + project["build-system"]["requires"]
    test = runtime + project["project"]["optional-dependencies"]["test"]
    wanted = {RUNTIME_LOCK: runtime, TEST_LOCK: test}
    problems = []
    for path, pins in locks.items():
        problems += [f"{p.name}: {path} has no --hash for it" for p in pins if not p.hashes]
        pinned = {p.name: p for p in pins if p.applies}
        requirements = [Requirement(r) for r in wanted[path]]
        for requirement in requirements:
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            name = canonicalize_name(requirement.name)
            pin = pinned.get(name)
            if pin is None:
                problems.append(f"{name}: in pyproject.toml, not pinned in {path}")
            elif not requirement.specifier.contains(pin.version, prereleases=True):
                problems.append(
                    f"{name}: {path} pins {pin.version}, pyproject.toml wants "
                    f"{requirement.specifier}"
                )
        named = {canonicalize_name(r.name) for r in requirements}
        problems += [
            f"{p.name}: {path} pins it for pyproject.toml, which no longer names it"
            for p in pins
            if p.direct and p.name not in named
        ]
    tested = {p.name: p.version for p in locks[TEST_LOCK] if p.applies}
    problems += [
        f"{p.name}: {RUNTIME_LOCK} pins {p.version}, {TEST_LOCK} {tested.get(p.name)}"
        for p in locks[RUNTIME_LOCK]
        if p.applies and tested.get(p.name) != p.version
    ]
    return problems


def project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def locks() -> dict[str, list[Pin]]:
    return {path: parse_lock((ROOT / path).read_text()) for path in (RUNTIME_LOCK, TEST_LOCK)}


def test_the_lock_is_up_to_date_with_pyproject():
    problems = lock_problems(project(), locks())
    assert not problems, "out of date, run `make lock`:\n" + "\n".join(problems)


def test_the_lock_holds_the_packages_the_suite_needs():
    pinned = {p.name for p in locks()[TEST_LOCK] if p.applies}
    assert {"moto", "boto3", "botocore", "temporalio", "pytest", "setuptools", "uv"} <= pinned


def _pin(name: str, version: str, *, direct: bool = True, hashed: bool = True) -> str:
    """One entry as uv writes it."""
    hashes = f" \\\n    --hash=sha256:{'0' * 64}" if hashed else ""
    via = DIRECT if direct else "boto3"
    return f"{name}=={version}{hashes}\n    # via {via}\n"


def _problems(test_extra: list[str], test_lock: str) -> list[str]:
    """lock_problems of a small project: boto3 to run, moto to test."""
    small = {
        "build-system": {"requires": ["setuptools>=77"]},
        "project": {
            "dependencies": ["boto3>=1.40,<2"],
            "optional-dependencies": {"test": ["moto[server]>=5.1.15,<6", *test_extra]},
        },
    }
    runtime = parse_lock(RUNTIME)
    return lock_problems(small, {RUNTIME_LOCK: runtime, TEST_LOCK: parse_lock(test_lock)})


RUNTIME = _pin("boto3", "1.40.0") + _pin("setuptools", "80.0", direct=False)
TEST = RUNTIME + _pin("moto", "5.2.6")


@pytest.mark.parametrize(
    ("test_extra", "test_lock", "problem"),
    [
        # A range raised in pyproject.toml past the locked version.
        (
            [],
            TEST.replace("moto==5.2.6", "moto==5.0.0"),
            f"moto: {TEST_LOCK} pins 5.0.0, pyproject.toml wants <6,>=5.1.15",
        ),
        # A dependency added to pyproject.toml and not locked.
        (["freezegun>=1.5"], TEST, f"freezegun: in pyproject.toml, not pinned in {TEST_LOCK}"),
        # A dependency dropped from pyproject.toml and still locked.
        (
            [],
            TEST + _pin("left-pad", "1.0"),
            f"left-pad: {TEST_LOCK} pins it for pyproject.toml, which no longer names it",
        ),
        # A pin without its hash (pip would refuse the whole file).
        (
            [],
            TEST + _pin("jmespath", "1.0.1", direct=False, hashed=False),
            f"jmespath: {TEST_LOCK} has no --hash for it",
        ),
        # The test lock moved without the runtime lock.
        (
            [],
            TEST.replace("boto3==1.40.0", "boto3==1.40.1"),
            f"boto3: {RUNTIME_LOCK} pins 1.40.0, {TEST_LOCK} 1.40.1",
        ),
    ],
    ids=["range-raised", "added", "dropped", "unhashed", "runtime-differs"],
)
def test_a_lock_out_of_date_with_pyproject_fails_naming_the_package(
    test_extra: list[str], test_lock: str, problem: str
):
    assert _problems([], TEST) == []
    assert _problems(test_extra, test_lock) == [problem]
