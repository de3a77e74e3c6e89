"""Load test for `hessgpt serve`: N concurrent streaming clients over loopback for a fixed time.

    python -m benchmarks.serve_load                       # starts a ScriptedBackend server itself
    python -m benchmarks.serve_load --url http://127.0.0.1:8000 --model hessgpt-sft   # an existing server

Each client loops: POST /v1/chat/completions with stream=true, reads the SSE stream to `data: [DONE]`, and
records the time to the first content token and the completion tokens (from the usage chunk). A stream
without a finish_reason or without [DONE] counts as dropped; a non-200 answer or an exception as an error.
Stops by itself after --duration seconds (requests in flight then finish, bounded by --request-timeout).
Prints p50/p95 time to first token and the aggregate tokens/s; exit code 1 if anything failed.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def serve_scripted(port: int, words: int, token_delay: float, concurrency: int) -> None:
    """Child process: a ScriptedBackend answering `words` words, one per token_delay seconds."""
    import uvicorn

    from hessgpt.events import Event
    from hessgpt.serve.api import ServeConfig, create_app
    from hessgpt.serve.backends import ScriptedBackend

    text = " ".join(f"mot{i}" for i in range(words))
    backend = ScriptedBackend([Event("text", text)], token_delay=token_delay, model_id="hessgpt-scripted")
    app = create_app(backend, ServeConfig(concurrency=concurrency, queue_size=concurrency * 2))
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")).run()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


async def client(i: int, http, url: str, headers: dict, body: dict, deadline: float, stats: dict, timeout: float):
    import httpx

    while time.monotonic() < deadline:
        t0 = time.monotonic()
        ttft, tokens, finish, done = None, 0, None, False
        try:
            async with http.stream("POST", url, json=body, headers=headers, timeout=timeout) as r:
                if r.status_code != 200:
                    stats["errors"].append(f"client {i}: HTTP {r.status_code} {(await r.aread())[:200]!r}")
                    await asyncio.sleep(0.2)
                    continue
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        done = True
                        break
                    obj = json.loads(data)
                    if "error" in obj:
                        stats["errors"].append(f"client {i}: {obj['error']}")
                        break
                    for ch in obj.get("choices", []):
                        if ch["delta"].get("content") and ttft is None:
                            ttft = time.monotonic() - t0
                        finish = ch.get("finish_reason") or finish
                    if obj.get("usage"):
                        tokens = obj["usage"]["completion_tokens"]
        except (httpx.HTTPError, OSError, json.JSONDecodeError) as e:
            stats["errors"].append(f"client {i}: {type(e).__name__}: {e}")
            continue
        if not (done and finish):
            stats["dropped"] += 1
            continue
        stats["ttft"].append(ttft if ttft is not None else float("nan"))
        stats["tokens"] += tokens
        stats["requests"] += 1
        stats["stream_tps"].append(tokens / max(1e-9, time.monotonic() - t0))


async def run_load(args, url: str, model: str) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "Raconte une histoire courte."}],
            "max_tokens": args.max_tokens, "temperature": 0.7, "stream": True, "stream_options": {"include_usage": True}}
    stats = {"ttft": [], "tokens": 0, "requests": 0, "dropped": 0, "errors": [], "stream_tps": []}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(limits=limits) as http:
        t0 = time.monotonic()
        deadline = t0 + args.duration
        tasks = [asyncio.create_task(client(i, http, url + "/v1/chat/completions", headers, body, deadline, stats,
                                            args.request_timeout)) for i in range(args.clients)]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.duration + args.request_timeout + 5)
        except asyncio.TimeoutError:
            stats["errors"].append("the run did not finish in time")
        stats["elapsed"] = time.monotonic() - t0
    return stats


def wait_health(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"no server answering at {url}/health")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an existing server (default: start a ScriptedBackend server on a free port)")
    p.add_argument("--model", help="model id (default: the first of GET /v1/models)")
    p.add_argument("--api-key", default=os.environ.get("HESSGPT_API_KEY"))
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--request-timeout", type=float, default=120.0)
    p.add_argument("--words", type=int, default=64, help="scripted server: words per answer")
    p.add_argument("--token-delay", type=float, default=0.01, help="scripted server: seconds per word")
    args = p.parse_args(argv)
    proc = None
    url = args.url
    if url is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # the child imports this module by name from the repo root
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (f"from benchmarks.serve_load import serve_scripted; "
                f"serve_scripted({port}, {args.words}, {args.token_delay!r}, {args.clients})")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=repo)
        url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        wait_health(url.rstrip("/"))
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        model = args.model or httpx.get(url + "/v1/models", headers=headers).json()["data"][0]["id"]
        server = "ScriptedBackend" if proc else url
        print(f"serve_load: {args.clients} streaming clients for {args.duration:.0f} s against {server} "
              f"(model {model}, max_tokens {args.max_tokens}"
              + (f", {args.words} words at {args.token_delay * 1000:.0f} ms/word)" if proc else ")"), flush=True)
        st = asyncio.run(run_load(args, url.rstrip("/"), model))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    ttft = [x for x in st["ttft"] if x == x]
    print(f"requests completed   {st['requests']}")
    print(f"errors               {len(st['errors'])}")
    print(f"dropped streams      {st['dropped']}")
    print(f"time to first token  p50 {pct(ttft, 0.5) * 1000:.1f} ms   p95 {pct(ttft, 0.95) * 1000:.1f} ms")
    print(f"aggregate throughput {st['tokens'] / st['elapsed']:.0f} tokens/s ({st['tokens']} tokens in {st['elapsed']:.1f} s)")
    if st["stream_tps"]:
        print(f"per-stream rate      median {statistics.median(st['stream_tps']):.0f} tokens/s")
    for e in st["errors"][:5]:
        print("  error:", e)
    return 1 if st["errors"] or st["dropped"] or not st["requests"] else 0


if __name__ == "__main__":
    sys.exit(main())
