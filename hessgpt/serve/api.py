"""The FastAPI app: OpenAI-compatible chat API, the event stream for the web page, and the page itself.

Routes
- POST /v1/chat/completions   OpenAI chat completions (stream or not, tools -> tool_calls, usage)
- POST /v1/chat/events        same request body; streams every `Event` (code, result, artifact, ...) as SSE
- GET  /v1/models, /v1/models/{id}, GET /health, GET / (web page), /static/* (page assets)

Generation runs in worker threads behind a bounded queue (`Scheduler`): at most `concurrency` backend calls
at once (for a batching backend, its `max_batch`: `hessgpt serve --model1` decodes that many requests together
on one engine loop, serve/batching.py), at most `queue_size` more waiting, anything beyond gets 429 + Retry-After. Each request owns a
`threading.Event` that is set when its client disconnects, a stop string is hit or the server shuts down;
the backend sees it and stops.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders

from hessgpt.engine import SamplingParams, StopMatcher
from hessgpt.errors import HessGPTError
from hessgpt.events import Event
from hessgpt.serve.backends import ChatBackend, ContextLengthError

WEB_DIR = os.path.join(os.path.dirname(__file__), "web")

# The page runs only its own scripts; model output is sanitised with DOMPurify and this policy is the
# second wall (an injected inline script or on* handler is refused by the browser). srcdoc iframes inherit it.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; frame-src 'self' about:; object-src 'none'; base-uri 'none'; form-action 'none'")


@dataclass
class ServeConfig:
    api_key: str | None = None
    concurrency: int = 1            # backend calls running at once
    queue_size: int = 16            # requests allowed to wait for a slot (beyond: 429)
    max_messages: int = 256         # per request
    max_chars: int = 200_000        # total characters of message contents (+ tool definitions)
    max_tokens_limit: int = 4096    # largest max_tokens a request may ask for
    default_max_tokens: int = 1024  # max_tokens when neither the request nor the model's generation_config sets it


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type, self.headers = status, message, param, code, type_, headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


# ----------------------------------------------------------------------------------------------------
# Request parsing: everything a client sends is checked here, and every failure names its field.


@dataclass
class ChatRequest:
    messages: list[dict]
    params: SamplingParams
    tools: list[dict] | None
    stream: bool
    include_usage: bool


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _content_text(content, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, f"{where}.content[{j}]: only text parts are supported", f"{where}.content")
            parts.append(part["text"])
        return "".join(parts)
    raise APIError(400, f"{where}.content must be a string or a list of text parts", f"{where}.content")


def parse_chat_request(body: Any, cfg: ServeConfig, model_id: str, defaults: dict | None = None) -> ChatRequest:
    """`defaults`: the backend's generation_config (the checkpoint's recommended sampling): what a field the
    request does not send takes. Without one, decoding is greedy (never OpenAI's temperature 1.0, which
    turns a small model's answers into noise)."""
    gen = defaults or {}
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise APIError(400, "model: required string", "model")
    if model != model_id:
        raise APIError(404, f"The model {model!r} does not exist; this server serves {model_id!r}", "model",
                       "model_not_found")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise APIError(400, "messages: required non-empty array", "messages")
    if len(msgs) > cfg.max_messages:
        raise APIError(400, f"messages: {len(msgs)} messages, the limit is {cfg.max_messages}", "messages",
                       "too_many_messages")
    messages, total_chars, call_names = [], 0, {}
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise APIError(400, f"{where} must be an object", where)
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise APIError(400, f"{where}.role: {role!r} is not one of system, user, assistant, tool", f"{where}.role")
        msg: dict[str, Any] = {"role": role, "content": _content_text(m.get("content"), where)}
        total_chars += len(msg["content"])
        if role == "assistant" and m.get("tool_calls") is not None:
            calls = m["tool_calls"]
            if not isinstance(calls, list):
                raise APIError(400, f"{where}.tool_calls must be an array", f"{where}.tool_calls")
            norm = []
            for j, c in enumerate(calls):
                fn = c.get("function") if isinstance(c, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise APIError(400, f"{where}.tool_calls[{j}].function.name: required string",
                                   f"{where}.tool_calls")
                args = fn.get("arguments", "{}")
                args = args if isinstance(args, str) else json.dumps(args)
                total_chars += len(args)
                cid = c.get("id") or f"call_{i}_{j}"
                call_names[cid] = fn["name"]
                norm.append({"id": cid, "type": "function", "function": {"name": fn["name"], "arguments": args}})
            msg["tool_calls"] = norm
        if role == "tool":
            tcid = m.get("tool_call_id")
            if tcid is not None and not isinstance(tcid, str):
                raise APIError(400, f"{where}.tool_call_id must be a string", f"{where}.tool_call_id")
            msg["tool_call_id"] = tcid
            msg["name"] = m.get("name") if isinstance(m.get("name"), str) else call_names.get(tcid, "python")
        messages.append(msg)
    if messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls") and not messages[-1]["content"]:
        raise APIError(400, "messages: the last message is an empty assistant message", "messages")

    def num(name, lo, hi, default, integer=False):
        v = body.get(name)
        if v is None:
            return default
        if not _is_num(v) or (integer and not isinstance(v, int)):
            raise APIError(400, f"{name}: must be {'an integer' if integer else 'a number'}, got {json.dumps(v)[:40]}", name)
        if not lo <= v <= hi:
            raise APIError(400, f"{name}: {v} is outside [{lo}, {hi}]", name)
        return v

    temperature = num("temperature", 0, 2, gen.get("temperature", 0.0))
    top_p = num("top_p", 0, 1, gen.get("top_p", 1.0))
    if top_p == 0:
        temperature, top_p = 0.0, 1.0  # top_p 0 keeps only the best token: greedy
    top_k = num("top_k", 0, 1_000_000, gen.get("top_k") or 0, integer=True)
    rep = num("repetition_penalty", 0.01, 10, gen.get("repetition_penalty", 1.0))
    for ignored in ("frequency_penalty", "presence_penalty"):
        num(ignored, -2, 2, 0.0)  # accepted for compatibility, not used
    limit = cfg.max_tokens_limit
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    mt_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if max_tokens is None:
        max_tokens = min(gen.get("max_new_tokens", cfg.default_max_tokens), limit)
    elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise APIError(400, f"{mt_name}: must be an integer", mt_name)
    elif max_tokens < 1 or max_tokens > limit:
        raise APIError(400, f"{mt_name}: {max_tokens} is outside [1, {limit}] (the server's --max-tokens-limit)", mt_name)
    n = body.get("n", 1)
    if n is not None and n != 1:
        raise APIError(400, "n: only n=1 is supported", "n")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise APIError(400, "seed: must be an integer", "seed")
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise APIError(400, "stop: must be a string or an array of strings", "stop")
    if len(stop) > 4:
        raise APIError(400, "stop: at most 4 sequences", "stop")
    stop = [s for s in stop if s]
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, "stream: must be a boolean", "stream")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise APIError(400, "stream_options: must be an object", "stream_options")
    include_usage = bool((so or {}).get("include_usage", False))
    if body.get("logprobs"):
        raise APIError(400, "logprobs: not supported", "logprobs")
    rf = body.get("response_format")
    if rf is not None and (not isinstance(rf, dict) or rf.get("type") != "text"):
        raise APIError(400, "response_format: only {\"type\": \"text\"} is supported", "response_format")

    tools = None
    raw_tools = body.get("tools")
    if raw_tools is not None:
        if not isinstance(raw_tools, list):
            raise APIError(400, "tools: must be an array", "tools")
        tools = []
        for j, t in enumerate(raw_tools):
            fn = t.get("function") if isinstance(t, dict) and t.get("type", "function") == "function" else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise APIError(400, f"tools[{j}]: expected {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}",
                               f"tools[{j}]")
            params_schema = fn.get("parameters", {"type": "object", "properties": {}})
            if not isinstance(params_schema, dict):
                raise APIError(400, f"tools[{j}].function.parameters: must be an object", f"tools[{j}]")
            tools.append({"name": fn["name"], "description": str(fn.get("description", "")), "parameters": params_schema})
            total_chars += len(json.dumps(tools[-1]))
        tools = tools or None
    choice = body.get("tool_choice")
    if choice is not None:
        if choice == "none":
            tools = None
        elif choice in ("auto", "required"):
            pass
        elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
            name = choice["function"]["name"]
            chosen = [t for t in tools or [] if t["name"] == name]
            if not chosen:
                raise APIError(400, f"tool_choice: no tool named {name!r} in tools", "tool_choice")
            tools = chosen
        else:
            raise APIError(400, "tool_choice: must be 'none', 'auto', 'required' or {\"type\": \"function\", ...}",
                           "tool_choice")
    if total_chars > cfg.max_chars:
        raise APIError(400, f"messages: {total_chars} characters, the limit is {cfg.max_chars}", "messages",
                       "too_many_characters")
    params = SamplingParams(max_new_tokens=max_tokens, temperature=float(temperature), top_k=top_k, top_p=float(top_p),
                            repetition_penalty=float(rep), stop=stop, seed=seed)
    return ChatRequest(messages, params, tools, stream, include_usage)


# ----------------------------------------------------------------------------------------------------
# Scheduling: a bounded queue in front of the backend, a worker thread per running request.

_END = object()


class Job:
    def __init__(self, req: ChatRequest, loop: asyncio.AbstractEventLoop):
        self.req = req
        self.cancel = threading.Event()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop = loop

    def put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (shutdown): nobody is listening any more
            self.cancel.set()


class Scheduler:
    def __init__(self, backend: ChatBackend, cfg: ServeConfig):
        self.backend, self.cfg = backend, cfg
        # a batching backend (serve/batching.py) decodes max_batch requests together: one worker per row
        self.concurrency = int(getattr(backend, "max_batch", None) or cfg.concurrency)
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="hessgpt-gen")
        self.lock = threading.Lock()
        self.jobs: set[Job] = set()
        self.running = 0
        self.avg_seconds = 5.0  # moving average of a request's duration, for Retry-After
        self.closing = False

    def submit(self, req: ChatRequest) -> Job:
        with self.lock:
            if self.closing:
                raise APIError(503, "the server is shutting down", code="shutting_down", type_="server_error")
            if len(self.jobs) >= self.concurrency + self.cfg.queue_size:
                waiting = len(self.jobs) - self.concurrency + 1
                retry = max(1, min(60, round(self.avg_seconds * waiting / self.concurrency)))
                raise APIError(429, f"the server is busy ({len(self.jobs)} requests in flight); retry in {retry} s",
                               code="queue_full", type_="rate_limit_error", headers={"Retry-After": str(retry)})
            job = Job(req, asyncio.get_running_loop())
            self.jobs.add(job)
        self.pool.submit(self._run, job)
        return job

    def _run(self, job: Job) -> None:
        t0 = time.monotonic()
        with self.lock:
            self.running += 1
        gen = None
        try:
            if job.cancel.is_set():  # cancelled while waiting in the queue
                job.put(Event("done", data={"finish_reason": "cancelled", "prompt_tokens": 0, "completion_tokens": 0}))
                return
            req = job.req
            gen = self.backend.stream_chat(req.messages, req.params, req.tools, job.cancel)
            grace = 16  # after cancel, events the backend may still send (its "done" carries the token counts)
            for ev in gen:
                job.put(ev)
                if ev.type == "done":
                    break
                if job.cancel.is_set():
                    grace -= 1
                    if grace <= 0:  # a backend that ignores cancel: stop pulling from it
                        break
        except BaseException as e:  # handed to the request's coroutine, which answers with an error
            job.put(e)
        finally:
            if gen is not None and hasattr(gen, "close"):
                try:
                    gen.close()
                except Exception:
                    pass
            job.put(_END)
            with self.lock:
                self.running -= 1
                self.jobs.discard(job)
                self.avg_seconds = 0.8 * self.avg_seconds + 0.2 * (time.monotonic() - t0)

    def stats(self) -> dict:
        with self.lock:
            out = {"running": self.running, "waiting": len(self.jobs) - self.running,
                   "concurrency": self.concurrency, "queue_size": self.cfg.queue_size}
        if hasattr(self.backend, "stats"):   # the engine loop of a batching backend: rows, steps, mean batch
            out["batch"] = self.backend.stats()
        return out

    def shutdown(self, timeout: float = 10.0) -> None:
        """Refuse new work, let in-flight requests finish for up to `timeout` s, then cancel the rest."""
        with self.lock:
            self.closing = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.jobs:
                    break
            time.sleep(0.05)
        with self.lock:
            for job in self.jobs:
                job.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=False)


class StopFilter(StopMatcher):
    """Cuts "text" deltas at the first stop string, holding back a tail that may be the start of one: the
    engine's StopMatcher (the one `Engine.stream_text` uses), plus `hit` once a stop string was found."""

    def __init__(self, stops: list[str]):
        super().__init__(stops)
        self.hit = False

    def feed(self, delta: str) -> str:
        text, stopped = self.push(delta)
        self.hit = self.hit or stopped
        return text


async def _events(request: Request, job: Job, poll_disconnect: bool):
    """Async iterator over a job's events (with stop strings applied). Raises the backend's exception.

    poll_disconnect: check the client while waiting (non-streaming and before the first byte); once a
    StreamingResponse runs, Starlette itself cancels us on disconnect and the `finally` sets cancel.
    """
    stop = StopFilter(job.req.params.stop)
    finished = False
    last_check = time.monotonic()
    try:
        while True:
            if poll_disconnect and time.monotonic() - last_check > 0.25:
                last_check = time.monotonic()
                if await request.is_disconnected():
                    job.cancel.set()
                    return
            if not job.queue.empty():  # fast path while tokens are flowing
                item = job.queue.get_nowait()
            elif poll_disconnect:
                try:
                    item = await asyncio.wait_for(job.queue.get(), timeout=0.25)
                except asyncio.TimeoutError:
                    continue
            else:
                item = await job.queue.get()
            if item is _END:
                finished = True
                if not stop.hit and (held := stop.flush()):
                    yield Event("text", held)
                return
            if isinstance(item, BaseException):
                finished = True
                raise item
            ev: Event = item
            if stop.hit:  # after a stop string only the final "done" matters
                if ev.type == "done":
                    yield Event("done", data={**ev.data, "finish_reason": "stop"})
                continue
            if ev.type == "text":
                text = stop.feed(ev.text)
                if text:
                    yield Event("text", text)
                if stop.hit:
                    job.cancel.set()
                continue
            held = stop.flush()
            if held:
                yield Event("text", held)
            yield ev
    finally:
        if not finished:
            job.cancel.set()


def _chunk(cid: str, created: int, model: str, delta: dict, finish=None, usage=None) -> str:
    obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}] if usage is None else [],
           "system_fingerprint": None}
    if usage is not None:
        obj["usage"] = usage
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"


def _usage(done: dict) -> dict:
    p, c = int(done.get("prompt_tokens", 0)), int(done.get("completion_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _tool_call_obj(ev: Event, index: int) -> dict:
    return {"index": index, "id": ev.data.get("id") or f"call_{uuid.uuid4().hex[:12]}", "type": "function",
            "function": {"name": ev.data.get("name", ""), "arguments": json.dumps(ev.data.get("arguments", {}),
                                                                                   ensure_ascii=False)}}


def _finish(done: dict, n_calls: int) -> str:
    reason = done.get("finish_reason", "stop")
    if n_calls:
        return "tool_calls"
    return "stop" if reason == "cancelled" else reason  # OpenAI has no "cancelled"


def _visible_text(ev: Event) -> str | None:
    """What an OpenAI client sees of an event: text, and artifacts as a fenced block (they are part of the answer)."""
    if ev.type == "text":
        return ev.text
    if ev.type == "artifact":
        return f"\n```{ev.data.get('lang', 'html')}\n{ev.text}\n```\n"
    return None


class Guard:
    """ASGI middleware: Bearer auth on /v1/*, security headers (CSP) on the page and its assets.

    Plain ASGI (not BaseHTTPMiddleware) so streaming and disconnect detection pass through untouched.
    """

    def __init__(self, app, api_key: str | None):
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path.startswith("/v1/"):
            if self.api_key:
                auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
                token = auth[7:] if auth.lower().startswith("bearer ") else ""
                if not hmac.compare_digest(token.encode(), self.api_key.encode()):
                    err = APIError(401, "missing or wrong API key (Authorization: Bearer KEY)", code="invalid_api_key")
                    return await err.response()(scope, receive, send)
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = PAGE_CSP
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers["X-Frame-Options"] = "DENY"
            await send(message)

        return await self.app(scope, receive, send_with_headers)


# ----------------------------------------------------------------------------------------------------


def create_app(backend: ChatBackend, cfg: ServeConfig | None = None, shutdown_timeout: float = 10.0) -> FastAPI:
    cfg = cfg or ServeConfig()
    sched = Scheduler(backend, cfg)

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.get_running_loop().run_in_executor(None, sched.shutdown, shutdown_timeout)

    app = FastAPI(title="HessGPT", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler = sched
    app.state.backend = backend
    generation_config = dict(getattr(backend, "generation_config", None) or {})
    # what a request that sets nothing gets (shown by /v1/models; the page shows it in its settings)
    _d = parse_chat_request({"model": backend.model_id, "messages": [{"role": "user", "content": ""}]}, cfg,
                            backend.model_id, generation_config).params
    request_defaults = {"temperature": _d.temperature, "top_k": _d.top_k or None, "top_p": _d.top_p,
                        "repetition_penalty": _d.repetition_penalty, "max_tokens": _d.max_new_tokens}

    app.add_middleware(Guard, api_key=cfg.api_key)

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return exc.response()

    @app.exception_handler(404)
    async def not_found(request, exc):
        return APIError(404, f"no route {request.url.path}", code="not_found").response()

    @app.exception_handler(405)
    async def bad_method(request, exc):
        return APIError(405, f"method {request.method} not allowed on {request.url.path}", code="method_not_allowed").response()

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": backend.model_id, "auth": bool(cfg.api_key), **sched.stats()}

    def model_card() -> dict:
        return {"id": backend.model_id, "object": "model", "created": 0, "owned_by": "hessgpt",
                "context_length": backend.context_length, "max_tokens_limit": cfg.max_tokens_limit,
                "generation_config": request_defaults}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != backend.model_id:
            raise APIError(404, f"The model {model_id!r} does not exist", "model", "model_not_found")
        return model_card()

    async def start(request: Request) -> tuple[Job, Any, Event | None]:
        """Parse, enqueue, and wait for the first event: errors raised before it become 4xx JSON answers."""
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"could not parse the JSON body: {e}", code="invalid_json")
        req = parse_chat_request(body, cfg, backend.model_id, generation_config)
        job = sched.submit(req)
        events = _events(request, job, poll_disconnect=True)
        try:
            first = await events.__anext__()
        except StopAsyncIteration:
            first = None
        except ContextLengthError as e:
            raise APIError(400, str(e), "messages", "context_length_exceeded")
        except HessGPTError as e:
            raise APIError(400, str(e), code="bad_request")
        except Exception as e:
            raise APIError(500, f"the backend failed: {type(e).__name__}: {e}", type_="server_error", code="backend_error")
        return job, events, first

    async def rest(events, first):
        """first + the remaining events, switching from disconnect polling to Starlette's cancellation."""
        if first is not None:
            yield first
        async for ev in events:
            yield ev

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        job, events, first = await start(request)
        cid, created, model_id = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), backend.model_id

        if not job.req.stream:
            text, calls, done = [], [], {}
            try:
                async for ev in rest(events, first):
                    if ev.type == "tool_call" and ev.data.get("error"):
                        continue   # a call the backend could not read: its error went back to the model
                    if ev.type == "tool_call":
                        calls.append(_tool_call_obj(ev, len(calls)))
                    elif ev.type == "done":
                        done = ev.data
                    elif (t := _visible_text(ev)) is not None:
                        text.append(t)
            except Exception as e:
                raise APIError(500, f"the backend failed: {type(e).__name__}: {e}", type_="server_error", code="backend_error")
            message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or (None if calls else "")}
            if calls:
                message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
            return {"id": cid, "object": "chat.completion", "created": created, "model": model_id,
                    "choices": [{"index": 0, "message": message, "finish_reason": _finish(done, len(calls)), "logprobs": None}],
                    "usage": _usage(done), "system_fingerprint": None}

        async def sse():
            n_calls, done = 0, {}
            out = [_chunk(cid, created, model_id, {"role": "assistant", "content": ""})]
            try:
                async for ev in rest(events, first):
                    if ev.type == "tool_call" and ev.data.get("error"):
                        continue   # a call the backend could not read: its error went back to the model
                    if ev.type == "tool_call":
                        out.append(_chunk(cid, created, model_id, {"tool_calls": [_tool_call_obj(ev, n_calls)]}))
                        n_calls += 1
                    elif ev.type == "done":
                        done = ev.data
                    elif (t := _visible_text(ev)) is not None and t:
                        out.append(_chunk(cid, created, model_id, {"content": t}))
                    if out and job.queue.empty():  # one write per burst of events, not one per token
                        yield "".join(out)
                        out = []
                if out:
                    yield "".join(out)
            except Exception as e:
                err = APIError(500, f"the backend failed: {type(e).__name__}: {e}", type_="server_error", code="backend_error")
                yield "".join(out) + "data: " + json.dumps(err.body()) + "\n\n"
            else:
                yield _chunk(cid, created, model_id, {}, finish=_finish(done, n_calls))
                if job.req.include_usage:
                    yield _chunk(cid, created, model_id, {}, usage=_usage(done))
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/chat/events")
    async def chat_events(request: Request):
        """The page's stream: every Event as `data: {"type", "text", "data"}`, then `data: [DONE]`."""
        job, events, first = await start(request)

        async def sse():
            out = []
            try:
                async for ev in rest(events, first):
                    out.append("data: " + json.dumps(ev.to_dict(), ensure_ascii=False) + "\n\n")
                    if job.queue.empty():  # one write per burst of events
                        yield "".join(out)
                        out = []
                if out:
                    yield "".join(out)
            except Exception as e:
                yield "".join(out) + "data: " + json.dumps({"type": "error", "text": f"{type(e).__name__}: {e}", "data": {}}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/")
    async def index():
        return FileResponse(os.path.join(WEB_DIR, "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app
