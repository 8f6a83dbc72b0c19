"""Signed decisions: an approver signs the case, the action, the decision, their name, the
reason and the time with their own Ed25519 key (an OpenSSH key or a PEM one); the case
verifies it against the public keys its approval policy holds for that approver. The
signed message is canonical JSON, so anyone can verify a decision long after from the
report: the message rebuilt from its fields, the signature, and the approver's public key.

The workflow verifies in its own code, so reading a public key and verifying are pure
Python (RFC 8032's arithmetic): a native extension cannot run in Temporal's workflow
sandbox. Signing, on the approver's machine, uses `cryptography`.
"""

import base64
import hashlib
import json
import struct
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# What the message says it is, so a signature made for anything else never verifies.
MESSAGE_KIND = "quench-decision/v1"
# How far a signature's time may be from the case's clock (either way): a signature made
# before the action was proposed is one made for another decision.
CLOCK_SKEW = timedelta(minutes=5)
# The subject and the decision a false positive's mark signs (there is no action).
FALSE_POSITIVE_SUBJECT = "false-positive"
_SSH_ED25519 = b"ssh-ed25519"
# DER of an Ed25519 SubjectPublicKeyInfo, before its 32 key bytes (RFC 8410).
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


class UnreadableKey(ValueError):
    """A key that is not an Ed25519 key Quench can read."""


def signed_message(
    case_id: str,
    action_id: str,
    proposed_at: datetime,
    decision: str,
    approver: str,
    reason: str,
    signed_at: datetime,
) -> bytes:
    """The bytes an approver signs: every field of the decision, in canonical JSON; the
    action's time tells it from the same action id of an earlier case of the same id."""
    fields = {
        "kind": MESSAGE_KIND,
        "case_id": case_id,
        "action_id": action_id,
        "proposed_at": proposed_at.astimezone(UTC).isoformat(),
        "decision": decision,
        "approver": approver,
        "reason": reason,
        "signed_at": signed_at.astimezone(UTC).isoformat(),
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def public_key(text: str) -> bytes:
    """An approver's public key, as its 32 bytes: `ssh-ed25519 AAAA... comment`, or a PEM
    public key."""
    text = text.strip()
    if text.startswith("-----BEGIN PUBLIC KEY-----"):
        body = "".join(line for line in text.splitlines() if not line.startswith("-----"))
        der = _base64(body)
        if len(der) != len(_SPKI_PREFIX) + 32 or not der.startswith(_SPKI_PREFIX):
            raise UnreadableKey("a PEM key that is not Ed25519: only Ed25519 keys sign decisions")
        return _strong(der[len(_SPKI_PREFIX) :])
    kind, _, rest = text.partition(" ")
    if not kind.startswith(("ssh-", "ecdsa-", "sk-")):
        raise UnreadableKey(
            "not a public key Quench can read: give `ssh-ed25519 AAAA...` (a .pub file's "
            "line) or a PEM public key"
        )
    if kind != _SSH_ED25519.decode():
        raise UnreadableKey(f"a {kind[:40]} key: only Ed25519 keys sign decisions")
    blob = _base64(rest.split(" ")[0])
    fields = _ssh_strings(blob)
    if len(fields) != 2 or fields[0] != _SSH_ED25519 or len(fields[1]) != 32:
        raise UnreadableKey("not a public key Quench can read: a malformed ssh-ed25519 key")
    return _strong(fields[1])


def _strong(key: bytes) -> bytes:
    """A key on the curve, not of small order: such a key "verifies" forged signatures."""
    point = _decoded(key)
    if point is None or _same(_times(8, point), (0, 1, 1, 0)):
        raise UnreadableKey("not a usable Ed25519 public key (off the curve, or of small order)")
    return key


def fingerprint(text: str) -> str:
    """The key's SHA256 fingerprint, as `ssh-keygen -l` prints it."""
    key = public_key(text)
    blob = b"".join(struct.pack(">I", len(part)) + part for part in (_SSH_ED25519, key))
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def verified_by(keys: list[str], message: bytes, signature: str) -> str | None:
    """The fingerprint of the key (of `keys`) the signature verifies with, or None."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError:
        return None
    for text in keys:
        try:
            key = public_key(text)
        except UnreadableKey:
            continue
        if _verify(key, message, raw):
            return fingerprint(text)
    return None


def private_key(data: bytes) -> "Ed25519PrivateKey":
    """An approver's private key, unencrypted: OpenSSH (`ssh-keygen -t ed25519`) or PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = (
            serialization.load_ssh_private_key(data, password=None)
            if b"OPENSSH PRIVATE KEY" in data
            else serialization.load_pem_private_key(data, password=None)
        )
    except (ValueError, TypeError) as exc:
        raise UnreadableKey(f"not an unencrypted private key Quench can read: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UnreadableKey("not an Ed25519 key: only Ed25519 keys sign decisions")
    return key


def sign(key: "Ed25519PrivateKey", message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode()


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise UnreadableKey("not a public key Quench can read: bad base64") from None


def _ssh_strings(blob: bytes) -> list[bytes]:
    """The length-prefixed strings of an SSH wire-format blob."""
    parts, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise UnreadableKey("not a public key Quench can read: a truncated key")
        (size,) = struct.unpack(">I", blob[at : at + 4])
        parts.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    if at != len(blob):
        raise UnreadableKey("not a public key Quench can read: a truncated key")
    return parts


# -- Ed25519 verification (RFC 8032, section 5.1.7), on the twisted Edwards curve in
# extended coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z.

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Point = tuple[int, int, int, int]


def _x_of(y: int, sign: int) -> int | None:
    """The x of the point with this y and sign, if there is one."""
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    return _P - x if x & 1 != sign else x


def _decoded(encoded: bytes) -> _Point | None:
    if len(encoded) != 32:
        return None
    y = int.from_bytes(encoded, "little")
    x = _x_of(y & ((1 << 255) - 1), y >> 255)
    if x is None:
        return None
    y &= (1 << 255) - 1
    return (x, y, 1, x * y % _P)


def _add(a: _Point, b: _Point) -> _Point:
    e1 = (a[1] - a[0]) * (b[1] - b[0]) % _P
    e2 = (a[1] + a[0]) * (b[1] + b[0]) % _P
    c = 2 * a[3] * b[3] * _D % _P
    z = 2 * a[2] * b[2] % _P
    e, f, g, h = e2 - e1, z - c, z + c, e2 + e1
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _times(scalar: int, point: _Point) -> _Point:
    total: _Point = (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            total = _add(total, point)
        point = _add(point, point)
        scalar >>= 1
    return total


def _same(a: _Point, b: _Point) -> bool:
    return (a[0] * b[2] - b[0] * a[2]) % _P == 0 and (a[1] * b[2] - b[1] * a[2]) % _P == 0


_BASE_Y = 4 * pow(5, -1, _P) % _P
_BASE_X = _x_of(_BASE_Y, 0) or 0
_BASE: _Point = (_BASE_X, _BASE_Y, 1, _BASE_X * _BASE_Y % _P)


def _verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is `public`'s Ed25519 signature of `message`: [S]B = R + [k]A."""
    if len(signature) != 64:
        return False
    a, r = _decoded(public), _decoded(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= _L:
        return False
    digest = hashlib.sha512(signature[:32] + public + message).digest()
    k = int.from_bytes(digest, "little") % _L
    return _same(_times(s, _BASE), _add(r, _times(k, a)))
