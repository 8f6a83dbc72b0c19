"""What `pip install .` (the image's install) puts in: every package of the project, with
its subpackages and data files; an editable install (`make install`) would hide a gap."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_INSTALLED = {"tests", "benchmarks"}  # run from a checkout only


def test_every_package_and_subpackage_is_installed() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in ROOT.glob("**/__init__.py")
        if init.parent.relative_to(ROOT).parts[0] not in NOT_INSTALLED | {".venv"}
        and not any(part.startswith(".") for part in init.relative_to(ROOT).parts)
    }
    assert found, "no package found"
    assert set(setuptools["packages"]) == found


def test_the_data_files_named_exist_and_every_data_file_is_named() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    named = {
        (package, name) for package, names in setuptools["package-data"].items() for name in names
    }
    for package, name in named:
        assert (ROOT / package / name).is_file(), (package, name)
    # A file the code reads beside a module, other than Python.
    data = {
        (path.parent.name, path.name)
        for package in setuptools["packages"]
        for path in (ROOT / package.replace(".", "/")).glob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"}
    }
    assert data <= named
