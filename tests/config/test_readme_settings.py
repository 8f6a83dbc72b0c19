"""Every setting is in the README's table, and the table names no setting that is gone."""

import re
from pathlib import Path

from config.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def configuration_table() -> str:
    readme = README.read_text()
    start = readme.index("## Configuration")
    return readme[start : readme.index("\n## ", start + 1)]


def test_every_setting_is_documented() -> None:
    table = configuration_table()
    missing = [
        f"QUENCH_{name.upper()}"
        for name in Settings.model_fields
        if f"`QUENCH_{name.upper()}`" not in table
    ]
    assert missing == []


def test_the_table_names_only_settings_that_exist() -> None:
    rows = re.findall(r"^\| `(QUENCH_\w+)`(?: / `(QUENCH_\w+)`)?", configuration_table(), re.M)
    documented = {name for row in rows for name in row if name}
    known = {f"QUENCH_{name.upper()}" for name in Settings.model_fields}
    assert documented, "the table was not found"
    assert documented - known == set()
