"""Every fault against every protocol, over real sockets."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from airframe.testing import Emulator, Fault, Reply

TEXT = "alpha beta gamma delta epsilon"


def _events(target: Any, raw: bytes) -> int:
    """How many complete stream events `raw` holds."""
    separator = b"\n" if target.kind == "ollama" else b"\n\n"
    return raw.count(separator)


def _collect(
    client: httpx.Client, emu: Emulator, target: Any, stream: bool = True, **extra: Any
) -> tuple[bytes, Exception | None]:
    """Read as much of the body as arrives; return it with the error that ended it."""
    received = bytearray()
    try:
        body = target.body(stream, **extra)
        with client.stream("POST", target.url(emu), json=body, headers=target.headers) as response:
            for piece in response.iter_raw():
                received += piece
    except httpx.HTTPError as exc:
        return bytes(received), exc
    return bytes(received), None


@pytest.fixture(scope="module")
def short_client() -> Any:
    with httpx.Client(timeout=httpx.Timeout(10.0, read=0.25)) as http:
        yield http


def test_happy_stream_has_terminator(
    emu: Emulator, client: httpx.Client, target: Any, wire: Any
) -> None:
    emu.script(Reply.text(TEXT))
    raw, error = _collect(client, emu, target)
    assert error is None
    assert target.terminator in raw
    assert wire.text(target, raw) == TEXT


def test_happy_non_stream(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(Reply.text(TEXT))
    response = client.post(target.url(emu), json=target.body(False), headers=target.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert TEXT in response.text


def test_drop_after_chunks(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(Fault.drop(after_chunks=2, reply=Reply.text(TEXT)))
    raw, error = _collect(client, emu, target)
    assert isinstance(error, httpx.RemoteProtocolError)
    assert _events(target, raw) == 2
    assert target.terminator not in raw
    assert emu.wait_for_connections(0)


def test_drop_right_after_headers(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(Fault.drop(0))
    raw, error = _collect(client, emu, target)
    assert isinstance(error, httpx.RemoteProtocolError)
    assert raw == b""


def test_drop_non_stream(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(Fault.drop(0), Fault.drop(1))
    for _ in range(2):
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(target.url(emu), json=target.body(False), headers=target.headers)


def test_stall_after_chunks(emu: Emulator, short_client: httpx.Client, target: Any) -> None:
    emu.script(Fault.stall(3600, after_chunks=1, reply=Reply.text(TEXT)))
    raw, error = _collect(short_client, emu, target)
    assert isinstance(error, httpx.ReadTimeout)
    assert _events(target, raw) == 1
    assert emu.wait_for_connections(0)


def test_stall_before_headers(emu: Emulator, short_client: httpx.Client, target: Any) -> None:
    emu.script(Fault.stall(3600, after_chunks=None), Fault.stall(3600, after_chunks=None))
    raw, error = _collect(short_client, emu, target)
    assert isinstance(error, httpx.ReadTimeout)
    assert raw == b""
    with pytest.raises(httpx.ReadTimeout):
        short_client.post(target.url(emu), json=target.body(False), headers=target.headers)


def test_short_stall_then_carries_on(
    emu: Emulator, client: httpx.Client, target: Any, wire: Any
) -> None:
    emu.script(Fault.stall(0.01, after_chunks=2, reply=Reply.text(TEXT)))
    raw, error = _collect(client, emu, target)
    assert error is None
    assert target.terminator in raw
    assert wire.text(target, raw) == TEXT


def test_malformed_chunk(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(Fault.malformed_chunk(after_chunks=1, reply=Reply.text(TEXT)))
    raw, error = _collect(client, emu, target)
    assert error is None
    assert b"{not json" in raw
    lines = [line for line in raw.split(b"\n") if b"{not json" in line]
    assert len(lines) == 1
    assert target.terminator in raw


def test_malformed_non_stream(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(Fault.malformed_chunk())
    response = client.post(target.url(emu), json=target.body(False), headers=target.headers)
    assert response.status_code == 200
    assert response.content == b"{not json"


def test_invalid_utf8(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(Fault.invalid_utf8(after_chunks=1, reply=Reply.text(TEXT)), Fault.invalid_utf8())
    raw, error = _collect(client, emu, target)
    assert error is None
    assert b"\xff\xfe" in raw
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    body = client.post(target.url(emu), json=target.body(False), headers=target.headers).content
    assert b"\xff\xfe" in body


def test_no_terminator(emu: Emulator, client: httpx.Client, target: Any, wire: Any) -> None:
    emu.script(Fault.no_terminator(reply=Reply.text(TEXT)))
    raw, error = _collect(client, emu, target)
    assert error is None
    assert target.terminator not in raw
    assert wire.text(target, raw) == TEXT


def test_in_band_error(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(Fault.in_band_error(after_chunks=2, kind="rate_limit", reply=Reply.text(TEXT)))
    raw, error = _collect(client, emu, target)
    assert error is None
    assert (
        target.terminator not in raw.replace(b"data: [DONE]\n\n", b"")
        or target.kind != "llama_server"
    )
    last = raw.rstrip(b"\n").split(b"\n")[-1]
    if target.kind == "anthropic":
        assert raw.rstrip().split(b"\n\n")[-1].startswith(b"event: error\ndata: ")
        assert json.loads(last[len(b"data: ") :])["error"]["type"] == "rate_limit_error"
    elif target.kind == "ollama":
        assert list(json.loads(last)) == ["error"]
    else:
        assert b'data: {"error":' in raw
    assert b"message_stop" not in raw


def test_in_band_error_non_stream_is_a_status(
    emu: Emulator, client: httpx.Client, target: Any
) -> None:
    emu.script(Fault.in_band_error(kind="overloaded"))
    response = client.post(target.url(emu), json=target.body(False), headers=target.headers)
    assert response.status_code == (529 if target.kind == "anthropic" else 503)


def test_html_200(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(Fault.html_200(), Fault.html_200())
    raw, error = _collect(client, emu, target)
    assert error is None
    assert raw.startswith(b"<!DOCTYPE html>")
    response = client.post(target.url(emu), json=target.body(False), headers=target.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"


def test_json_200_for_stream(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(Fault.json_200_for_stream(reply=Reply.text(TEXT)))
    with client.stream(
        "POST", target.url(emu), json=target.body(True), headers=target.headers
    ) as r:
        raw = r.read()
    assert r.headers["content-type"].startswith("application/json")
    assert TEXT in json.dumps(json.loads(raw))


@pytest.mark.parametrize(
    "code", [400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504, 529]
)
def test_status_faults_have_json_error_bodies(
    emu: Emulator, client: httpx.Client, target: Any, code: int
) -> None:
    emu.script(Fault.status(code, headers={"x-should-retry": "false"}))
    response = client.post(target.url(emu), json=target.body(True), headers=target.headers)
    assert response.status_code == code
    assert response.headers["x-should-retry"] == "false"
    body = response.json()
    assert "error" in body
    if target.kind == "anthropic":
        assert body["type"] == "error"
        assert set(body["error"]) == {"type", "message"}


def test_status_fault_with_explicit_body(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(
        Fault.status(502, body="<html>Bad Gateway</html>"),
        Fault.status(
            418, body={"custom": True}, headers={"Content-Type": "application/problem+json"}
        ),
    )
    gateway = client.post(target.url(emu), json=target.body(False), headers=target.headers)
    assert (gateway.status_code, gateway.text) == (502, "<html>Bad Gateway</html>")
    assert gateway.headers["content-type"].startswith("text/plain")
    teapot = client.post(target.url(emu), json=target.body(False), headers=target.headers)
    assert teapot.json() == {"custom": True}
    assert teapot.headers["content-type"] == "application/problem+json"


def test_reply_headers(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(Reply.text("ok").with_headers({"x-should-retry": "true", "retry-after-ms": "5"}))
    raw = client.post(target.url(emu), json=target.body(True), headers=target.headers)
    assert raw.headers["x-should-retry"] == "true"
    assert raw.headers["retry-after-ms"] == "5"


def test_context_length_fault(emu: Emulator, client: httpx.Client, target: Any) -> None:
    emu.script(Fault.context_length(prompt_tokens=8000, n_ctx=4096))
    response = client.post(target.url(emu), json=target.body(True), headers=target.headers)
    assert response.status_code == 400
    assert "8000" in response.text
    assert "4096" in response.text


def test_token_delays_do_not_change_the_bytes(client: httpx.Client, target: Any, wire: Any) -> None:
    with Emulator(token_delay=0.001, first_token_delay=0.002) as emu:
        emu.script(Reply.text(TEXT))
        raw, error = _collect(client, emu, target)
    assert error is None
    assert wire.text(target, raw) == TEXT


def test_long_stream(emu: Emulator, client: httpx.Client, target: Any, wire: Any) -> None:
    text = " ".join(f"w{i}" for i in range(2000))
    emu.script(Reply.text(text))
    extra: dict[str, Any] = {"max_tokens": 4096} if target.kind == "anthropic" else {}
    raw, error = _collect(client, emu, target, True, **extra)
    assert error is None
    assert wire.text(target, raw) == text
    assert _events(target, raw) >= 2000
