"""Ollama as the emulator speaks it."""

from __future__ import annotations

import json
from typing import Any

import httpx

from airframe.testing import Emulator, Fault, Reply


def _url(emu: Emulator, path: str = "/api/chat") -> str:
    return emu.base_url("ollama") + path


def _body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "emulator-1",
        "messages": [{"role": "user", "content": "why is the sky blue"}],
        **extra,
    }


def test_stream_is_the_default(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(Reply.text("Rayleigh scattering, mostly."))
    with client.stream("POST", _url(emu), json=_body()) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        raw = response.read()
    assert raw.endswith(b"\n")
    lines = wire.parse_ndjson(raw)
    assert all(line["model"] == "emulator-1" and "created_at" in line for line in lines)
    assert all(line["done"] is False for line in lines[:-1])
    text = "".join(line["message"]["content"] for line in lines)
    assert text == "Rayleigh scattering, mostly."
    final = lines[-1]
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["prompt_eval_count"] == 6
    assert final["eval_count"] == 3
    for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[name], int)
        assert final[name] > 0
    assert final["total_duration"] >= final["eval_duration"]


def test_non_stream(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("Blue light scatters more.", reasoning="physics"))
    response = client.post(_url(emu), json=_body(stream=False))
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["done"] is True
    assert body["done_reason"] == "stop"
    assert body["message"]["content"] == "Blue light scatters more."
    assert body["message"]["thinking"] == "physics"
    assert body["eval_count"] == 5


def test_tool_calls_have_object_arguments(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    calls = [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    emu.script(Reply.tool_calls(calls), Reply.tool_calls(calls))
    body = client.post(_url(emu), json=_body(stream=False)).json()
    tool_calls = body["message"]["tool_calls"]
    assert [c["function"]["name"] for c in tool_calls] == ["get_weather", "get_time"]
    assert tool_calls[0]["function"]["arguments"] == {"city": "Paris"}
    assert [c["function"]["index"] for c in tool_calls] == [0, 1]
    with client.stream("POST", _url(emu), json=_body()) as response:
        lines = wire.parse_ndjson(response.read())
    streamed = [call for line in lines for call in line["message"].get("tool_calls", [])]
    assert [c["function"]["arguments"] for c in streamed] == [{"city": "Paris"}, {"tz": "CET"}]
    assert lines[-1]["done_reason"] == "stop"


def test_num_predict_gives_done_reason_length(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("a b c d e"))
    body = client.post(_url(emu), json=_body(stream=False, options={"num_predict": 2})).json()
    assert (body["message"]["content"], body["done_reason"]) == ("a b", "length")


def test_unknown_model_is_404_until_pulled(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    missing = client.post(_url(emu), json=_body(model="llama3.2"))
    assert missing.status_code == 404
    assert missing.json() == {"error": 'model "llama3.2" not found, try pulling it first'}
    tags = client.get(_url(emu, "/api/tags")).json()["models"]
    assert [m["name"] for m in tags] == ["emulator-1:latest"]

    with client.stream("POST", _url(emu, "/api/pull"), json={"model": "llama3.2"}) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        progress = wire.parse_ndjson(response.read())
    assert progress[0] == {"status": "pulling manifest"}
    downloads = [line for line in progress if "digest" in line]
    assert downloads
    assert all(line["digest"].startswith("sha256:") for line in downloads)
    assert downloads[-1]["completed"] == downloads[-1]["total"]
    assert progress[-1] == {"status": "success"}

    names = [m["name"] for m in client.get(_url(emu, "/api/tags")).json()["models"]]
    assert "llama3.2:latest" in names
    assert client.post(_url(emu), json=_body(model="llama3.2", stream=False)).status_code == 200
    assert (
        client.post(_url(emu), json=_body(model="llama3.2:latest", stream=False)).status_code == 200
    )


def test_pull_without_stream(emu: Emulator, client: httpx.Client) -> None:
    response = client.post(_url(emu, "/api/pull"), json={"name": "qwen2.5:0.5b", "stream": False})
    assert response.json() == {"status": "success"}
    emu.add_ollama_model("phi4")
    names = {m["name"] for m in client.get(_url(emu, "/api/tags")).json()["models"]}
    assert {"qwen2.5:0.5b", "phi4:latest", "emulator-1:latest"} <= names


def test_tags_shape(emu: Emulator, client: httpx.Client) -> None:
    (model,) = client.get(_url(emu, "/api/tags")).json()["models"]
    assert set(model) == {"name", "model", "modified_at", "size", "digest", "details"}
    assert model["details"]["format"] == "gguf"


def test_show(emu: Emulator, client: httpx.Client) -> None:
    body = client.post(_url(emu, "/api/show"), json={"model": "emulator-1"}).json()
    assert body["model_info"]["llama.context_length"] == 4096
    assert "tools" in body["capabilities"]
    missing = client.post(_url(emu, "/api/show"), json={"model": "nope"})
    assert missing.status_code == 404
    assert "not found" in missing.json()["error"]


def test_root_and_version(emu: Emulator, client: httpx.Client) -> None:
    root = client.get(emu.root_url + "/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert "version" in client.get(_url(emu, "/api/version")).json()


def test_empty_messages_load_the_model(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("kept"))
    body = client.post(_url(emu), json={"model": "emulator-1", "messages": []}).json()
    assert body["done_reason"] == "load"
    assert body["done"] is True
    assert emu.pending == 1


def test_errors(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(
        Fault.overloaded(),
        Fault.context_length(9000, 4096),
        Fault.in_band_error(after_chunks=1, kind="server"),
    )
    busy = client.post(_url(emu), json=_body(stream=False))
    assert busy.status_code == 503
    assert "server busy" in busy.json()["error"]
    context = client.post(_url(emu), json=_body(stream=False))
    assert context.status_code == 400
    inner = json.loads(context.json()["error"])["error"]
    assert (inner["type"], inner["n_prompt_tokens"], inner["n_ctx"]) == (
        "exceed_context_size_error",
        9000,
        4096,
    )
    with client.stream("POST", _url(emu), json=_body()) as response:
        lines = wire.parse_ndjson(response.read())
    assert len(lines) == 2
    assert lines[-1] == {"error": "llama runner process has terminated: exit status 2"}


def test_bearer_proxy_when_key_set(client: httpx.Client) -> None:
    with Emulator(api_key="proxy-key") as emu:
        rejected = client.post(_url(emu), json=_body(stream=False))
        accepted = client.post(
            _url(emu), json=_body(stream=False), headers={"Authorization": "Bearer proxy-key"}
        )
    assert (rejected.status_code, rejected.json()) == (401, {"error": "unauthorized"})
    assert accepted.status_code == 200
