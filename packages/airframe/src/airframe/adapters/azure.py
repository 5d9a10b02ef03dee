"""Azure OpenAI: OpenAI Chat Completions behind Azure's URLs, auth, versions and content filters.

`base_url` is the resource root, `https://NAME.openai.azure.com` (or a `.../openai/v1` URL).
Only what differs from `OpenAIAdapter` lives here:

- URL. The classic form is `POST {root}/openai/deployments/{deployment}/chat/completions
  ?api-version=...`: the deployment is `endpoint.deployment`, else the request's `model`; the
  api-version is `endpoint.api_version`, else `DEFAULT_API_VERSION` (a GA version). The newer v1
  form, `POST {root}/openai/v1/chat/completions` with the deployment name (chosen the same way)
  as `model` in the body and no dated api-version, is used when `endpoint.api_version == "v1"`
  or `base_url` already ends with `/openai/v1` (there `api_version` may be "preview" or
  "latest", sent as is). A request that names neither a deployment nor a model is refused
  with `BadRequestError` before any I/O.
- Auth, one rule: an `authorization` entry in `endpoint.headers` (any case) means Microsoft
  Entra ID and is sent as given, with no `api-key` header; else an `api_key` that starts with
  `"Bearer "` is an Entra ID token sent as `authorization` (it stays out of `repr` like any
  key, and an echo of it is redacted from errors); else `api_key` goes in the `api-key` header.
- Versions. Dated api-versions before 2024-09-01 predate `max_completion_tokens` and
  `stream_options`: they get `max_tokens` and no `stream_options` (no usage in streams). Newer
  ones, and v1, get `max_completion_tokens` (required by reasoning models) and
  `stream_options.include_usage`.
- Content filtering. `prompt_filter_results` (the first stream chunk, with empty `choices`, or a
  top-level field of a whole response) and the latest `content_filter_results` of the answer
  are kept in `InferenceResult.raw`. Annotation-only chunks (for instance after
  `finish_reason`, in asynchronous filter mode) add nothing else. `finish_reason:
  "content_filter"` is `FinishReason.CONTENT_FILTER`; a 400 with `code: "content_filter"` or
  `innererror.code: "ResponsibleAIPolicyViolation"` is a `ContentFilterError`.
- Errors. Azure's ordinary 429 text ("exceeded token rate limit ... Please retry after N
  seconds. Please go here: https://aka.ms/oai/quotaincrease ...") is a rate limit, not a quota
  error: the quota words are looked for outside URLs. Its `retry-after` can be a day; above
  `RetryPolicy.max_retry_after` the transport surfaces it at once. `DeploymentNotFound` (404) is
  not_found, 401 is auth.

Wire reference: Azure OpenAI inference REST API (2024-10-21 GA), the v1 API lifecycle page, the
content filtering and content streaming concept pages, and openai-python's `lib/azure.py`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from .._config import BackendKind, EndpointSpec
from .._errors import BadRequestError, ErrorCategory
from .._types import InferenceRequest, InferenceResult, InferenceStreamEvent
from ._base import NO_EVENTS, ErrorInfo, StreamParser, WireRequest, error_fields, error_message
from .openai import OpenAIAdapter, OpenAIStreamParser

__all__ = ["DEFAULT_API_VERSION", "AzureOpenAIAdapter", "AzureOpenAIStreamParser"]

DEFAULT_API_VERSION = "2024-10-21"
"""The api-version used when `EndpointSpec.api_version` is None (the classic URL form)."""

_V1_SUFFIX = "/openai/v1"
_MODERN_SINCE = "2024-09-01"  # first api-version with max_completion_tokens and stream_options
_URL = re.compile(r"https?://\S+")
_QUOTA_WORDS = ("quota", "billing", "spend limit", "spending limit", "credit")
_FILTER_CODES = ("content_filter", "ResponsibleAIPolicyViolation")


def _is_v1(endpoint: EndpointSpec) -> bool:
    return endpoint.api_version == "v1" or endpoint.base_url.endswith(_V1_SUFFIX)


def _is_modern(endpoint: EndpointSpec) -> bool:
    """Whether the API accepts `max_completion_tokens` and `stream_options`."""
    if _is_v1(endpoint):
        return True
    version = endpoint.api_version or DEFAULT_API_VERSION
    if version in ("preview", "latest"):
        return True
    return version[:10] >= _MODERN_SINCE


def _has_header(headers: Any, name: str) -> bool:
    return any(key.lower() == name for key in headers)


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI Chat Completions over SSE. `base_url` is the resource root."""

    kind = BackendKind.AZURE_OPENAI
    request_id_headers: ClassVar[tuple[str, ...]] = (
        "apim-request-id",
        "x-request-id",
        "x-ms-request-id",
    )

    def auth_headers(self, endpoint: EndpointSpec) -> dict[str, str]:
        if _has_header(endpoint.headers, "authorization"):
            return {}
        key = endpoint.api_key
        if not key:
            return {}
        if key[:7].lower() == "bearer ":
            return {"authorization": key}
        return {"api-key": key}

    def _max_tokens_field(self, endpoint: EndpointSpec) -> str:
        return "max_completion_tokens" if _is_modern(endpoint) else "max_tokens"

    # -- URLs ----------------------------------------------------------------------------------

    def _prefix(self, endpoint: EndpointSpec) -> str:
        """The path from `base_url` to the v1 API root ("" when base_url already ends there)."""
        return "" if endpoint.base_url.endswith(_V1_SUFFIX) else _V1_SUFFIX

    def _params(self, endpoint: EndpointSpec) -> dict[str, str] | None:
        version = endpoint.api_version
        if _is_v1(endpoint):
            # v1 takes no dated version; "preview"/"latest" select preview features.
            return {"api-version": version} if version in ("preview", "latest") else None
        return {"api-version": version or DEFAULT_API_VERSION}

    def build_chat(
        self, endpoint: EndpointSpec, request: InferenceRequest, *, stream: bool
    ) -> WireRequest:
        body = self.chat_body(endpoint, request, stream=stream)
        if not _is_modern(endpoint) and "stream_options" not in request.extra_body:
            body.pop("stream_options", None)
        deployment = endpoint.deployment or request.model
        if not deployment:
            raise self._no_deployment(endpoint)
        if _is_v1(endpoint):
            if "model" not in request.extra_body:
                body["model"] = deployment
            path = self._prefix(endpoint) + "/chat/completions"
        else:
            path = f"/openai/deployments/{quote(deployment, safe='')}/chat/completions"
        return WireRequest("POST", path, body, params=self._params(endpoint))

    def _no_deployment(self, endpoint: EndpointSpec) -> BadRequestError:
        return BadRequestError(
            "Azure OpenAI needs a deployment name: set EndpointSpec(deployment=...) or pass "
            "InferenceRequest(model=<deployment name>)",
            backend=self.kind.value,
            endpoint=endpoint.name,
        )

    def models_request(self, endpoint: EndpointSpec) -> WireRequest:
        if _is_v1(endpoint):
            return WireRequest(
                "GET", self._prefix(endpoint) + "/models", params=self._params(endpoint)
            )
        return WireRequest("GET", "/openai/models", params=self._params(endpoint))

    # -- responses -----------------------------------------------------------------------------

    def parse_chat(self, endpoint: EndpointSpec, payload: Any) -> InferenceResult:
        result = super().parse_chat(endpoint, payload)
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if choices and isinstance(choices[0], dict):
            found = choices[0].get("content_filter_results")
            if found:
                result.raw = {**(result.raw or {}), "content_filter_results": found}
        return result

    def stream_parser(self, endpoint: EndpointSpec, request: InferenceRequest) -> StreamParser:
        return AzureOpenAIStreamParser(self, endpoint)

    def classify_error(self, status: int | None, payload: Any, text: str) -> ErrorInfo:
        err = error_fields(payload)
        inner = err.get("innererror") or err.get("inner_error")
        inner_code = inner.get("code") if isinstance(inner, dict) else None
        if err.get("code") in _FILTER_CODES or inner_code in _FILTER_CODES:
            return ErrorInfo(ErrorCategory.CONTENT_FILTER, error_message(payload, text, status))
        return super().classify_error(status, payload, text)


class AzureOpenAIStreamParser(OpenAIStreamParser):
    """OpenAI chunks plus Azure's content-filter annotations.

    Chunks with no delta, no finish reason and no usage (the leading `prompt_filter_results`
    chunk, whose `id` and `model` are empty, and annotation-only chunks) are recorded and not
    passed on, so the response id and model come from the first real chunk.
    """

    __slots__ = ("_content_filter", "_prompt_filter")

    def __init__(self, adapter: AzureOpenAIAdapter, endpoint: EndpointSpec) -> None:
        super().__init__(adapter, endpoint)
        self._prompt_filter: list[Any] = []
        self._content_filter: Any = None

    def feed_chunk(self, chunk: dict[str, Any]) -> Sequence[InferenceStreamEvent]:
        prompt = chunk.get("prompt_filter_results")
        if isinstance(prompt, list):
            self._prompt_filter.extend(prompt)
        live = False
        for choice in chunk.get("choices") or ():
            if choice.get("delta") or choice.get("finish_reason"):
                live = True
            if choice.get("index", 0) == 0 and choice.get("content_filter_results"):
                self._content_filter = choice["content_filter_results"]
        if not live and not chunk.get("usage"):
            return NO_EVENTS
        return super().feed_chunk(chunk)

    def result(self) -> InferenceResult:
        result = super().result()
        extra: dict[str, Any] = {}
        if self._prompt_filter:
            extra["prompt_filter_results"] = list(self._prompt_filter)
        if self._content_filter is not None:
            extra["content_filter_results"] = self._content_filter
        if extra:
            result.raw = {**(result.raw or {}), **extra}
        return result
