"""Secret redaction applied where a secret could first be seen, before anything is kept."""

from typing import Any

REDACTED = "REDACTED"

# Field names that carry secrets in AWS responses and in metadata-service documents.
SECRET_FIELDS = frozenset(
    {
        "secretaccesskey",
        "sessiontoken",
        "token",
        "password",
        "newpassword",
        "oldpassword",
        "privatekey",
        "keymaterial",
        "secretstring",
        "secretbinary",
    }
)


def is_secret_field(name: str) -> bool:
    """SecretAccessKey, aws_secret_access_key, x-session-token, NewPassword..."""
    normalized = name.replace("_", "").replace("-", "").replace(":", "").lower()
    return normalized.endswith(tuple(SECRET_FIELDS))


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every secret field's value replaced."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_secret_field(str(k)) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
