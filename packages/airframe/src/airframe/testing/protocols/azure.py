"""Azure OpenAI chat completions.

Paths: `POST /openai/deployments/{deployment}/chat/completions?api-version=...` (api-version is
required: without it Azure answers 404 `{"error": {"code": "404", "message": "Resource not
found"}}`) and the newer `POST /openai/v1/chat/completions` (api-version optional).
Auth: `api-key` header or bearer token; 401 "Access denied due to invalid subscription key...".

Differences from OpenAI reproduced: JSON keys sorted; the first stream chunk has empty
`choices`, empty id/model and `prompt_filter_results`; choices carry `content_filter_results`;
headers `apim-request-id`, `x-request-id`, `x-ms-region`; Azure-shaped 401/404/429 bodies and
the `content_filter` 400 with its `innererror`.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from .._engine import Engine, Outlet
from .._state import EmulatorState
from .._turn import Turn
from .._wire import JSON, Frame, Request, Response, dumps, json_response, sse
from ._base import Call, ErrorSpec, Route, route
from .openai import OpenAIChat, models_body

__all__ = ["AzureChat", "routes"]

_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/chat/completions")

_SAFE = {"filtered": False, "severity": "safe"}


def _filters() -> dict[str, Any]:
    return {
        "hate": dict(_SAFE),
        "self_harm": dict(_SAFE),
        "sexual": dict(_SAFE),
        "violence": dict(_SAFE),
    }


def _prompt_filters() -> list[dict[str, Any]]:
    results = _filters()
    results["jailbreak"] = {"filtered": False, "detected": False}
    return [{"prompt_index": 0, "content_filter_results": results}]


class AzureChat(OpenAIChat):
    fingerprint = "fp_emulator_azure"

    def reject(self, request: Request) -> Response | None:
        if _DEPLOYMENT.fullmatch(request.path) and not request.query.get("api-version"):
            return self.azure_error(404, "404", "Resource not found")
        return None

    def authenticate(self, request: Request) -> bool:
        key = self.state.api_key
        if key is None:
            return True
        return request.headers.get("api-key") == key or request.bearer() == key

    def response_model(self, body: dict[str, Any]) -> str:
        # The deployment decides the model; the response names the underlying model.
        return self.state.model

    def request_headers(self, seq: int | None = None) -> list[tuple[str, str]]:
        number = self.state.next_seq() if seq is None else seq
        request_id = str(uuid.UUID(int=number))
        return [
            ("apim-request-id", request_id),
            ("x-request-id", request_id),
            ("x-ms-region", "Sweden Central"),
            ("x-ms-rai-invoked", "true"),
        ]

    def azure_error(self, status: int, code: str, message: str) -> Response:
        body = {"error": {"code": code, "message": message}}
        return json_response(status, body, JSON, self.request_headers())

    def error(self, call: Call | None, request: Request, spec: ErrorSpec) -> Response:
        status = spec.status or self.status_for(spec.kind)
        if spec.kind == "auth":
            return self.azure_error(
                status,
                str(status),
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource.",
            )
        if spec.kind == "not_found":
            return self.azure_error(
                status,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again.",
            )
        if spec.kind == "rate_limit":
            version = request.query.get("api-version", "v1")
            return self.azure_error(
                status,
                str(status),
                f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
                f"{version} have exceeded token rate limit of your current OpenAI S0 pricing "
                "tier. Please retry after 10 seconds. Go here: https://aka.ms/oai/quotaincrease "
                "if you would like to further increase the default rate limit.",
            )
        return super().error(call, request, spec)

    def error_object(self, call: Call | None, spec: ErrorSpec) -> dict[str, Any]:
        if spec.kind == "content_filter":
            result = _filters()
            result["jailbreak"] = {"filtered": False, "detected": False}
            result["violence"] = {"filtered": True, "severity": "medium"}
            return {
                "message": (
                    "The response was filtered due to the prompt triggering Azure OpenAI's "
                    "content management policy. Please modify your prompt and retry. To learn "
                    "more about our content filtering policies please read our documentation: "
                    "https://go.microsoft.com/fwlink/?linkid=2198766"
                ),
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": result,
                },
            }
        return super().error_object(call, spec)

    # -- rendering -----------------------------------------------------------------------------

    def event(self, obj: dict[str, Any]) -> bytes:
        return sse(dumps(obj, sort_keys=True))

    def encode(self, obj: dict[str, Any]) -> bytes:
        return dumps(obj, sort_keys=True).encode()

    def body(self, call: Call, turn: Turn) -> bytes:
        obj = {
            "id": self.completion_id(call),
            "object": "chat.completion",
            "created": call.created,
            "model": call.model,
            "prompt_filter_results": _prompt_filters(),
            "choices": [dict(self.choice(call, turn), content_filter_results=_filters())],
            "usage": self.usage(call, turn),
            "system_fingerprint": self.fingerprint,
        }
        return self.encode(obj)

    def chunk(self, call: Call, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        filters = _filters() if any(key in delta for key in ("content", "refusal")) else {}
        if delta.get("content") == "":
            filters = {}
        obj: dict[str, Any] = {
            "id": self.completion_id(call),
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.model,
            "system_fingerprint": self.fingerprint,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": finish,
                    "content_filter_results": filters,
                }
            ],
        }
        if call.include_usage:
            obj["usage"] = None
        return obj

    def usage_chunk(self, call: Call, turn: Turn) -> dict[str, Any]:
        obj = super().usage_chunk(call, turn)
        obj.pop("service_tier", None)
        return obj

    def opening_frames(self, call: Call) -> list[Frame]:
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": _prompt_filters(),
        }
        return [Frame(self.event(first), token=False)]


def routes(state: EmulatorState, engine: Engine) -> list[Route]:
    endpoint = AzureChat(state)
    serve = engine.handler(endpoint)

    async def models(request: Request, out: Outlet) -> None:
        if not endpoint.authenticate(request):
            await out.respond(endpoint.error(None, request, ErrorSpec("auth", 401)))
            return
        body = models_body(state.model)
        await out.respond(json_response(200, body, JSON, endpoint.request_headers()))

    return [
        route("POST", _DEPLOYMENT.pattern, serve),
        route("POST", "/openai/v1/chat/completions", serve),
        route("GET", "/openai/v1/models|/openai/models", models),
    ]
