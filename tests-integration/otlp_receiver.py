"""A minimal OTLP/HTTP collector for tests: decodes what real exporters post.

    with OTLPReceiver() as rx:                      # http://127.0.0.1:PORT, a free loopback port
        exporter = OTLPSpanExporter(endpoint=rx.endpoint + "/v1/traces")
        ...
        rx.spans()                                  # every span received, decoded

Accepts `POST /v1/traces` (`ExportTraceServiceRequest`) and `POST /v1/metrics`
(`ExportMetricsServiceRequest`) as binary protobuf, gzip or not, and answers like a collector.
Runs `http.server` on a thread; the exporters wait for the answer, so after `force_flush()`
returns everything sent is here (no sleeping, no polling).
"""

from __future__ import annotations

import gzip
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["OTLPReceiver", "ReceivedSpan", "attributes", "value_of"]


def value_of(value: AnyValue) -> Any:
    """A protobuf `AnyValue` as a Python value (arrays as tuples)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(value_of(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    """Repeated `KeyValue` as a dict."""
    return {kv.key: value_of(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass
class ReceivedSpan:
    """One span as the collector saw it, with its resource and instrumentation scope."""

    span: Span
    resource: dict[str, Any]
    scope: str
    schema_url: str

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()


@dataclass
class _Store:
    lock: threading.Lock = field(default_factory=threading.Lock)
    traces: list[ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[ExportMetricsServiceRequest] = field(default_factory=list)
    posts: list[tuple[str, dict[str, str]]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        store = self.server.store
        reply: bytes
        with store.lock:
            store.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            if self.path == "/v1/traces":
                store.traces.append(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/metrics":
                store.metrics.append(ExportMetricsServiceRequest.FromString(body))
                reply = ExportMetricsServiceResponse().SerializeToString()
            else:
                self.send_error(404)
                return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store = _Store()


class OTLPReceiver:
    """An OTLP/HTTP endpoint on a free loopback port (see the module docstring)."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="otlp-receiver", daemon=True
        )

    @property
    def endpoint(self) -> str:
        """The base URL exporters take (`/v1/traces` and `/v1/metrics` go after it)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def posts(self) -> list[tuple[str, dict[str, str]]]:
        """(path, lower-cased headers) of every POST received."""
        with self._server.store.lock:
            return list(self._server.store.posts)

    def spans(self) -> list[ReceivedSpan]:
        with self._server.store.lock:
            requests = list(self._server.store.traces)
        return [
            ReceivedSpan(span, attributes(rs.resource.attributes), ss.scope.name, ss.schema_url)
            for request in requests
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def metrics(self) -> dict[str, Metric]:
        """The last received data of each metric, by name."""
        with self._server.store.lock:
            requests = list(self._server.store.metrics)
        return {
            metric.name: metric
            for request in requests
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }
