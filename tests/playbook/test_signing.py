"""Signed decisions: keys read as OpenSSH or PEM, only Ed25519; a signature verifies only
with the approver's key and the very fields it signed; the ledger refuses any decision the
policy's keys do not vouch for, and keeps what verified it."""

import base64
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models.case import (
    ActionKind,
    ActionStatus,
    CasePolicy,
    Decision,
    DecisionSignature,
    Phase,
    PhaseChange,
)
from playbook import signing
from tests.workflows.case.test_ledger import OPENED, _decision, _ledger
from workflows.case.ledger import Signed


def _keypair(openssh: bool = True) -> tuple[bytes, str]:
    """A private key as a file holds it, and its public key as the policy holds it."""
    key = Ed25519PrivateKey.generate()
    if openssh:
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    else:
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return private, public.decode()


ALICE, ALICE_PUBLIC = _keypair()
BOB, BOB_PUBLIC = _keypair(openssh=False)
POLICY = CasePolicy(approver_keys={"alice": [ALICE_PUBLIC], "bob": [BOB_PUBLIC]})


def _signed(private: bytes, action_id: str, who: str, why: str, at=OPENED, decision="approved"):
    message = signing.signed_message("case-test", action_id, OPENED, decision, who, why, at)
    signature = signing.sign(signing.private_key(private), message)
    return _decision(action_id, who, why).model_copy(
        update={"signature": DecisionSignature(signed_at=at, signature=signature)}
    )


@pytest.mark.parametrize("openssh", [True, False])
def test_a_signature_verifies_only_with_its_key_and_its_fields(openssh):
    private, public = _keypair(openssh)
    at = OPENED
    message = signing.signed_message("case-1", "contain-1", OPENED, "approved", "alice", "ok", at)
    signature = signing.sign(signing.private_key(private), message)
    assert signing.verified_by([BOB_PUBLIC, public], message, signature) == signing.fingerprint(
        public
    )
    assert signing.verified_by([BOB_PUBLIC], message, signature) is None
    for changed in (
        signing.signed_message("case-2", "contain-1", OPENED, "approved", "alice", "ok", at),
        signing.signed_message("case-1", "contain-1", OPENED, "rejected", "alice", "ok", at),
        signing.signed_message("case-1", "contain-1", OPENED, "approved", "alice", "ok!", at),
        signing.signed_message(
            "case-1", "contain-1", OPENED, "approved", "alice", "ok", at.replace(second=1)
        ),
        # The same action id of a later case of the same id (the credential's).
        signing.signed_message(
            "case-1", "contain-1", OPENED + timedelta(days=1), "approved", "alice", "ok", at
        ),
    ):
        assert signing.verified_by([public], changed, signature) is None
    assert signing.verified_by([public], message, "not base64!") is None


def test_only_ed25519_keys_are_read():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = rsa_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    with pytest.raises(signing.UnreadableKey, match="only Ed25519 keys sign decisions"):
        signing.public_key(public.decode())
    with pytest.raises(signing.UnreadableKey, match="not a public key"):
        signing.public_key("ssh-ed25519 not-a-key")
    # The identity point, of small order: any signature would "verify" with it.
    identity = (1).to_bytes(32, "little")
    blob = b"".join(len(p).to_bytes(4, "big") + p for p in (b"ssh-ed25519", identity))
    weak = "ssh-ed25519 " + base64.b64encode(blob).decode()
    with pytest.raises(signing.UnreadableKey, match="small order"):
        signing.public_key(weak)
    with pytest.raises(ValueError, match="the key of carol"):
        CasePolicy(approver_keys={"carol": [public.decode()]})


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen here")
def test_the_fingerprint_is_the_one_ssh_keygen_prints(tmp_path: Path):
    path = tmp_path / "alice.pub"
    path.write_text(ALICE_PUBLIC + " alice@laptop\n")
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert printed.split()[1] == signing.fingerprint(ALICE_PUBLIC)


def test_the_ledger_takes_only_decisions_the_policys_keys_vouch_for():
    ledger, _, clock = _ledger(POLICY)
    action = ledger.propose(ActionKind.CONTAIN_INSTANCE_ROLE, "Contain", ["revoke"])
    clock.advance(30)
    why = "looked at it"
    refusals = {
        "unsigned": _decision(action.id, "alice", why),
        "no key": _signed(ALICE, action.id, "carol", why),
        "another's key": _signed(BOB, action.id, "alice", why),
        "another reason": _signed(ALICE, action.id, "alice", "other").model_copy(
            update={"reason": why}
        ),
        "before the action": _signed(ALICE, action.id, "alice", why, OPENED - timedelta(hours=1)),
        "a rejection's": _signed(ALICE, action.id, "alice", why, decision="rejected"),
    }
    reasons = {name: ledger.refusal(d, Decision.APPROVED) for name, d in refusals.items()}
    assert reasons["unsigned"] is not None and reasons["unsigned"].startswith("unsigned")
    assert reasons["no key"] == "carol holds no key in the approval policy: unsigned"
    verify = "the signature does not verify with a key the policy holds for alice"
    assert reasons["another's key"] == reasons["another reason"] == verify
    assert reasons["a rejection's"] == verify
    assert "outside the time of contain-1" in (reasons["before the action"] or "")

    signed = _signed(ALICE, action.id, "alice", why, OPENED + timedelta(seconds=10))
    assert ledger.decide(signed, Decision.APPROVED, "approve") is action
    assert action.status is ActionStatus.APPROVED
    assert action.approval is not None
    assert action.approval.signed_with == signing.fingerprint(ALICE_PUBLIC)
    kept = action.approval.signature
    assert kept is not None and kept == signed.signature
    # Anyone can check it again, long after, from the approval's own fields.
    approval = action.approval
    message = signing.signed_message(
        "case-test",
        approval.action_id,
        action.requested_at,
        approval.decision.value,
        approval.approver,
        approval.reason,
        kept.signed_at,
    )
    assert signing.verified_by([ALICE_PUBLIC], message, kept.signature) == approval.signed_with


def test_without_keys_in_the_policy_decisions_are_taken_as_before():
    ledger, _, _ = _ledger()
    action = ledger.propose(ActionKind.ERADICATE, "Remove", ["delete"])
    assert ledger.refusal(_decision(action.id), Decision.APPROVED) is None


def test_a_false_positive_is_marked_only_by_an_approver_with_a_signature():
    """The mark rejects what waits and offers releases: under a signing policy it is a
    decision like any other, signed on the case since it opened."""
    ledger, status, clock = _ledger(POLICY)
    status.phases.append(PhaseChange(phase=Phase.TRIAGE, at=OPENED))
    clock.advance(60)
    what = Signed("false-positive", OPENED, "false-positive", "red team")
    unsigned = ledger.verify("alice", what, None)
    assert unsigned[0] is None and (unsigned[1] or "").startswith("unsigned")
    message = signing.signed_message(
        "case-test", "false-positive", OPENED, "false-positive", "alice", "red team", clock.now
    )
    signature = DecisionSignature(
        signed_at=clock.now, signature=signing.sign(signing.private_key(ALICE), message)
    )
    assert ledger.verify("alice", what, signature) == (signing.fingerprint(ALICE_PUBLIC), None)
    assert ledger.verify("bob", what, signature)[1] == (
        "the signature does not verify with a key the policy holds for bob"
    )
