"""Counting words: `1 check`, `2 checks`, `1 change`, `0 changes`."""


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """The count and its noun, singular for one: `1 resource`, `3 resources`; `plural`
    for a noun that does not take an s (`1 entry`, `2 entries`)."""
    return f"{count} {noun if count == 1 else (plural or noun + 's')}"
