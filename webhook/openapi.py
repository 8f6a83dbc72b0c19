"""The OpenAPI document the webhook serves. Request bodies are read by hand (so a wrong
content type is 415, an oversized body 413, and every error names its field), so their
schemas are added here, generated from the models that parse them."""

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from models.finding import EventBridgeEvent, GuardDutyFinding
from models.securityhub import AsffFinding
from webhook.sns import SnsMessage

EVENTBRIDGE_PATH = "/v1/events/eventbridge"
SNS_PATH = "/v1/events/sns"
API_KEY_SCHEME = "eventBridgeApiKey"


class GuardDutyFindingEvent(EventBridgeEvent):
    """A GuardDuty finding as EventBridge delivers it."""

    detail_type: Literal["GuardDuty Finding"] = Field(alias="detail-type")
    source: Literal["aws.guardduty"]
    detail: GuardDutyFinding


class SecurityHubFindings(BaseModel):
    findings: list[AsffFinding] = Field(min_length=1, max_length=1)


class SecurityHubFindingsImportedEvent(EventBridgeEvent):
    """A Security Hub finding (ASFF) as EventBridge delivers it, one per event."""

    detail_type: Literal["Security Hub Findings - Imported"] = Field(alias="detail-type")
    source: Literal["aws.securityhub"]
    detail: SecurityHubFindings


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def build_openapi(app: FastAPI, token_header: str) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    _, definitions = models_json_schema(
        [
            (GuardDutyFindingEvent, "validation"),
            (SecurityHubFindingsImportedEvent, "validation"),
            (SnsMessage, "validation"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).update(definitions["$defs"])
    components["securitySchemes"] = {
        API_KEY_SCHEME: {
            "type": "apiKey",
            "in": "header",
            "name": token_header,
            "description": "The EventBridge connection's API key (any of the accepted keys).",
        }
    }
    eventbridge = document["paths"][EVENTBRIDGE_PATH]["post"]
    eventbridge["security"] = [{API_KEY_SCHEME: []}]
    eventbridge["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _ref(GuardDutyFindingEvent.__name__),
                        _ref(SecurityHubFindingsImportedEvent.__name__),
                    ]
                }
            }
        },
    }
    document["paths"][SNS_PATH]["post"]["requestBody"] = {
        "required": True,
        "description": "SNS sends this as text/plain unless the delivery policy says otherwise; "
        "both text/plain and application/json are taken.",
        "content": {"application/json": {"schema": _ref(SnsMessage.__name__)}},
    }
    return document
