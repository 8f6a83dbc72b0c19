"""The texts people read about a case: a notification's decision request suggests reasons
that fit the kind of action."""

from models.case import ActionKind
from tests.cli.test_render import _waiting_on
from workflows.case.details import approval_request


def test_a_retry_s_request_suggests_reasons_that_fit_a_retry():
    status = _waiting_on(ActionKind.RETRY)
    text = approval_request(status, status.actions[0], 8.0, proceeds_at_deadline=False)
    assert "(a reason could be 'the cause of the failure is fixed'; to decline: " in text
    assert "--reason 'it will be done by hand')" in text
    assert "malicious" not in text and "false positive" not in text


def test_a_containment_s_request_suggests_reasons_that_fit_a_containment():
    status = _waiting_on(ActionKind.CONTAIN_INSTANCE_ROLE)
    text = approval_request(status, status.actions[0], 8.0, proceeds_at_deadline=False)
    assert "(a reason could be 'confirmed malicious'" in text
