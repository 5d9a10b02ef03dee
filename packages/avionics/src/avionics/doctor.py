"""`avionics doctor`: is everything the settings name there and answering?

    report = await diagnose(settings)
    for check in report.checks: print(check.status, check.subject, check.detail, check.fix)

One `Check` per thing looked at: the settings file, each provider's API key (the variable's name
only, never its value), each node's health, Ollama models the profiles name, the in-process model
file, Redis when shared state is configured, the OpenTelemetry SDK when export is configured.
Every problem carries the fix. Nothing here raises for an unhealthy backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from airframe import BackendKind, EndpointSpec, HealthStatus, Timeouts, get_adapter

from .settings import AvionicsSettings, ProviderSettings, SettingsError

__all__ = ["Check", "DoctorReport", "diagnose"]

Status = Literal["ok", "warn", "fail"]

_PROBE_TIMEOUTS = Timeouts(connect=3.0, read=5.0, write=5.0, pool=5.0)


@dataclass(frozen=True, slots=True)
class Check:
    """One finding. `fix` says what to do when `status` is not "ok"."""

    subject: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class DoctorReport:
    """Every check, in order. `ok` when none failed (warnings allowed)."""

    source: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.status != "ok"]

    def render(self) -> str:
        """The report as text: one line per check, the fix below each problem, a verdict."""
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
        lines = []
        for check in self.checks:
            lines.append(f"{marks[check.status]}  {check.subject}: {check.detail}")
            if check.fix and check.status != "ok":
                lines.append(f"      fix: {check.fix}")
        failed = sum(c.status == "fail" for c in self.checks)
        warned = sum(c.status == "warn" for c in self.checks)
        verdict = "all good" if not failed else f"{failed} problem(s)"
        return "\n".join([*lines, "", f"{verdict}, {warned} warning(s)"]) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "settings": self.source,
            "checks": [c.to_dict() for c in self.checks],
        }


def settings_failure(error: SettingsError) -> DoctorReport:
    """The report when the settings themselves do not load: one failed check per issue."""
    report = DoctorReport(str(error.source) if error.source else "settings")
    for issue in error.issues:
        key = issue.key or "settings"
        report.checks.append(Check(key, "fail", issue.problem, issue.fix))
    return report


async def diagnose(settings: AvionicsSettings) -> DoctorReport:
    """Check every provider, node, key and shared service the settings name."""
    source = str(settings.source_file) if settings.source_file else "embedded defaults + env"
    report = DoctorReport(source)
    report.checks.append(Check("settings", "ok", f"loaded from {source}"))
    per_provider = await asyncio.gather(
        *(_provider(name, ps, settings) for name, ps in settings.providers.items())
    )
    for checks in per_provider:
        report.checks.extend(checks)
    broken = {
        name
        for name, checks in zip(settings.providers, per_provider, strict=True)
        if any(c.status == "fail" for c in checks)
    }
    report.checks.extend(_agents(settings, broken))
    report.checks.extend(await _redis(settings))
    report.checks.extend(_otel(settings))
    return report


# ----------------------------------------------------------------------------------- providers


async def _provider(name: str, ps: ProviderSettings, settings: AvionicsSettings) -> list[Check]:
    subject = f"providers.{name}"
    if ps.in_process:
        return [_in_process(subject, ps)]
    key_check, key_ok = _key(subject, name, ps)
    checks = [key_check] if key_check is not None else []
    if not key_ok:
        checks.append(
            Check(
                subject,
                "warn",
                f"{ps.kind.value}: nodes not probed without the key",
                "set the key, then run avionics doctor again",
            )
        )
        return checks
    endpoints = [dataclasses.replace(e, timeouts=_PROBE_TIMEOUTS) for e in ps.endpoints(name)]
    adapter = get_adapter(ps.kind)
    statuses = await asyncio.gather(*(adapter.health_check(e) for e in endpoints))
    for endpoint, status in zip(endpoints, statuses, strict=True):
        checks.append(_node(subject, name, ps, endpoint, status))
    healthy = [e for e, s in zip(endpoints, statuses, strict=True) if s.ok]
    if ps.kind is BackendKind.OLLAMA and healthy:
        checks.extend(await _ollama_models(subject, name, healthy[0], _models_of(name, settings)))
    return checks


def _key(subject: str, name: str, ps: ProviderSettings) -> tuple[Check | None, bool]:
    """The key check (names only) and whether the provider can be called."""
    if ps.api_key is not None:
        return Check(
            f"{subject}.api_key",
            "warn",
            "the key is written in the settings file",
            f"move it to an environment variable: providers.{name}.api_key_env",
        ), True
    if not ps.api_key_env:
        return None, True
    import os

    if os.environ.get(ps.api_key_env, "").strip():
        return Check(f"{subject}.api_key_env", "ok", f"{ps.api_key_env} is set"), True
    return (
        Check(
            f"{subject}.api_key_env",
            "fail",
            f"{ps.api_key_env} is not set ({ps.kind.value} needs a key)",
            f"export {ps.api_key_env}=<your key>, or set providers.{name}.api_key_env to the "
            'variable holding it (api_key_env = "" when the server needs none)',
        ),
        False,
    )


def _node(
    subject: str, name: str, ps: ProviderSettings, endpoint: EndpointSpec, status: HealthStatus
) -> Check:
    where = f"{subject} node {endpoint.base_url}"
    took = f" in {status.latency_ms:.0f} ms" if status.latency_ms is not None else ""
    detail = " ".join(status.detail.split())
    if status.state == "ok":
        return Check(where, "ok", f"{ps.kind.value} answers{took}")
    if status.state == "loading":
        return Check(
            where,
            "warn",
            f"up, still loading its model{took}",
            "wait for the model to load; the gateway skips it meanwhile",
        )
    if status.state == "down":
        key = "nodes" if ps.nodes else "base_url"
        return Check(
            where,
            "fail",
            f"unreachable ({detail})",
            f"start the server, or fix providers.{name}.{key}",
        )
    return Check(where, "fail", f"answers with an error: {detail}", _error_fix(name, ps, detail))


def _error_fix(name: str, ps: ProviderSettings, detail: str) -> str:
    lowered = detail.lower()
    if any(w in lowered for w in ("401", "403", "key", "auth", "unauthorized", "permission")):
        env = ps.api_key_env or f"providers.{name}.api_key_env"
        return f"check the API key in {env}"
    if "404" in lowered or "not found" in lowered:
        return f"check providers.{name}.base_url (OpenAI-compatible URLs end in /v1)"
    return f"check the server at providers.{name} and its logs"


def _models_of(provider: str, settings: AvionicsSettings) -> list[str]:
    """Models the profiles, agents and default_model name on this provider."""
    names: list[str] = []
    ps = settings.providers[provider]
    if ps.default_model:
        names.append(ps.default_model)
    names += [
        entry.model
        for entry in settings.profiles.values()
        if not isinstance(entry, str) and entry.provider == provider and entry.model
    ]
    names += [
        agent.model
        for agent in settings.agents.values()
        if agent.provider == provider and agent.model
    ]
    return list(dict.fromkeys(names))


async def _ollama_models(
    subject: str, name: str, endpoint: EndpointSpec, wanted: list[str]
) -> list[Check]:
    from airframe import AirframeError

    try:
        available = await get_adapter(BackendKind.OLLAMA).list_models(endpoint)
    except AirframeError as exc:
        return [Check(f"{subject} models", "warn", f"cannot list models: {exc}", "")]
    have = set(available) | {m.removesuffix(":latest") for m in available}
    checks = []
    for model in wanted:
        if model in have:
            checks.append(Check(f"{subject} model {model}", "ok", "pulled"))
        else:
            checks.append(
                Check(
                    f"{subject} model {model}",
                    "fail",
                    "not pulled on this Ollama server",
                    f"avionics pull {model} --provider {name}",
                )
            )
    return checks


def _in_process(subject: str, ps: ProviderSettings) -> Check:
    if importlib.util.find_spec("llama_cpp") is None:
        return Check(
            subject,
            "fail",
            "in_process needs llama-cpp-python",
            "pip install 'jeeves-avionics[llamacpp]'",
        )
    path = Path(ps.model_path or "").expanduser()
    if not path.is_file():
        return Check(
            subject, "fail", f"model file {path} does not exist", "point model_path at a GGUF file"
        )
    return Check(subject, "ok", f"in-process llama.cpp, model {path.name}")


def _agents(settings: AvionicsSettings, broken: set[str]) -> list[Check]:
    """What the provider findings mean for each agent's chain."""
    from .routing import fallback_chain, routing_table

    checks = []
    for row in routing_table(settings):
        agent = row["agent"]
        chain = fallback_chain(settings, agent)
        working = [r for r in chain if r.provider not in broken]
        subject = f"agents.{agent}"
        if not working:
            names = ", ".join(dict.fromkeys(r.provider for r in chain))
            checks.append(
                Check(
                    subject,
                    "fail",
                    f"no route can work now (providers: {names})",
                    "fix the providers above, or add a fallback on a working provider",
                )
            )
        elif working[0] is not chain[0]:
            first = working[0]
            checks.append(
                Check(
                    subject,
                    "warn",
                    f"its own route ({chain[0].provider}) is failing: calls will fall back "
                    f"to {first.provider}/{first.model}",
                    f"fix provider {chain[0].provider!r}",
                )
            )
        else:
            checks.append(Check(subject, "ok", f"{chain[0].provider}/{chain[0].model}"))
    return checks


# ------------------------------------------------------------------------------ shared services


def redact_url(url: str) -> str:
    """The URL without its password (Redis URLs may carry one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


async def _redis(settings: AvionicsSettings) -> list[Check]:
    state = settings.state
    if state.backend != "redis" or state.redis_url is None:
        return []
    url = state.redis_url.get_secret_value()
    shown = redact_url(url)
    try:
        import redis.asyncio as redis_asyncio
    except ImportError:
        return [
            Check(
                "state.redis_url",
                "fail",
                "the redis client is not installed",
                "pip install 'jeeves-avionics[redis]'",
            )
        ]
    client = redis_asyncio.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
    except Exception as exc:  # any failure to reach Redis is the finding
        reason = " ".join(str(exc).replace(url, shown).split())
        mode = "refuses calls" if state.fail_mode == "closed" else "runs calls unchecked"
        return [
            Check(
                "state.redis_url",
                "fail",
                f"Redis at {shown} is unreachable ({reason}); with fail_mode = "
                f"{state.fail_mode!r} the gateway {mode}",
                "start Redis, or fix state.redis_url (or set state.backend = 'memory')",
            )
        ]
    finally:
        await client.aclose()
    return [Check("state.redis_url", "ok", f"Redis at {shown} answers PING")]


def _otel(settings: AvionicsSettings) -> list[Check]:
    obs = settings.observability
    if not (obs.otlp_endpoint or obs.console):
        return []
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        return [
            Check(
                "observability",
                "fail",
                "export is configured but the SDK is missing",
                "pip install 'jeeves-avionics[otel]'",
            )
        ]
    where = obs.otlp_endpoint or "the console"
    return [Check("observability", "ok", f"spans and metrics export to {where}")]
