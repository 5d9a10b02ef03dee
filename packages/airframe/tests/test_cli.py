"""`python -m airframe`: chat, models, health and backends against the wire emulator.

Exit codes by error category come from emulator faults; every error is one line on stderr and
the API key never appears in any output.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from airframe import ErrorCategory
from airframe.__main__ import EXIT_CODES, main
from airframe.testing import Emulator, Fault, Reply

CANARY = "sk-CANARY-7f3e-never-print-me"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def json(self) -> dict[str, object]:
        data = json.loads(self.out)
        assert isinstance(data, dict)
        return data


def run(*argv: str, environ: dict[str, str] | None = None, stdin: str = "") -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err, environ=environ or {})
    return Run(code, out.getvalue(), err.getvalue())


def chat(emu: Emulator, kind: str, *extra: str, environ: dict[str, str] | None = None) -> Run:
    return run(
        "chat",
        "--backend",
        kind,
        "--base-url",
        emu.base_url(kind),
        "--retries",
        "0",
        *extra,
        environ=environ,
    )


AZURE = ("--deployment", "my-gpt", "--api-version", "2024-10-21")


# -- chat ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic", "llama_server", "ollama", "azure_openai"])
def test_chat_streams_tokens_to_stdout_and_usage_to_stderr(emu: Emulator, kind: str) -> None:
    emu.script(Reply.text("Paris is the capital of France."))
    extra = AZURE if kind == "azure_openai" else ()
    result = chat(emu, kind, "--model", "emulator-1", *extra, "Capital of France?")
    assert result.code == 0, result.err
    assert result.out == "Paris is the capital of France.\n"
    assert result.err.count("\n") == 1
    assert "output 6 tokens" in result.err
    assert "finish stop" in result.err
    assert emu.last_request.stream


def test_chat_no_stream_sends_options(emu: Emulator) -> None:
    emu.script(Reply.text("Short."))
    result = chat(
        emu,
        "openai",
        "--model",
        "gpt-4o-mini",
        "--system",
        "Be brief.",
        "--max-tokens",
        "16",
        "--temperature",
        "0.2",
        "--no-stream",
        "hi",
    )
    assert result.code == 0, result.err
    assert result.out == "Short.\n"
    sent = emu.last_request.json
    assert not sent.get("stream")
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_tokens"] == 16
    assert sent["temperature"] == 0.2


def test_chat_json(emu: Emulator) -> None:
    emu.script(Reply.text("The answer is 42.", reasoning="Six times seven."))
    result = chat(emu, "anthropic", "--model", "claude-sonnet-4-5", "--json", "question")
    assert result.code == 0, result.err
    body = result.json
    assert body["text"] == "The answer is 42."
    assert body["reasoning"] == "Six times seven."
    assert body["finish_reason"] == "stop"
    assert body["usage"] == {
        "input_tokens": 2,
        "output_tokens": 7,
        "total_tokens": 9,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert result.err == ""


def test_chat_reads_the_prompt_from_stdin(emu: Emulator) -> None:
    out, err = io.StringIO(), io.StringIO()
    args = [
        "chat",
        "--backend",
        "ollama",
        "--base-url",
        emu.base_url("ollama"),
        "--model",
        emu.model,
    ]
    args.append("-")
    code = main(args, stdin=io.StringIO("piped prompt\n"), stdout=out, stderr=err, environ={})
    assert code == 0, err.getvalue()
    assert out.getvalue() == "echo: piped prompt\n"


def test_reasoning_goes_to_stderr_when_asked(emu: Emulator) -> None:
    emu.script(Reply.text("Yes.", reasoning="Let me think."))
    result = chat(emu, "anthropic", "--model", "m", "--reasoning", "q")
    assert result.out == "Yes.\n"
    assert result.err.startswith("Let me think.")


# -- keys ----------------------------------------------------------------------------------------


def test_key_comes_from_the_named_environment_variable(emu: Emulator) -> None:
    emu.api_key = CANARY
    result = chat(emu, "openai", "--api-key-env", "MY_KEY", "hi", environ={"MY_KEY": CANARY})
    assert result.code == 0, result.err
    assert emu.last_request.headers["authorization"] == f"Bearer {CANARY}"
    assert CANARY not in result.out + result.err


def test_default_key_variable_per_backend(emu: Emulator) -> None:
    emu.api_key = CANARY
    result = chat(emu, "anthropic", "--model", "m", "hi", environ={"ANTHROPIC_API_KEY": CANARY})
    assert result.code == 0, result.err
    assert emu.last_request.headers["x-api-key"] == CANARY


def test_wrong_key_exits_3_without_echoing_it(emu: Emulator) -> None:
    emu.api_key = "sk-the-right-one"
    result = chat(emu, "openai", "--json", "hi", environ={"OPENAI_API_KEY": CANARY})
    assert result.code == 3
    assert result.json["error"]["category"] == "auth"  # type: ignore[index]
    assert CANARY not in result.out + result.err
    assert "OPENAI_API_KEY" in result.err


def test_unset_key_variable_exits_3_naming_it(emu: Emulator) -> None:
    result = chat(emu, "openai", "--api-key-env", "MISSING_KEY", "hi")
    assert result.code == 3
    assert "MISSING_KEY is not set" in result.err
    assert result.err.count("\n") == 1
    assert emu.requests == []


# -- exit codes by category ----------------------------------------------------------------------

FAULTS = [
    pytest.param(Fault.auth(), ErrorCategory.AUTH, 3, id="auth"),
    pytest.param(Fault.status(404), ErrorCategory.NOT_FOUND, 4, id="not_found"),
    pytest.param(Fault.rate_limit(retry_after=0), ErrorCategory.RATE_LIMIT, 5, id="rate_limit"),
    pytest.param(Fault.quota(), ErrorCategory.QUOTA, 5, id="quota"),
    pytest.param(Fault.status(400), ErrorCategory.BAD_REQUEST, 7, id="bad_request"),
    pytest.param(Fault.context_length(), ErrorCategory.CONTEXT_LENGTH, 7, id="context_length"),
    pytest.param(Fault.content_filter(), ErrorCategory.CONTENT_FILTER, 7, id="content_filter"),
    pytest.param(Fault.server_error(), ErrorCategory.SERVER, 8, id="server"),
    pytest.param(Fault.overloaded(), ErrorCategory.OVERLOADED, 8, id="overloaded"),
    pytest.param(Fault.html_200(), ErrorCategory.PROTOCOL, 9, id="protocol"),
    pytest.param(
        Fault.drop(after_chunks=3, reply=Reply.text("one two three four five")),
        ErrorCategory.INTERRUPTED,
        9,
        id="interrupted",
    ),
]


@pytest.mark.parametrize(("fault", "category", "code"), FAULTS)
def test_exit_code_by_category(
    emu: Emulator, fault: Fault, category: ErrorCategory, code: int
) -> None:
    emu.script(fault)
    result = chat(emu, "openai", "--model", "gpt-4o-mini", "hi")
    assert result.code == code == EXIT_CODES[category]
    line = result.err.splitlines()[-1]
    assert line.startswith(f"airframe: {category.value}: ")
    assert "Fix: " in line


def test_interrupted_stream_keeps_what_was_printed(emu: Emulator) -> None:
    emu.script(Fault.drop(after_chunks=3, reply=Reply.text("one two three four five")))
    result = chat(emu, "openai", "hi")
    assert result.code == 9
    assert result.out == "one two\n"


def test_error_json_on_stdout(emu: Emulator) -> None:
    emu.script(Fault.quota())
    result = chat(emu, "openai", "--json", "hi")
    assert result.code == 5
    error = result.json["error"]
    assert isinstance(error, dict)
    assert error["category"] == "quota"
    assert error["status_code"] == 429
    assert error["retryable"] is False
    assert error["exit_code"] == 5


def test_connection_refused_exits_6(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    result = run("chat", "--backend", "llama_server", "--base-url", url, "--retries", "0", "hi")
    assert result.code == 6
    assert result.err.startswith("airframe: connection: ")
    assert result.err.count("\n") == 1


def test_stalled_server_times_out_with_6(emu: Emulator) -> None:
    emu.script(Fault.stall(3600, after_chunks=1))
    result = chat(emu, "anthropic", "--model", "m", "--timeout", "0.2", "hi")
    assert result.code == 6
    assert "timeout" in result.err


def test_retries_are_used(emu: Emulator) -> None:
    emu.script(Fault.rate_limit(retry_after=0), Reply.text("second time"))
    result = run(
        "chat", "--backend", "openai", "--base-url", emu.base_url("openai"), "--retries", "1", "hi"
    )
    assert result.code == 0, result.err
    assert result.out == "second time\n"
    assert len(emu.requests) == 2


# -- models, health, backends --------------------------------------------------------------------


def test_models_text_and_json(emu: Emulator) -> None:
    base = ("models", "--backend", "ollama", "--base-url", emu.base_url("ollama"))
    emu.add_ollama_model("llama3.2")
    text = run(*base)
    assert text.code == 0
    assert "llama3.2:latest" in text.out.splitlines()
    as_json = run(*base, "--json")
    assert as_json.json["backend"] == "ollama"
    assert "llama3.2:latest" in as_json.json["models"]  # type: ignore[operator]


def test_models_auth_error(emu: Emulator) -> None:
    emu.api_key = "sk-right"
    result = run("models", "--backend", "openai", "--base-url", emu.base_url("openai"))
    assert result.code == 3


def test_health_ok_loading_down(emu: Emulator, closed_port: int) -> None:
    base = ("health", "--backend", "llama_server", "--base-url")
    ok = run(*base, emu.base_url("llama_server"), "--json")
    assert ok.code == 0
    assert ok.json["state"] == "ok"
    emu.loading = True
    loading = run(*base, emu.base_url("llama_server"))
    assert loading.code == 8
    assert " loading" in loading.out
    down = run(*base, f"http://127.0.0.1:{closed_port}")
    assert down.code == 6
    assert " down" in down.out


def test_backends() -> None:
    result = run("backends")
    assert result.code == 0
    assert result.out.split() == ["openai", "azure_openai", "anthropic", "llama_server", "ollama"]


# -- usage errors --------------------------------------------------------------------------------


def test_azure_needs_a_base_url() -> None:
    result = run("chat", "--backend", "azure_openai", "hi")
    assert result.code == 2
    assert "--base-url is required" in result.err


def test_no_command_prints_help() -> None:
    result = run()
    assert result.code == 2
    assert "chat" in result.err


def test_unknown_backend_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["chat", "--backend", "gpt", "hi"])
    assert exited.value.code == 2
    assert "unknown backend 'gpt'" in capsys.readouterr().err


def test_python_dash_m_airframe(emu: Emulator) -> None:
    emu.script(Reply.text("from a subprocess"))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "airframe",
            "chat",
            "--backend",
            "openai",
            "--base-url",
            emu.base_url("openai"),
            "hi",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "from a subprocess\n"
