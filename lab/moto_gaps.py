"""What AWS's IAM has and moto's lacks, added to moto the way moto answers the rest:
service-specific credentials (for CodeCommit, Keyspaces and the like). AWS refuses to
delete a user who still has one, so eradication must delete them first; with these, the
lab and the tests hold the same rule."""

from datetime import UTC, datetime
from typing import Any

from moto.core.responses import ActionResult, EmptyResult
from moto.iam.exceptions import DeleteConflictException, NotFoundException
from moto.iam.models import IAMBackend
from moto.iam.responses import IamResponse
from moto.moto_api._internal import mock_random

_STORE = "_quench_service_specific_credentials"


def _credentials(backend: IAMBackend) -> dict[str, list[dict[str, Any]]]:
    store: dict[str, list[dict[str, Any]]] = backend.__dict__.setdefault(_STORE, {})
    return store


def _create(self: IamResponse) -> ActionResult:
    user = self._get_param("UserName")
    self.backend.get_user(user)  # NoSuchEntity for a user that does not exist
    service = self._get_param("ServiceName")
    credential = {
        "CreateDate": datetime.now(UTC),
        "ServiceName": service,
        "ServiceUserName": f"{user}-at-{mock_random.uuid4().hex[:4]}",
        "ServicePassword": mock_random.uuid4().hex,
        "ServiceSpecificCredentialId": "ACCA" + mock_random.uuid4().hex[:16].upper(),
        "UserName": user,
        "Status": "Active",
    }
    _credentials(self.backend).setdefault(user, []).append(credential)
    return ActionResult({"ServiceSpecificCredential": credential})


def _list(self: IamResponse) -> ActionResult:
    user = self._get_param("UserName")
    self.backend.get_user(user)
    listed = [
        {k: v for k, v in c.items() if k != "ServicePassword"}
        for c in _credentials(self.backend).get(user, [])
    ]
    return ActionResult({"ServiceSpecificCredentials": listed})


def _delete(self: IamResponse) -> EmptyResult:
    user = self._get_param("UserName")
    wanted = self._get_param("ServiceSpecificCredentialId")
    held = _credentials(self.backend).get(user, [])
    if not any(c["ServiceSpecificCredentialId"] == wanted for c in held):
        raise NotFoundException(f"No such credential {wanted} for user {user}")
    held[:] = [c for c in held if c["ServiceSpecificCredentialId"] != wanted]
    return EmptyResult()


def install() -> None:
    """Installing again changes nothing; a test that put moto's own DeleteUser back gets
    the rule again."""
    IamResponse.create_service_specific_credential = _create  # type: ignore[attr-defined]
    IamResponse.list_service_specific_credentials = _list  # type: ignore[attr-defined]
    IamResponse.delete_service_specific_credential = _delete  # type: ignore[attr-defined]
    delete_user = IAMBackend.delete_user
    if getattr(delete_user, "refuses_service_credentials", False):
        return

    def refusing_delete_user(backend: IAMBackend, user_name: str) -> None:
        if _credentials(backend).get(user_name):
            raise DeleteConflictException(
                "Cannot delete entity, must remove service specific credentials first."
            )
        delete_user(backend, user_name)
        _credentials(backend).pop(user_name, None)

    refusing_delete_user.refuses_service_credentials = True  # type: ignore[attr-defined]
    IAMBackend.delete_user = refusing_delete_user  # type: ignore[method-assign,assignment]
