"""Plain-text tables for a terminal: columns aligned, no borders, no dependency."""

from collections.abc import Sequence

GAP = "  "


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    right: Sequence[int] = (),
) -> str:
    """Each column as wide as its widest cell; the columns numbered in `right` (numbers)
    aligned right. None shows as '-'. An empty table is its header alone."""
    cells = [[_text(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, the table {len(headers)} columns")
        widths = [max(w, len(value)) for w, value in zip(widths, row, strict=True)]
    lines = [_line(list(headers), widths, right), *(_line(row, widths, right) for row in cells)]
    return "\n".join(lines)


def render_fields(fields: Sequence[tuple[str, object]]) -> str:
    """Name and value pairs, one a line, the values aligned."""
    width = max((len(name) for name, _ in fields), default=0)
    return "\n".join(f"{name:<{width}}{GAP}{_text(value)}".rstrip() for name, value in fields)


def _text(value: object) -> str:
    if value is None:
        return "-"
    # One cell is one line: a newline in a value would break the columns.
    return " ".join(str(value).split("\n"))


def _line(values: list[str], widths: list[int], right: Sequence[int]) -> str:
    padded = [
        value.rjust(width) if index in right else value.ljust(width)
        for index, (value, width) in enumerate(zip(values, widths, strict=True))
    ]
    return GAP.join(padded).rstrip()
