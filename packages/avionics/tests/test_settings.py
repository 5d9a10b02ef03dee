"""Settings: sources and precedence, every section, validation messages, lazy keys, the docs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from airframe import BackendKind, ErrorCategory, RetryPolicy, Timeouts
from avionics.settings import (
    AvionicsSettings,
    ProfileSettings,
    SettingsError,
    get_settings,
    reload_settings,
    settings_reference_markdown,
)

DESIGN_EXAMPLE = """
[providers.local]                 # kind: a BackendKind value
kind = "llama_server"
nodes = ["http://10.0.0.5:8080", "http://10.0.0.6:8080"]   # or base_url = "..." for one node
default_model = "qwen2.5-7b"
[providers.anthropic]
kind = "anthropic"
api_key_env = "ANTHROPIC_API_KEY"
rpm = 50
tpm = 40000
[profiles]
fast = { provider = "local", model = "qwen2.5-7b", temperature = 0.2 }
smart = { provider = "anthropic", model = "claude-sonnet-4-5" }
default = "fast"                  # a string is an alias of another profile
[agents.planner]
profile = "smart"
fallbacks = ["fast"]              # profile names, tried in order
max_tokens = 1024
budget_usd = 5.0
"""

CANARY = "sk-CANARY-7f3a9c-never-print-me"

KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY", "GROQ_API_KEY")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No AVIONICS_* or key variables from the outside, cwd in tmp_path, no cached settings."""
    for name in list(os.environ):
        if name.upper().startswith("AVIONICS_") or name in KEY_VARS:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def write(directory: Path, text: str, name: str = "avionics.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def load_error(path: Path) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        AvionicsSettings.from_file(path)
    return info.value


# ---------------------------------------------------------------------------- sources, defaults


def test_embedded_default_works_offline_without_file_or_env() -> None:
    settings = AvionicsSettings()
    assert settings.source_file is None
    local = settings.providers["local"]
    assert local.kind is BackendKind.LLAMA_SERVER
    assert local.urls == ["http://127.0.0.1:8080"]
    assert local.api_key_value("local") is None
    default = settings.profiles["default"]
    assert isinstance(default, ProfileSettings)
    assert default.provider == "local"


def test_design_example_loads_from_cwd_avionics_toml(tmp_path: Path) -> None:
    path = write(tmp_path, DESIGN_EXAMPLE)
    settings = AvionicsSettings()
    assert settings.source_file == path.resolve()
    assert settings.providers["local"].urls == ["http://10.0.0.5:8080", "http://10.0.0.6:8080"]
    assert settings.providers["anthropic"].rpm == 50
    assert settings.providers["anthropic"].tpm == 40000
    assert settings.profiles["default"] == "fast"
    planner = settings.agents["planner"]
    assert planner.profile == "smart"
    assert planner.fallbacks == ["fast"]
    assert planner.max_tokens == 1024
    assert planner.budget_usd == Decimal("5.0")
    assert planner.budget_period == "day"


def test_user_providers_replace_the_embedded_default_profile(tmp_path: Path) -> None:
    write(tmp_path, '[providers.oa]\nkind = "openai"\ndefault_model = "gpt-4o-mini"\n')
    settings = AvionicsSettings()
    assert set(settings.providers) == {"oa"}
    assert settings.profiles == {}


def test_avionics_config_env_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, DESIGN_EXAMPLE)
    other = write(
        tmp_path, '[providers.x]\nkind = "ollama"\nbase_url = "http://h:11434"\n', "o.toml"
    )
    monkeypatch.setenv("AVIONICS_CONFIG", str(other))
    settings = AvionicsSettings()
    assert settings.source_file == other.resolve()
    assert set(settings.providers) == {"x"}


def test_avionics_config_pointing_nowhere_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVIONICS_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError) as info:
        AvionicsSettings()
    text = str(info.value)
    assert "AVIONICS_CONFIG" in text
    assert "missing.toml" in text
    assert "Fix:" in text


def test_from_file_loads_that_file_only(tmp_path: Path) -> None:
    write(tmp_path, DESIGN_EXAMPLE)
    other = write(tmp_path, '[providers.x]\nkind = "openai"\n', "other.toml")
    settings = AvionicsSettings.from_file(other)
    assert set(settings.providers) == {"x"}
    assert settings.source_file == other.resolve()
    # the context override does not leak into the next load
    assert set(AvionicsSettings().providers) == {"local", "anthropic"}


def test_from_file_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        AvionicsSettings.from_file(tmp_path / "nope.toml")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[providers.x\nkind = 1\n")
    error = load_error(path)
    assert str(path.resolve()) in str(error)
    assert "not valid TOML" in str(error)


# ------------------------------------------------------------------------------ every section

FULL = """
[providers.local]
kind = "llama_server"
base_url = "http://127.0.0.1:8080"
api_type = "openai"
default_model = "qwen"
context_window = 32768
max_concurrency = 4
headers = { "X-Team" = "blue" }
timeouts = { connect = 2.0, read = 60.0, write = 10.0, pool = 5.0, total = 300.0, first_token = 20 }
retry = { max_retries = 1, initial_delay = 0.1, max_delay = 2.0, max_retry_after = 30.0 }

[providers.azure]
kind = "azure_openai"
base_url = "https://res.openai.azure.com"
api_version = "2024-10-21"
deployment = "gpt4o-prod"

[providers.gguf]
kind = "llama_server"
in_process = true
model_path = "/models/qwen.gguf"
default_model = "qwen"

[profiles.fast]
provider = "local"
temperature = 0.2
top_p = 0.9
stop = ["###"]
seed = 7
extra_body = { top_k = 40 }
[profiles.big]
provider = "azure"
model = "gpt-4o"
max_tokens = 2000

[agents.writer]
profile = "big"
temperature = 0.9
fallbacks = ["fast"]
budget_usd = 12.5
budget_period = "month"
system = "You write."

[pricing."azure/gpt-4o"]
input = 2.5
output = 10
cache_read = 1.25

[pricing.qwen]
input = 0
output = 0

[capabilities.gpt-4o]
context_window = 128000
vision = true
tools = true
json_schema = true

[fallback]
stop_on = ["bad_request"]
providers = ["local"]

[observability]
service_name = "svc"
otlp_endpoint = "http://collector:4318"
console = true
capture_content = true

[state]
backend = "redis"
redis_url = "redis://:hunter2@redis:6379/0"
fail_mode = "open"

[gateway]
rate_limit_max_wait = 5.0
node_cooldown = 10.0
health_check_interval = 3.0
"""


def test_every_section_parses_into_typed_values(tmp_path: Path) -> None:
    s = AvionicsSettings.from_file(write(tmp_path, FULL))
    local = s.providers["local"]
    assert local.api_type == "openai"
    assert local.context_window == 32768
    assert local.max_concurrency == 4
    assert local.headers == {"X-Team": "blue"}
    assert local.timeouts.to_airframe() == Timeouts(
        connect=2.0, read=60.0, write=10.0, pool=5.0, total=300.0, first_token=20.0
    )
    assert local.retry.to_airframe() == RetryPolicy(
        max_retries=1, initial_delay=0.1, max_delay=2.0, max_retry_after=30.0
    )
    azure = s.providers["azure"]
    assert azure.kind is BackendKind.AZURE_OPENAI
    assert (azure.api_version, azure.deployment) == ("2024-10-21", "gpt4o-prod")
    assert azure.api_key_env == "AZURE_OPENAI_API_KEY"
    gguf = s.providers["gguf"]
    assert gguf.in_process
    assert gguf.urls == []
    assert gguf.endpoints("gguf") == []
    fast = s.profiles["fast"]
    assert isinstance(fast, ProfileSettings)
    assert fast.request_params() == {
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ("###",),
        "seed": 7,
        "extra_body": {"top_k": 40},
    }
    writer = s.agents["writer"]
    assert writer.budget_usd == Decimal("12.5")
    assert writer.budget_period == "month"
    assert writer.system == "You write."
    price = s.pricing["azure/gpt-4o"]
    assert (price.input, price.output, price.cache_read, price.cache_write) == (
        Decimal("2.5"),
        Decimal("10"),
        Decimal("1.25"),
        None,
    )
    assert s.pricing["qwen"].input == Decimal("0")
    caps = s.capabilities["gpt-4o"]
    assert (caps.context_window, caps.vision, caps.tools, caps.json_schema) == (
        128000,
        True,
        True,
        True,
    )
    assert s.fallback.stop_on == [ErrorCategory.BAD_REQUEST]
    assert s.fallback.providers == ["local"]
    assert s.observability.service_name == "svc"
    assert s.observability.otlp_endpoint == "http://collector:4318"
    assert s.observability.console
    assert s.observability.capture_content
    assert s.state.backend == "redis"
    assert s.state.fail_mode == "open"
    assert s.state.redis_url is not None
    assert "hunter2" not in repr(s.state)
    assert s.gateway.rate_limit_max_wait == 5.0
    assert s.gateway.node_cooldown == 10.0
    assert s.gateway.health_check_interval == 3.0


def test_section_defaults() -> None:
    s = AvionicsSettings()
    assert s.fallback.stop_on == [ErrorCategory.BAD_REQUEST, ErrorCategory.CONTENT_FILTER]
    assert s.fallback.providers == []
    assert s.observability.service_name == "avionics"
    assert not s.observability.capture_content
    assert s.state.backend == "memory"
    assert s.state.fail_mode == "closed"
    assert s.agents == {}
    assert s.pricing == {}
    assert s.capabilities == {}


def test_kind_aliases_from_older_configs() -> None:
    s = AvionicsSettings(
        providers={
            "a": {"kind": "llamaserver", "base_url": "http://h:1"},
            "b": {"kind": "azure", "base_url": "https://r.openai.azure.com"},
        }
    )
    assert s.providers["a"].kind is BackendKind.LLAMA_SERVER
    assert s.providers["b"].kind is BackendKind.AZURE_OPENAI
    assert s.providers["b"].api_key_env == "AZURE_OPENAI_API_KEY"


# ---------------------------------------------------------------------------------- precedence


def test_env_wins_over_file_and_merges_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, DESIGN_EXAMPLE)
    monkeypatch.setenv("AVIONICS_PROVIDERS__ANTHROPIC__RPM", "7")
    monkeypatch.setenv("AVIONICS_PROFILES__FAST__TEMPERATURE", "0.5")
    monkeypatch.setenv("AVIONICS_AGENTS__PLANNER__FALLBACKS", "[]")
    s = AvionicsSettings()
    assert s.providers["anthropic"].rpm == 7
    assert s.providers["anthropic"].tpm == 40000  # untouched key of the same table
    fast = s.profiles["fast"]
    assert isinstance(fast, ProfileSettings)
    assert (fast.temperature, fast.model) == (0.5, "qwen2.5-7b")
    assert s.agents["planner"].fallbacks == []
    assert s.agents["planner"].profile == "smart"


def test_init_kwargs_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIONICS_OBSERVABILITY__SERVICE_NAME", "from-env")
    assert AvionicsSettings().observability.service_name == "from-env"
    s = AvionicsSettings(observability={"service_name": "from-kwargs"})
    assert s.observability.service_name == "from-kwargs"


def test_config_from_env_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIONICS_PROVIDERS__GROQ__KIND", "openai")
    monkeypatch.setenv("AVIONICS_PROVIDERS__GROQ__BASE_URL", "https://api.groq.com/openai/v1")
    monkeypatch.setenv("AVIONICS_PROVIDERS__GROQ__API_KEY_ENV", "GROQ_API_KEY")
    monkeypatch.setenv("AVIONICS_PROVIDERS__GROQ__NODES", "[]")
    monkeypatch.setenv("AVIONICS_PROFILES__QUICK__PROVIDER", "groq")
    monkeypatch.setenv("AVIONICS_PROFILES__QUICK__MODEL", "llama-3.1-8b-instant")
    monkeypatch.setenv("AVIONICS_PROFILES__QUICK__STOP", '["END"]')
    monkeypatch.setenv("AVIONICS_PROFILES__DEFAULT", "quick")
    monkeypatch.setenv("AVIONICS_FALLBACK__STOP_ON", '["bad_request", "auth"]')
    s = AvionicsSettings()
    assert s.providers["groq"].urls == ["https://api.groq.com/openai/v1"]
    assert s.providers["groq"].api_key_env == "GROQ_API_KEY"
    assert s.profiles["default"] == "quick"
    quick = s.profiles["quick"]
    assert isinstance(quick, ProfileSettings)
    assert quick.stop == ["END"]
    assert s.fallback.stop_on == [ErrorCategory.BAD_REQUEST, ErrorCategory.AUTH]


def test_env_moving_an_agent_onto_its_fallback_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, DESIGN_EXAMPLE)
    monkeypatch.setenv("AVIONICS_AGENTS__PLANNER__PROFILE", "fast")
    assert AvionicsSettings().agents["planner"].profile == "fast"


def test_unparseable_env_json_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIONICS_FALLBACK__STOP_ON", "bad_request, auth")
    with pytest.raises(SettingsError, match="JSON"):
        AvionicsSettings()


def test_get_settings_is_cached_until_cleared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = get_settings()
    assert get_settings() is first
    monkeypatch.setenv("AVIONICS_GATEWAY__NODE_COOLDOWN", "99")
    assert get_settings().gateway.node_cooldown == 30.0
    assert reload_settings().gateway.node_cooldown == 99.0
    get_settings.cache_clear()
    assert get_settings() is not first


# ---------------------------------------------------------------------------------- validation

BASE = """
[providers.local]
kind = "llama_server"
base_url = "http://127.0.0.1:8080"
default_model = "qwen"
[providers.claude]
kind = "anthropic"
[profiles]
fast = { provider = "local" }
smart = { provider = "claude", model = "claude-sonnet-4-5" }
"""

INVALID = {
    "unknown agent profile": (
        BASE + '[agents.planner]\nprofile = "smrt"\n',
        ["agents.planner.profile", "unknown profile 'smrt'", "did you mean 'smart'", "fast, smart"],
    ),
    "unknown fallback": (
        BASE + '[agents.planner]\nprofile = "smart"\nfallbacks = ["fast", "quick"]\n',
        ["agents.planner.fallbacks[1]", "unknown profile 'quick'", "Fix: use one of"],
    ),
    "unknown alias target": (
        BASE.replace("[profiles]", '[profiles]\ndefault = "fsat"'),
        ["profiles.default", "unknown profile 'fsat'", "did you mean 'fast'"],
    ),
    "unknown provider in profile": (
        BASE.replace('provider = "claude"', 'provider = "cluade"'),
        ["profiles.smart.provider", "unknown provider 'cluade'", "did you mean 'claude'"],
    ),
    "alias cycle": (
        BASE.replace("[profiles]", '[profiles]\na = "b"\nb = "c"\nc = "a"'),
        ["profile alias cycle: a -> b -> c -> a", "Fix: point one of these aliases"],
    ),
    "fallback is own profile": (
        BASE + '[agents.planner]\nprofile = "smart"\nfallbacks = ["smart"]\n',
        ["agents.planner.fallbacks[0]", "is the agent's own profile ('smart')", "Fix: remove it"],
    ),
    "fallback aliases own profile": (
        BASE.replace("[profiles]", '[profiles]\nbest = "smart"')
        + '[agents.planner]\nprofile = "smart"\nfallbacks = ["best"]\n',
        ["agents.planner.fallbacks[0]", "'best' is the agent's own profile"],
    ),
    "base_url and nodes": (
        BASE.replace('default_model = "qwen"', 'default_model = "qwen"\nnodes = ["http://h:1"]'),
        ["providers.local.base_url", "both base_url and nodes", "Fix: keep one"],
    ),
    "unknown kind": (
        BASE.replace('"anthropic"', '"antropic"'),
        [
            "providers.claude.kind",
            "unknown kind 'antropic'",
            "did you mean 'anthropic'",
            "openai, azure_openai, anthropic, llama_server, ollama",
        ],
    ),
    "unknown top-level key": (
        "[profile.fast]\nprovider = 'local'\n",
        ["profile: unknown key 'profile'", "did you mean 'profiles'", "Fix: remove it"],
    ),
    "unknown nested key": (
        BASE + '[agents.planner]\nprofile = "smart"\nfalbacks = ["fast"]\n',
        ["agents.planner.falbacks", "did you mean 'fallbacks'"],
    ),
    "unknown key in profile": (
        BASE.replace('model = "claude-sonnet-4-5"', 'modle = "x"'),
        ["profiles.smart.modle", "did you mean 'model'"],
    ),
    "unknown key in timeouts": (
        BASE.replace('default_model = "qwen"', 'default_model = "qwen"\ntimeouts = { rea = 1 }'),
        ["providers.local.timeouts.rea", "did you mean 'read'"],
    ),
    "no model anywhere": (
        BASE.replace('model = "claude-sonnet-4-5"', "temperature = 0.1"),
        ["profiles.smart.model", "has no default_model", "providers.claude.default_model"],
    ),
    "no address": (
        '[providers.az]\nkind = "azure_openai"\n',
        ["providers.az.base_url", "no default address", "Fix: add base_url"],
    ),
    "bad url": (
        '[providers.x]\nkind = "ollama"\nbase_url = "localhost:11434"\n',
        ["providers.x.base_url", "not an absolute http(s) URL"],
    ),
    "profile and provider": (
        BASE + '[agents.planner]\nprofile = "smart"\nprovider = "local"\n',
        ["agents.planner", "both profile and provider", "Fix: keep one"],
    ),
    "agent without default profile": (
        BASE + "[agents.planner]\nmax_tokens = 10\n",
        ["agents.planner", "no 'default' profile exists", "define profiles.default"],
    ),
    "redis without url": (
        '[state]\nbackend = "redis"\n',
        ["state.redis_url", "needs redis_url"],
    ),
    "wrong type": (
        BASE + "[agents.planner]\nprofile = 'smart'\nmax_tokens = 'lots'\n",
        ["agents.planner.max_tokens", "valid integer", "'lots'"],
    ),
    "case collision": (
        BASE + '[agents.Planner]\nprofile = "smart"\n[agents.planner]\nprofile = "fast"\n',
        ["agents.planner", "differ only in case", "lowercase"],
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_validation_errors_name_file_key_and_fix(tmp_path: Path, case: str) -> None:
    text, expected = INVALID[case]
    path = write(tmp_path, text)
    error = load_error(path)
    message = str(error)
    assert str(path.resolve()) in message
    assert "Fix:" in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert isinstance(error, ValueError)
    assert error.issues
    assert error.source == path.resolve()
    assert "\n" not in error.one_line()


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = (
        BASE + '[agents.a]\nprofile = "nope"\n[agents.b]\nfallbacks = ["zip"]\nprofile = "fast"\n'
    )
    error = load_error(write(tmp_path, text))
    keys = [issue.key for issue in error.issues]
    assert keys == ["agents.a.profile", "agents.b.fallbacks[0]"]
    assert "(2 problems)" in str(error)


def test_error_names_the_env_variable_that_set_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, DESIGN_EXAMPLE)
    monkeypatch.setenv("AVIONICS_AGENTS__PLANNER__PROFILE", "smrat")
    with pytest.raises(SettingsError) as info:
        AvionicsSettings()
    message = str(info.value)
    assert "agents.planner.profile (set by AVIONICS_AGENTS__PLANNER__PROFILE)" in message
    assert "did you mean 'smart'" in message


# -------------------------------------------------------------------------------------- keys


def test_missing_key_is_raised_at_first_use_not_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = AvionicsSettings.from_file(write(tmp_path, DESIGN_EXAMPLE))  # no key: loads fine
    anthropic = settings.providers["anthropic"]
    with pytest.raises(SettingsError) as info:
        anthropic.api_key_value("anthropic")
    message = str(info.value)
    assert "provider 'anthropic'" in message
    assert "ANTHROPIC_API_KEY" in message
    assert "Fix: export ANTHROPIC_API_KEY=" in message
    assert "providers.anthropic.api_key_env" in message
    with pytest.raises(SettingsError, match="ANTHROPIC_API_KEY"):
        anthropic.endpoints("anthropic")
    # read at use, so setting it later is enough (no reload)
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    assert anthropic.api_key_value("anthropic") == CANARY
    assert settings.providers["local"].api_key_value("local") is None


def test_key_env_defaults_per_kind_and_empty_means_none() -> None:
    s = AvionicsSettings(
        providers={
            "oa": {"kind": "openai"},
            "an": {"kind": "anthropic"},
            "studio": {"kind": "openai", "base_url": "http://127.0.0.1:1234/v1", "api_key_env": ""},
            "ol": {"kind": "ollama", "base_url": "http://127.0.0.1:11434"},
            "secured": {"kind": "llama_server", "base_url": "http://h:1", "api_key_env": "LS_KEY"},
        }
    )
    assert s.providers["oa"].api_key_env == "OPENAI_API_KEY"
    assert s.providers["an"].api_key_env == "ANTHROPIC_API_KEY"
    assert s.providers["studio"].api_key_env is None
    assert s.providers["studio"].api_key_value("studio") is None
    assert s.providers["ol"].api_key_env is None
    assert s.providers["ol"].is_local
    assert not s.providers["oa"].is_local
    with pytest.raises(SettingsError, match="LS_KEY"):
        s.providers["secured"].api_key_value("secured")


def test_endpoints_one_per_node_with_mapped_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    s = AvionicsSettings(
        providers={
            "local": {
                "kind": "llama_server",
                "nodes": ["http://10.0.0.5:8080", "http://10.0.0.6:8081/"],
                "api_type": "openai",
                "headers": {"X-A": "1"},
                "timeouts": {"read": 30, "first_token": 5},
                "retry": {"max_retries": 0},
            },
            "oa": {"kind": "openai"},
            "an": {"kind": "anthropic", "api_key": CANARY},
        }
    )
    local = s.providers["local"].endpoints("local")
    assert [e.name for e in local] == ["local/10.0.0.5:8080", "local/10.0.0.6:8081"]
    assert [e.base_url for e in local] == ["http://10.0.0.5:8080", "http://10.0.0.6:8081"]
    assert all(e.backend_kind is BackendKind.LLAMA_SERVER for e in local)
    assert local[0].api_type == "openai"
    assert local[0].api_key is None
    assert dict(local[0].headers) == {"X-A": "1"}
    assert local[0].timeouts == Timeouts(read=30.0, first_token=5.0)
    assert local[0].retry == RetryPolicy(max_retries=0)
    (openai,) = s.providers["oa"].endpoints("oa")
    assert openai.base_url == "https://api.openai.com/v1"
    assert openai.name == "oa/api.openai.com:443"
    assert openai.api_key == CANARY
    (anthropic,) = s.providers["an"].endpoints("an")
    assert anthropic.base_url == "https://api.anthropic.com"
    assert anthropic.api_key == CANARY


def test_canary_key_never_in_repr_str_or_dumps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("AVIONICS_PROVIDERS__DIRECT__API_KEY", CANARY)
    text = DESIGN_EXAMPLE + f'[providers.oa]\nkind = "openai"\napi_key = "{CANARY}"\n'
    text += '[providers.direct]\nkind = "anthropic"\n'
    settings = AvionicsSettings.from_file(write(tmp_path, text))
    assert settings.providers["oa"].api_key_value("oa") == CANARY
    assert settings.providers["direct"].api_key_value("direct") == CANARY
    views = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(settings.model_dump()),
        repr(settings.providers["oa"]),
        repr(settings.providers["oa"].endpoints("oa")),
        str(settings.providers["direct"].endpoints("direct")),
    ]
    for view in views:
        assert CANARY not in view


def test_canary_key_never_in_validation_errors(tmp_path: Path) -> None:
    text = f'[providers.oa]\nkind = "opnai"\napi_key = "{CANARY}"\nheaders = {{ A = 1 }}\n'
    text += f'[providers.ob]\nkind = "openai"\napi_key = ["{CANARY}"]\n'
    error = load_error(write(tmp_path, text))
    assert CANARY not in str(error)
    assert CANARY not in repr(error)
    assert error.__cause__ is None
    assert error.__suppress_context__


# -------------------------------------------------------------------------------------- docs


def test_reference_documents_every_field() -> None:
    from avionics import settings_reference as module

    doc = settings_reference_markdown()
    for title, model, _ in module._SECTIONS:
        assert f"## {title}" in doc
        for name in model.model_fields:
            assert f"| `{name}` |" in doc, (title, name)


def test_committed_docs_equal_the_generated_reference() -> None:
    docs = Path(__file__).resolve().parents[3] / "docs" / "settings.md"
    expected = settings_reference_markdown()
    assert docs.read_text() == expected, (
        'docs/settings.md is stale; regenerate it with:\n  uv run python -c "from '
        "avionics.settings import settings_reference_markdown as m; print(m(), end='')\" "
        "> docs/settings.md"
    )
