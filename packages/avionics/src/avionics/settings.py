"""Settings: one typed tree built from a TOML file, `AVIONICS_*` environment variables and kwargs.

Precedence, highest first: keyword arguments > environment (`AVIONICS_` prefix, `__` between
levels, e.g. `AVIONICS_AGENTS__PLANNER__PROFILE=fast`) > the TOML file > embedded defaults.
The file is the one given to `AvionicsSettings.from_file(path)`, else `$AVIONICS_CONFIG`, else
`./avionics.toml` when it exists. With no file and no environment, one `local` llama-server
provider at http://127.0.0.1:8080 and a `default` profile pointing at it make
`AvionicsSettings()` work offline.

Names are parsed here, once: provider kinds become `airframe.BackendKind`, error categories
`airframe.ErrorCategory`. Every problem found while loading is raised as one `SettingsError` whose
issues name the file, the key path and the fix. API keys are read from the environment on first use
(`ProviderSettings.api_key_value`), so a local-only setup needs no key at all; keys are `SecretStr`
and never appear in `repr`, `str` or error text.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from dataclasses import replace
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import pydantic_settings
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PositiveInt,
    PrivateAttr,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from airframe import BackendKind, EndpointSpec, ErrorCategory, RetryPolicy, Timeouts

from ._settings_errors import (
    SettingsError,
    SettingsIssue,
    _AliasCycleError,
    _case_collisions,
    _key,
    _settings_error,
    _unknown,
    _with_env,
    did_you_mean,
)

__all__ = [
    "AgentSettings",
    "AvionicsSettings",
    "FallbackSettings",
    "GatewaySettings",
    "ModelCapabilities",
    "ObservabilitySettings",
    "PriceOverride",
    "ProfileSettings",
    "ProviderSettings",
    "RequestParams",
    "RetrySettings",
    "SettingsError",
    "SettingsIssue",
    "StateSettings",
    "TimeoutSettings",
    "get_settings",
    "reload_settings",
    "settings_reference_markdown",
]

CONFIG_ENV_VAR = "AVIONICS_CONFIG"
DEFAULT_CONFIG_FILE = "avionics.toml"

# The only per-kind tables in avionics. Everything else asks the parsed `ProviderSettings`.
_DEFAULT_BASE_URLS: dict[BackendKind, str] = {
    BackendKind.OPENAI: "https://api.openai.com/v1",
    BackendKind.ANTHROPIC: "https://api.anthropic.com",
}
_DEFAULT_KEY_ENVS: dict[BackendKind, str] = {
    BackendKind.OPENAI: "OPENAI_API_KEY",
    BackendKind.ANTHROPIC: "ANTHROPIC_API_KEY",
    BackendKind.AZURE_OPENAI: "AZURE_OPENAI_API_KEY",
}
_KIND_ALIASES: dict[str, BackendKind] = {
    "llamaserver": BackendKind.LLAMA_SERVER,
    "llama-server": BackendKind.LLAMA_SERVER,
    "azure": BackendKind.AZURE_OPENAI,
}


# ------------------------------------------------------------------------------------- sections


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class TimeoutSettings(_Section):
    """Per-attempt timeouts in seconds, mapped to `airframe.Timeouts`."""

    connect: float = Field(default=5.0, gt=0)
    """Seconds to open a connection."""
    read: float = Field(default=120.0, gt=0)
    """Longest gap between two received bytes (not the whole response)."""
    write: float = Field(default=30.0, gt=0)
    """Seconds to send the request."""
    pool: float = Field(default=30.0, gt=0)
    """Seconds to wait for a free pooled connection."""
    total: float | None = Field(default=None, gt=0)
    """Bound on a whole call including retries; unset means no bound."""
    first_token: float | None = Field(default=None, gt=0)
    """Bound on the wait for the first streamed event of an attempt."""

    def to_airframe(self) -> Timeouts:
        return Timeouts(**self.model_dump())


class RetrySettings(_Section):
    """airframe's retry policy for one provider (airframe retries; avionics falls back)."""

    max_retries: int = Field(default=3, ge=0)
    """Retries after the first attempt."""
    initial_delay: float = Field(default=0.5, ge=0)
    """Backoff before the first retry, in seconds; doubles each retry."""
    max_delay: float = Field(default=8.0, ge=0)
    """Cap on one backoff delay, in seconds."""
    max_retry_after: float = Field(default=120.0, ge=0)
    """Longest server-requested delay honoured; above it the error surfaces at once."""

    def to_airframe(self) -> RetryPolicy:
        return RetryPolicy(**self.model_dump())


class ProviderSettings(_Section):
    """One backend service: where it is, how to authenticate, its limits."""

    kind: BackendKind
    """Wire dialect. OpenAI-compatible services (Groq, vLLM, LM Studio, ...) are `openai`
    + `base_url`."""
    base_url: str | None = Field(default=None, json_schema_extra={"doc_default": "per kind"})
    """One node, written as for the official SDK (OpenAI includes `/v1`). Unset: openai ->
    https://api.openai.com/v1, anthropic -> https://api.anthropic.com."""
    nodes: list[str] = []
    """Several nodes of one service (instead of `base_url`); the gateway picks a healthy one."""
    api_key_env: str | None = Field(default=None, json_schema_extra={"doc_default": "per kind"})
    """Environment variable holding the key, read at first use. Default OPENAI_API_KEY,
    ANTHROPIC_API_KEY, AZURE_OPENAI_API_KEY; none for local kinds; `""` means no key."""
    api_key: SecretStr | None = None
    """The key itself (discouraged: prefer `api_key_env`). Never shown in repr or errors."""
    api_type: Literal["native", "openai"] = "native"
    """llama_server only: its native API or its OpenAI-compatible one."""
    api_version: str | None = None
    """azure_openai: the `api-version` query parameter."""
    deployment: str | None = None
    """azure_openai: the deployment name."""
    default_model: str | None = None
    """Model used when a profile names none, and for gateway-level fallback to this provider."""
    context_window: PositiveInt | None = None
    """Default context window (tokens) of this provider's models when nothing better is known."""
    rpm: PositiveInt | None = None
    """Requests per minute allowed by the local limiter."""
    tpm: PositiveInt | None = None
    """Tokens per minute allowed by the local limiter."""
    max_concurrency: PositiveInt | None = None
    """Requests in flight at once."""
    timeouts: TimeoutSettings = TimeoutSettings()
    """See [providers.NAME.timeouts]."""
    retry: RetrySettings = RetrySettings()
    """See [providers.NAME.retry]."""
    headers: dict[str, str] = {}
    """Extra HTTP headers sent with every request."""
    in_process: bool = False
    """Run llama.cpp in this process (the `llamacpp` extra) instead of over HTTP."""
    model_path: str | None = None
    """GGUF file for `in_process = true`."""

    @field_validator("kind", mode="before")
    @classmethod
    def _parse_kind(cls, value: Any) -> Any:
        if isinstance(value, BackendKind) or not isinstance(value, str):
            return value
        text = value.strip().lower()
        if text in _KIND_ALIASES:
            return _KIND_ALIASES[text]
        valid = [k.value for k in BackendKind]
        if text not in valid:
            raise SettingsError(
                SettingsIssue(
                    "",
                    f"unknown kind {value!r}{did_you_mean(text, valid)}",
                    f"use one of: {', '.join(valid)}",
                )
            )
        return text

    @model_validator(mode="before")
    @classmethod
    def _default_key_env(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("api_key_env") == "":
            data["api_key_env"] = None
        elif "api_key_env" not in data:
            kind = data.get("kind")
            text = kind.strip().lower() if isinstance(kind, str) else kind
            parsed = _KIND_ALIASES.get(text) if isinstance(text, str) else None
            if parsed is None and text in {k.value for k in BackendKind}:
                parsed = BackendKind(text)
            if parsed is not None and parsed in _DEFAULT_KEY_ENVS:
                data["api_key_env"] = _DEFAULT_KEY_ENVS[parsed]
        return data

    @model_validator(mode="after")
    def _check_urls(self) -> Self:
        issues: list[SettingsIssue] = []
        if self.base_url is not None and self.nodes:
            issues.append(
                SettingsIssue(
                    "base_url",
                    "both base_url and nodes are set",
                    "keep one: base_url for one node, nodes = [...] for several",
                )
            )
        elif self.in_process:
            if self.kind is not BackendKind.LLAMA_SERVER or not self.model_path:
                issues.append(
                    SettingsIssue(
                        "in_process",
                        "in_process needs kind = 'llama_server' and a model_path",
                        "set kind = 'llama_server' and model_path = '/path/to/model.gguf'",
                    )
                )
        elif not self.urls:
            issues.append(
                SettingsIssue(
                    "base_url",
                    f"kind {self.kind.value!r} has no default address and neither base_url "
                    "nor nodes is set",
                    "add base_url = 'http://host:port' (or nodes = [...])",
                )
            )
        for index, url in enumerate([self.base_url] if self.base_url else self.nodes):
            parts = urlsplit(url)
            key = "base_url" if self.base_url else f"nodes[{index}]"
            if parts.scheme not in ("http", "https") or not parts.netloc:
                issues.append(
                    SettingsIssue(
                        key,
                        f"{url!r} is not an absolute http(s) URL",
                        "write it as http://host:port",
                    )
                )
            elif parts.username or parts.password:
                issues.append(
                    SettingsIssue(key, "the URL carries credentials", "move the key to api_key_env")
                )
        if issues:
            raise SettingsError(issues)
        return self

    @property
    def urls(self) -> list[str]:
        """The node URLs: `nodes`, else `[base_url]`, else the kind's well-known address."""
        if self.nodes:
            return list(self.nodes)
        if self.base_url:
            return [self.base_url]
        if self.in_process:
            return []
        default = _DEFAULT_BASE_URLS.get(self.kind)
        return [default] if default else []

    @property
    def is_local(self) -> bool:
        """True when no API key is needed by default (llama_server, ollama)."""
        return self.kind not in _DEFAULT_KEY_ENVS

    def api_key_value(self, provider_name: str) -> str | None:
        """The API key, read now (not at load): `api_key`, else `$api_key_env`, else None.

        Raises `SettingsError` naming the provider, the variable and the fix when `api_key_env`
        names a variable that is unset or empty.
        """
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if not self.api_key_env:
            return None
        value = os.environ.get(self.api_key_env, "").strip()
        if value:
            return value
        raise SettingsError(
            SettingsIssue(
                f"providers.{provider_name}.api_key_env",
                f"provider {provider_name!r} ({self.kind.value}) needs an API key but the "
                f"environment variable {self.api_key_env} is not set",
                f"export {self.api_key_env}=<your key>, or point "
                f"providers.{provider_name}.api_key_env at the variable that holds it "
                '(api_key_env = "" when the server needs no key)',
            )
        )

    def endpoints(self, name: str) -> list[EndpointSpec]:
        """One `airframe.EndpointSpec` per node, named "NAME/host:port"; reads the key now."""
        key = self.api_key_value(name)
        timeouts, retry = self.timeouts.to_airframe(), self.retry.to_airframe()
        specs = []
        for url in self.urls:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            specs.append(
                EndpointSpec(
                    base_url=url,
                    backend_kind=self.kind,
                    name=f"{name}/{parts.hostname}:{port}",
                    api_key=key,
                    api_type=self.api_type,
                    api_version=self.api_version,
                    deployment=self.deployment,
                    headers=dict(self.headers),
                    timeouts=timeouts,
                    retry=retry,
                )
            )
        return specs


class RequestParams(_Section):
    """Request parameters shared by profiles and agents; unset ones are not sent."""

    temperature: float | None = Field(default=None, ge=0)
    """Sampling temperature."""
    max_tokens: PositiveInt | None = None
    """Upper bound on generated tokens."""
    top_p: float | None = Field(default=None, gt=0, le=1)
    """Nucleus sampling."""
    stop: list[str] | None = None
    """Stop sequences."""
    seed: int | None = None
    """Sampling seed, where the backend supports one."""
    extra_body: dict[str, Any] = {}
    """Backend-specific JSON fields merged into the request body (e.g. `top_k` for llama-server)."""

    def request_params(self) -> dict[str, Any]:
        """The set parameters, named as `airframe.InferenceRequest` keywords (`stop` a tuple)."""
        params: dict[str, Any] = {}
        for name in RequestParams.model_fields:
            value = getattr(self, name)
            if value is None or (name == "extra_body" and not value):
                continue
            params[name] = tuple(value) if name == "stop" else value
        return params


class ProfileSettings(RequestParams):
    """A named model choice: provider + model + request parameters."""

    provider: str
    """A key of [providers]."""
    model: str | None = None
    """Model id sent to the provider; unset means the provider's `default_model`."""


class AgentSettings(RequestParams):
    """Per-agent routing: a profile (or provider + model), parameters, fallbacks, budget."""

    profile: str | None = None
    """A key of [profiles]; unset (and no provider) means the `default` profile."""
    provider: str | None = None
    """Instead of a profile: a key of [providers] (with `model` or its `default_model`)."""
    model: str | None = None
    """Overrides the model of the profile or provider."""
    fallbacks: list[str] = []
    """Profile names tried in order after the agent's own route fails."""
    budget_usd: Decimal | None = Field(default=None, ge=0)
    """Spending limit in USD per `budget_period`."""
    budget_period: Literal["day", "month", "total"] = "day"
    """Window the budget applies to."""
    system: str | None = None
    """System prompt used when a call gives none."""


class PriceOverride(_Section):
    """USD per million tokens; wins over the bundled price data."""

    input: Decimal = Field(ge=0)
    """USD per million input tokens."""
    output: Decimal = Field(ge=0)
    """USD per million output tokens."""
    cache_read: Decimal | None = Field(default=None, ge=0)
    """USD per million input tokens read from a prompt cache."""
    cache_write: Decimal | None = Field(default=None, ge=0)
    """USD per million input tokens written to a prompt cache."""


class ModelCapabilities(_Section):
    """What a model can do, for what the price data lacks; unset means unknown."""

    context_window: PositiveInt | None = None
    """Context window in tokens."""
    vision: bool | None = None
    """Accepts images."""
    tools: bool | None = None
    """Supports tool calling."""
    json_schema: bool | None = None
    """Supports JSON-schema constrained output."""


class FallbackSettings(_Section):
    """When the gateway moves to the next route."""

    stop_on: list[ErrorCategory] = [ErrorCategory.BAD_REQUEST, ErrorCategory.CONTENT_FILTER]
    """Error categories that end the chain instead of falling back."""
    providers: list[str] = []
    """Provider names (each with its `default_model`) tried after every agent's own chain when
    `LLMGateway` is given no `fallback_providers`."""


class ObservabilitySettings(_Section):
    """Tracing, metrics and logs (used by `avionics.observability.configure()`)."""

    service_name: str = "avionics"
    """OpenTelemetry `service.name`."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP collector URL; unset means no export."""
    console: bool = False
    """Print spans to the console."""
    capture_content: bool = False
    """Record prompts and completions on spans (off by default)."""


class StateSettings(_Section):
    """Where shared state (rate limits, budgets, node health) lives."""

    backend: Literal["memory", "redis"] = "memory"
    """`memory` (one process) or `redis` (shared; the `redis` extra)."""
    redis_url: SecretStr | None = None
    """redis://host:6379/0 for backend = 'redis'; may hold a password, so it is secret."""
    fail_mode: Literal["closed", "open"] = "closed"
    """When Redis is unreachable: `closed` refuses calls (naming the URL); `open` falls back to
    per-process limits and budgets, with one warning per outage."""
    key_prefix: str = "avionics:"
    """Prefix of every Redis key."""

    @model_validator(mode="after")
    def _check_redis(self) -> Self:
        if self.backend == "redis" and self.redis_url is None:
            raise SettingsError(
                SettingsIssue(
                    "redis_url",
                    "backend = 'redis' needs redis_url",
                    "set redis_url = 'redis://...'",
                )
            )
        return self


class GatewaySettings(_Section):
    """LLMGateway behaviour."""

    rate_limit_max_wait: float = Field(default=30.0, ge=0)
    """Longest wait, in seconds, for a local rate-limit slot before `RateLimitedLocally`."""
    node_cooldown: float = Field(default=30.0, ge=0)
    """Seconds a failed node is skipped before it is tried again."""
    health_check_interval: float = Field(default=15.0, gt=0)
    """Seconds between health checks of cooled-down nodes."""


def _profile_tag(value: Any) -> str:
    return "alias" if isinstance(value, str) else "profile"


ProfileEntry = Annotated[
    Annotated[str, Tag("alias")] | Annotated[ProfileSettings, Tag("profile")],
    Discriminator(_profile_tag),
]
"""A profile table or a string alias naming another profile."""


def _embedded_providers() -> dict[str, ProviderSettings]:
    local = ProviderSettings(
        kind=BackendKind.LLAMA_SERVER, base_url="http://127.0.0.1:8080", default_model="default"
    )
    return {"local": local}


def _embedded_profiles() -> dict[str, ProfileEntry]:
    return {"default": ProfileSettings(provider="local")}


# ------------------------------------------------------------------------------------- the tree

_FILE_OVERRIDE: ContextVar[Path | None] = ContextVar("avionics_settings_file", default=None)
_ACTIVE_FILE: ContextVar[Path | None] = ContextVar("avionics_active_file", default=None)


def _config_file() -> Path | None:
    override = _FILE_OVERRIDE.get()
    if override is not None:
        return override
    env_path = os.environ.get(CONFIG_ENV_VAR, "").strip()
    if env_path:
        path = Path(env_path).expanduser()
        if not path.is_file():
            raise SettingsError(
                SettingsIssue(
                    CONFIG_ENV_VAR,
                    f"settings file {path} does not exist",
                    f"point {CONFIG_ENV_VAR} at an existing TOML file, or unset it",
                )
            )
        return path.resolve()
    default = Path(DEFAULT_CONFIG_FILE)
    return default.resolve() if default.is_file() else None


class AvionicsSettings(BaseSettings):
    """All avionics settings; each key below is a TOML table.

    Reference: docs/settings.md, generated by `settings_reference_markdown()`.
    """

    model_config = SettingsConfigDict(
        env_prefix="AVIONICS_",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    providers: dict[str, ProviderSettings] = Field(
        default_factory=_embedded_providers,
        json_schema_extra={"doc_default": "`local`: llama_server at http://127.0.0.1:8080"},
    )
    """Backend services by name. See [providers.NAME]."""
    profiles: dict[str, ProfileEntry] = Field(
        default_factory=_embedded_profiles,
        json_schema_extra={
            "doc_default": "`default` -> provider `local` (only if providers unset)"
        },
    )
    """Model choices by name: a table, or a string naming another profile (an alias)."""
    agents: dict[str, AgentSettings] = {}
    """Per-agent routing by agent name. An agent without an entry uses the `default` profile."""
    pricing: dict[str, PriceOverride] = {}
    """Price overrides keyed by "provider/model" or "model"."""
    capabilities: dict[str, ModelCapabilities] = {}
    """Model capabilities keyed by "provider/model" or "model"."""
    fallback: FallbackSettings = FallbackSettings()
    """See [fallback]."""
    observability: ObservabilitySettings = ObservabilitySettings()
    """See [observability]."""
    state: StateSettings = StateSettings()
    """See [state]."""
    gateway: GatewaySettings = GatewaySettings()
    """See [gateway]."""

    _source_file: Path | None = PrivateAttr(default=None)

    def __init__(self, **values: Any) -> None:
        path = _config_file()
        token = _ACTIVE_FILE.set(path)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _settings_error(exc, path) from None
        except tomllib.TOMLDecodeError as exc:
            issue = SettingsIssue("", f"not valid TOML ({exc})", "fix the TOML syntax")
            raise SettingsError(issue, source=path) from None
        except pydantic_settings.SettingsError as exc:
            issue = SettingsIssue("", str(exc), "env values of lists and tables must be JSON")
            raise SettingsError(_with_env(issue), source=path) from None
        finally:
            _ACTIVE_FILE.reset(token)
        self._source_file = path

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _ACTIVE_FILE.get()
        if path is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> Self:
        """Load this TOML file (instead of $AVIONICS_CONFIG / ./avionics.toml); env still wins."""
        file = Path(path).expanduser()
        if not file.is_file():
            raise SettingsError(
                SettingsIssue("", f"settings file {file} does not exist", "pass an existing file")
            )
        token = _FILE_OVERRIDE.set(file.resolve())
        try:
            return cls(**overrides)
        finally:
            _FILE_OVERRIDE.reset(token)

    @property
    def source_file(self) -> Path | None:
        """The TOML file these settings were loaded from, if any."""
        return self._source_file

    @model_validator(mode="before")
    @classmethod
    def _embedded_default_profile(cls, data: Any) -> Any:
        # The embedded `default` profile points at the embedded `local` provider: drop it as soon
        # as the user defines their own providers.
        if isinstance(data, dict) and "providers" in data and "profiles" not in data:
            return {**data, "profiles": {}}
        return data

    def provider(self, name: str) -> ProviderSettings:
        """The provider called `name`, or a `SettingsError` listing the defined ones."""
        try:
            return self.providers[name]
        except KeyError:
            raise SettingsError(_unknown("provider", name, self.providers, "")) from None

    def profile_chain(self, name: str, *, key: str = "") -> list[str]:
        """`[name, alias target, ..., concrete profile]`; `SettingsError` on unknown or cycle."""
        chain = [name]
        while True:
            entry = self.profiles.get(chain[-1])
            if entry is None:
                where = key if len(chain) == 1 else f"profiles.{_key(chain[-2])}"
                raise SettingsError(_unknown("profile", chain[-1], self.profiles, where))
            if not isinstance(entry, str):
                return chain
            if entry in chain:
                members = chain[chain.index(entry) :]
                issue = SettingsIssue(
                    f"profiles.{_key(chain[-1])}",
                    f"profile alias cycle: {' -> '.join([*members, entry])}",
                    "point one of these aliases at a profile table (provider + model)",
                )
                raise _AliasCycleError(issue, frozenset(members))
            chain.append(entry)

    def concrete_profile(self, name: str, *, key: str = "") -> tuple[str, ProfileSettings]:
        """Follow aliases from `name` to the profile table; `SettingsError` if there is none."""
        concrete = self.profile_chain(name, key=key)[-1]
        entry = self.profiles[concrete]
        assert not isinstance(entry, str)
        return concrete, entry

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        issues: list[SettingsIssue] = []
        for section in ("providers", "profiles", "agents"):
            issues += _case_collisions(section, getattr(self, section))
        cycles: set[frozenset[str]] = set()
        for name, entry in self.profiles.items():
            if isinstance(entry, str):
                try:
                    self.profile_chain(name)
                except _AliasCycleError as exc:
                    if exc.members not in cycles:
                        issues += exc.issues
                        cycles.add(exc.members)
                except SettingsError as exc:
                    issues += exc.issues
                continue
            where = f"profiles.{_key(name)}"
            issues += self._check_model(
                where + ".provider", where + ".model", entry.provider, entry.model
            )
        for name, agent in self.agents.items():
            issues += self._check_agent(name, agent)
        for index, provider in enumerate(self.fallback.providers):
            where = f"fallback.providers[{index}]"
            issues += self._check_model(where, where, provider, None)
        if issues:
            raise SettingsError(list(dict.fromkeys(issues)))
        return self

    def _check_model(
        self, provider_key: str, model_key: str, provider: str, model: str | None
    ) -> list[SettingsIssue]:
        settings = self.providers.get(provider)
        if settings is None:
            return [_unknown("provider", provider, self.providers, provider_key)]
        if model is None and settings.default_model is None:
            return [
                SettingsIssue(
                    model_key,
                    f"no model given and provider {provider!r} has no default_model",
                    f"set a model, or providers.{_key(provider)}.default_model",
                )
            ]
        return []

    def _check_agent(self, name: str, agent: AgentSettings) -> list[SettingsIssue]:
        key = f"agents.{_key(name)}"
        if agent.profile is not None and agent.provider is not None:
            return [
                SettingsIssue(
                    key,
                    "both profile and provider are set",
                    "keep one: profile, or provider + model",
                )
            ]
        issues: list[SettingsIssue] = []
        own: str | None = None
        if agent.provider is not None:
            issues += self._check_model(
                f"{key}.provider", f"{key}.model", agent.provider, agent.model
            )
        else:
            base = agent.profile or "default"
            where = f"{key}.profile" if agent.profile else key
            try:
                own = self.concrete_profile(base, key=where)[0]
            except SettingsError as exc:
                issue = exc.issues[0]
                if agent.profile is None and issue.key == key:
                    issue = replace(
                        issue,
                        problem=f"agent {name!r} names no profile and no 'default' profile exists",
                        fix=f"set {key}.profile, or define profiles.default",
                    )
                if issue.key == where:  # problems further down are reported under [profiles]
                    issues.append(issue)
        # An env variable that moves the agent onto its fallback is an operational switch, not a
        # mistake in the file: the chain simply drops the duplicate.
        switched = _with_env(SettingsIssue(f"{key}.profile", "")).env_var is not None
        for index, fallback in enumerate(agent.fallbacks):
            fkey = f"{key}.fallbacks[{index}]"
            try:
                target = self.concrete_profile(fallback, key=fkey)[0]
            except SettingsError as exc:
                issues += exc.issues[:1] if exc.issues[0].key == fkey else []
                continue
            if own is not None and target == own and agent.model is None and not switched:
                issues.append(
                    SettingsIssue(
                        fkey,
                        f"fallback {fallback!r} is the agent's own profile ({own!r})",
                        "remove it, or name a profile on another provider or model",
                    )
                )
        return issues


# ------------------------------------------------------------------------------------ accessors


@lru_cache(maxsize=1)
def get_settings() -> AvionicsSettings:
    """The process-wide settings, loaded once; `reload_settings()` drops the cache."""
    return AvionicsSettings()


def reload_settings() -> AvionicsSettings:
    """Drop the cached settings and load them again (after changing env vars or the file)."""
    get_settings.cache_clear()
    return get_settings()


# ------------------------------------------------------------------------------------ reference


def settings_reference_markdown() -> str:
    """The settings reference (`docs/settings.md`), generated from these models."""
    from .settings_reference import render_reference

    return render_reference()
