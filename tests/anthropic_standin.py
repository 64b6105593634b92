"""A stand-in for the Anthropic Messages API on loopback, for driving Claude Code offline.

Claude Code (``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT``, any API key) posts to
``/v1/messages``; the stand-in answers each request with what a test's ``model``
function returns for it (content blocks and a stop reason), streamed as the server-sent
events the real API sends (message_start, content_block_start/delta/stop,
message_delta, message_stop), or as one JSON message when the request does not stream.
Every request is kept, so a test can assert what Claude Code sent: the tools it offered,
the tool results it returned, the context its hooks added. Any other path gets a 404
and is kept too.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A reply: the content blocks ({"type": "text", "text": ...} or {"type": "tool_use",
# "name": ..., "input": {...}}) and the stop reason ("end_turn" or "tool_use").
Reply = tuple[list[dict[str, Any]], str]
Model = Callable[[dict[str, Any]], Reply]


def text(message: str) -> Reply:
    return [{"type": "text", "text": message}], "end_turn"


def tool_use(name: str, arguments: dict[str, Any]) -> Reply:
    return [{"type": "tool_use", "name": name, "input": arguments}], "tool_use"


@dataclass
class StandIn:
    model: Model
    requests: list[dict[str, Any]] = field(default_factory=list)
    other_paths: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The message for one request: the model's reply with ids and usage."""
        with self._lock:
            self.requests.append(body)
            n = next(self._ids)
        try:
            blocks, stop = self.model(body)
        except Exception as e:  # a test's model that breaks must not hang Claude Code
            self.errors.append(f"{type(e).__name__}: {e}")
            blocks, stop = text("the stand-in model failed; see the test")
        content = [
            {**b, "id": f"toolu_{n:04d}_{i}"} if b["type"] == "tool_use" else b
            for i, b in enumerate(blocks)
        ]
        return {
            "id": f"msg_{n:04d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "stand-in"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }


def _events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The streamed form of one message, event by event."""
    head = {**message, "content": [], "stop_reason": None}
    yield "message_start", {"type": "message_start", "message": head}
    for i, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": i, "content_block": start},
        )
        yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": i}
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    yield "message_delta", {"type": "message_delta", "delta": stop, "usage": {"output_tokens": 1}}
    yield "message_stop", {"type": "message_stop"}


def _handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.split("?")[0] != "/v1/messages":
                self._not_found()
                return
            body = json.loads(raw)
            message = standin.answer(body)
            if not body.get("stream"):
                self._send(200, "application/json", json.dumps(message).encode())
                return
            stream = b"".join(
                f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                for name, data in _events(message)
            )
            self._send(200, "text/event-stream", stream)

        def do_GET(self) -> None:
            self._not_found()

        def _not_found(self) -> None:
            standin.other_paths.append(f"{self.command} {self.path}")
            self._send(
                404,
                "application/json",
                b'{"type":"error","error":{"type":"not_found_error","message":"not here"}}',
            )

        def _send(self, status: int, kind: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:  # keep pytest's output clean
            pass

    return Handler


@contextlib.contextmanager
def serving(model: Model) -> Iterator[tuple[StandIn, str]]:
    """Serve a stand-in on a free loopback port; yields it and its base URL."""
    standin = StandIn(model)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(standin))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
