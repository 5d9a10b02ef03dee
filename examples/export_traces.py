"""Export traces to an OpenTelemetry collector: one span per gateway call, one per HTTP attempt.

    python examples/export_traces.py                                  # offline: a tiny local
                                                                      # OTLP receiver + emulator
    python examples/export_traces.py http://localhost:4318            # your collector (Jaeger,
                                                                      # Tempo, otel-collector...)

The application calls `avionics.observability.configure()` once (it needs the `otel` extra:
`pip install 'jeeves-avionics[otel]'`); the gateway then emits `invoke_agent {agent}` spans with
a `chat {model}` child per attempt (retries and fallbacks included), with the OTel GenAI
attributes, tokens and cost. `OTEL_EXPORTER_OTLP_ENDPOINT` works too.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _support import backends
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import airframe
from airframe.testing import Fault, Reply
from avionics import LLMGateway
from avionics.observability import configure, configure_logging

SETTINGS = """
[providers.openai]
kind = "openai"
default_model = "gpt-4o-mini"
retry = { max_retries = 0 }

[providers.anthropic]
kind = "anthropic"
default_model = "claude-haiku-4-5"

[profiles]
fast = { provider = "openai", model = "gpt-4o-mini" }
backup = { provider = "anthropic", model = "claude-haiku-4-5" }
default = "fast"

[agents.triage]
profile = "fast"
fallbacks = ["backup"]
"""

# -- the application: configure once, then use the gateway as usual ------------------------------


async def run(gateway: LLMGateway) -> None:
    try:
        for ticket in ("Login page is blank", "Invoice total is wrong"):
            response = await gateway.complete(f"Triage: {ticket}", agent_name="triage")
            print(f"{ticket!r} -> {response.text!r} via {response.provider}")
    finally:
        await airframe.aclose_all()


def main() -> None:
    collector = sys.argv[1] if len(sys.argv) > 1 else None
    # Offline, the first call's OpenAI attempt fails (503) and falls back to Anthropic.
    script = (Fault.overloaded(), Reply.text("frontend, high"), Reply.text("billing, medium"))
    with local_collector(collector) as (endpoint, received), backends(SETTINGS, *script) as s:
        configure_logging("WARNING")  # structlog to stderr, with trace and span ids
        otel = configure(s, otlp_endpoint=endpoint, service_name="triage-service")
        asyncio.run(run(LLMGateway(s)))
        otel.shutdown()  # flush the batch exporter before the process ends
    if received is not None:
        print(f"the collector received {len(received)} spans:")
        print("\n".join(f"  {line}" for line in received))


# -- an OTLP/HTTP receiver, for running offline --------------------------------------------------


@contextmanager
def local_collector(url: str | None) -> Iterator[tuple[str, list[str] | None]]:
    """`url` when given; else a receiver on 127.0.0.1 that records `service: span (parent)`."""
    if url is not None:
        yield url, None
        return
    received: list[str] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":
                received.extend(describe_spans(body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def describe_spans(body: bytes) -> list[str]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    lines = []
    for resource_spans in request.resource_spans:
        service = next(
            (
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            ),
            "?",
        )
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                attrs = {a.key: a.value for a in span.attributes}
                error = attrs.get("error.type")
                tail = f" error.type={error.string_value}" if error is not None else ""
                child = " (child)" if span.parent_span_id else ""
                lines.append(f"{service}: {span.name}{child}{tail}")
    return lines


if __name__ == "__main__":
    main()
