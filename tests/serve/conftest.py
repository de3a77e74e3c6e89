"""A real uvicorn server on 127.0.0.1 (random free port) in a background thread, per test."""

import json
import os
import socket
import threading
import time

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, backend, cfg):
        import uvicorn

        from hessgpt.serve.api import create_app

        self.backend = backend
        self.app = create_app(backend, cfg, shutdown_timeout=2.0)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def serve():
    """serve(backend, **ServeConfig fields) -> RunningServer (stopped after the test)."""
    from hessgpt.serve.api import ServeConfig

    running = []

    def start(backend, **cfg):
        srv = RunningServer(backend, ServeConfig(**cfg))
        running.append(srv)
        return srv

    yield start
    for srv in running:
        srv.stop()


# ---- client helpers shared by the serve tests (test_serve_api, test_serve_batching, test_serve_hf_batching) ----

def wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def stream_text(url: str, payload: dict) -> tuple[str, dict, str]:
    """POST a streaming request; -> (content, usage, finish_reason)."""
    text, usage, finish = [], {}, None
    with httpx.stream("POST", url + "/v1/chat/completions", json=payload, timeout=60) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            usage = chunk.get("usage") or usage
            for c in chunk.get("choices", []):
                text.append(c["delta"].get("content") or "")
                finish = c.get("finish_reason") or finish
    return "".join(text), usage, finish
