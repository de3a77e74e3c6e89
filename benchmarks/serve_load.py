"""Load test for `hessgpt serve`: 1 vs 8 vs 32 concurrent streaming clients, medians of interleaved rounds.

    python -m benchmarks.serve_load                                        # a ScriptedBackend server it starts
    python -m benchmarks.serve_load --model1 runs/quickstart/model1 --model2 runs/quickstart/model2 \\
        --max-batch 8 --clients 1,8,32 --rounds 3 --duration 20           # `hessgpt serve` it starts
    python -m benchmarks.serve_load --hf-model /tmp/smolhf --max-batch 8   # `hessgpt serve --hf-model` it starts
    python -m benchmarks.serve_load --url http://127.0.0.1:8000            # a server already running

For each round, for each client count (interleaved: 1, 8, 32, 1, 8, 32, ...), N clients loop for --duration
seconds: POST /v1/chat/completions with stream=true, read the SSE stream to `data: [DONE]`, record the time to
the first content token and the completion tokens (from the usage chunk). A 429 is counted apart (the client
waits its Retry-After, at most 1 s, and tries again); any other non-200 answer, an error chunk or an exception
is an error; a stream without a finish_reason or without [DONE] counts as dropped. Requests in flight at the
deadline finish (bounded by --request-timeout) and count.

Prints, per client count, the median over rounds of: aggregate completion tokens/s, p50 and p95 time to first
token (each round's percentiles over its requests), and the totals of requests, errors, 429s and dropped
streams; then the ratios to one client. Exit code 1 if any error or dropped stream. --json FILE writes it all.
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

import httpx

PROMPTS = ["Raconte une histoire courte.", "Explique la photosynthèse simplement.", "Write a short poem about the sea.",
           "Donne trois idées de repas rapides.", "What is a prime number? Give examples.",
           "Décris ta ville idéale.", "Summarise the water cycle.", "Écris une lettre à un ami."]


def serve_scripted(port: int, words: int, token_delay: float, concurrency: int, queue_size: int) -> None:
    """Child process: a ScriptedBackend answering `words` words, one per token_delay seconds."""
    import uvicorn

    from hessgpt.events import Event
    from hessgpt.serve.api import ServeConfig, create_app
    from hessgpt.serve.backends import ScriptedBackend

    text = " ".join(f"mot{i}" for i in range(words))
    backend = ScriptedBackend([Event("text", text)], token_delay=token_delay, model_id="hessgpt-scripted")
    app = create_app(backend, ServeConfig(concurrency=concurrency, queue_size=queue_size))
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")).run()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def client(i: int, http: httpx.AsyncClient, url: str, headers: dict, body: dict, deadline: float, stats: dict,
                 timeout: float) -> None:
    n = 0
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        ttft, tokens, finish, done = None, 0, None, False
        req = {**body, "messages": [{"role": "user", "content": PROMPTS[(i + n) % len(PROMPTS)]}]}
        n += 1
        try:
            async with http.stream("POST", url, json=req, headers=headers, timeout=timeout) as r:
                if r.status_code == 429:
                    stats["rejected"] += 1
                    await r.aread()
                    retry = float(r.headers.get("Retry-After", "1") or 1)
                    await asyncio.sleep(max(0.0, min(retry, 1.0, deadline - time.monotonic())))
                    continue
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
        if ttft is not None:
            stats["ttft"].append(ttft)
        stats["tokens"] += tokens
        stats["requests"] += 1


async def run_cell(args, url: str, model: str, clients: int) -> dict:
    """`clients` streaming clients for args.duration seconds -> one round's numbers."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    body = {"model": model, "max_tokens": args.max_tokens, "temperature": args.temperature, "stream": True,
            "stream_options": {"include_usage": True}}
    stats = {"ttft": [], "tokens": 0, "requests": 0, "dropped": 0, "rejected": 0, "errors": []}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        t0 = time.monotonic()
        deadline = t0 + args.duration
        tasks = [asyncio.create_task(client(i, http, url + "/v1/chat/completions", headers, body, deadline, stats,
                                            args.request_timeout)) for i in range(clients)]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.duration + args.request_timeout + 5)
        except asyncio.TimeoutError:
            stats["errors"].append("the run did not finish in time")
        elapsed = time.monotonic() - t0
    return {"clients": clients, "elapsed_s": round(elapsed, 2), "requests": stats["requests"], "tokens": stats["tokens"],
            "tokens_per_s": stats["tokens"] / elapsed, "ttft_p50_ms": pct(stats["ttft"], 0.5) * 1000,
            "ttft_p95_ms": pct(stats["ttft"], 0.95) * 1000, "errors": len(stats["errors"]),
            "rejected_429": stats["rejected"], "dropped": stats["dropped"], "error_samples": stats["errors"][:3]}


def summarise(cells: list[dict], counts: list[int]) -> list[dict]:
    rows = []
    for c in counts:
        mine = [x for x in cells if x["clients"] == c]
        med = lambda k: statistics.median(x[k] for x in mine if x[k] == x[k]) if any(x[k] == x[k] for x in mine) else float("nan")
        rows.append({"clients": c, "rounds": len(mine), "tokens_per_s": med("tokens_per_s"), "ttft_p50_ms": med("ttft_p50_ms"),
                     "ttft_p95_ms": med("ttft_p95_ms"), "requests": sum(x["requests"] for x in mine),
                     "errors": sum(x["errors"] for x in mine), "rejected_429": sum(x["rejected_429"] for x in mine),
                     "dropped": sum(x["dropped"] for x in mine)})
    return rows


def wait_health(url: str, proc: subprocess.Popen | None, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} before answering")
        try:
            r = httpx.get(url + "/health", timeout=1)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"no server answering at {url}/health after {timeout:.0f} s")


def start_server(args) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if args.model1 or args.hf_model:
        if args.model1:
            model = ["--model1", args.model1] + (["--model2", args.model2] if args.model2 else [])
        else:
            model = ["--hf-model", args.hf_model]
        flags = model + ["--max-batch", str(args.max_batch), "--queue-size", str(args.queue_size)] + \
            (["--no-tools"] if args.no_tools else [])
        cmd = [sys.executable, "-m", "hessgpt", "serve", *flags, "--port", str(port)]
        what = "hessgpt serve " + " ".join(flags)
    else:   # the child imports this module by name from the repo root
        code = (f"from benchmarks.serve_load import serve_scripted; serve_scripted({port}, {args.words}, "
                f"{args.token_delay!r}, {args.max_batch}, {args.queue_size})")
        cmd = [sys.executable, "-c", code]
        what = (f"ScriptedBackend ({args.words} words at {args.token_delay * 1000:.0f} ms/word, concurrency "
                f"{args.max_batch}, queue {args.queue_size})")
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL if args.quiet_server else None)
    return proc, f"http://127.0.0.1:{port}", what


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--url", help="an existing server (default: start one)")
    src.add_argument("--model1", metavar="CKPT", help="start `hessgpt serve --model1 CKPT` (default: a ScriptedBackend)")
    src.add_argument("--hf-model", metavar="DIR", help="start `hessgpt serve --hf-model DIR`")
    p.add_argument("--model2", metavar="CKPT", help="with --model1")
    p.add_argument("--no-tools", action="store_true", help="with --model1/--hf-model: serve without the sandbox")
    p.add_argument("--max-batch", type=int, default=8, help="started server: --max-batch (scripted: --concurrency)")
    p.add_argument("--queue-size", type=int, default=64, help="started server: --queue-size")
    p.add_argument("--model", help="model id (default: the first of GET /v1/models)")
    p.add_argument("--api-key", default=os.environ.get("HESSGPT_API_KEY"))
    p.add_argument("--clients", default="1,8,32", help="client counts, comma-separated (default 1,8,32)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per client count per round (default 20)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (no seed, as most clients)")
    p.add_argument("--request-timeout", type=float, default=120.0)
    p.add_argument("--words", type=int, default=64, help="scripted server: words per answer")
    p.add_argument("--token-delay", type=float, default=0.01, help="scripted server: seconds per word")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds a started server gets to load")
    p.add_argument("--quiet-server", action="store_true", help="hide a started server's stdout")
    p.add_argument("--json", metavar="FILE", help="write every round and the summary as JSON")
    args = p.parse_args(argv)
    try:
        counts = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        raise SystemExit(f"--clients {args.clients!r}: expected comma-separated integers, e.g. 1,8,32")
    if not counts or min(counts) < 1:
        raise SystemExit(f"--clients {args.clients!r}: every count must be at least 1")
    if args.rounds < 1 or args.duration <= 0:
        raise SystemExit(f"--rounds {args.rounds} / --duration {args.duration}: need at least 1 round of > 0 s")

    proc, url, what = (None, args.url.rstrip("/"), args.url) if args.url else start_server(args)
    try:
        health = wait_health(url, proc, args.start_timeout)
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        model = args.model or httpx.get(url + "/v1/models", headers=headers).json()["data"][0]["id"]
        print(f"serve_load: {what}; model {model}; clients {counts}, {args.rounds} interleaved rounds of "
              f"{args.duration:.0f} s, max_tokens {args.max_tokens}, temperature {args.temperature}", flush=True)
        print(f"server: {json.dumps({k: v for k, v in health.items() if k != 'auth'})}", flush=True)
        asyncio.run(run_cell(argparse.Namespace(**{**vars(args), "duration": 0.01}), url, model, 1))  # warm-up request
        cells = []
        for rnd in range(args.rounds):
            for c in counts:
                cell = asyncio.run(run_cell(args, url, model, c))
                cell["round"] = rnd
                cells.append(cell)
                print(f"  round {rnd + 1} clients {c:>3}: {cell['tokens_per_s']:7.1f} tok/s  ttft p50 "
                      f"{cell['ttft_p50_ms']:7.1f} p95 {cell['ttft_p95_ms']:7.1f} ms  requests {cell['requests']}  "
                      f"errors {cell['errors']}  429s {cell['rejected_429']}  dropped {cell['dropped']}", flush=True)
                for e in cell["error_samples"]:
                    print("    error:", e)
        try:
            final = httpx.get(url + "/health", timeout=5).json()
        except httpx.HTTPError:
            final = {}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    summary = summarise(cells, counts)
    base = summary[0] if summary[0]["clients"] == 1 else None
    print(f"\n{'clients':>7} {'tok/s':>8} {'xone':>6} {'ttft p50':>9} {'p95 ms':>8} {'p95 xone':>9} {'requests':>9} "
          f"{'errors':>7} {'429s':>6} {'dropped':>8}   (medians of {args.rounds} rounds)")
    for row in summary:
        x = row["tokens_per_s"] / base["tokens_per_s"] if base and base["tokens_per_s"] else float("nan")
        xt = row["ttft_p95_ms"] / base["ttft_p95_ms"] if base and base["ttft_p95_ms"] else float("nan")
        row["throughput_vs_one"], row["ttft_p95_vs_one"] = x, xt
        print(f"{row['clients']:>7} {row['tokens_per_s']:>8.1f} {x:>5.2f}x {row['ttft_p50_ms']:>9.1f} "
              f"{row['ttft_p95_ms']:>8.1f} {xt:>8.2f}x {row['requests']:>9} {row['errors']:>7} {row['rejected_429']:>6} "
              f"{row['dropped']:>8}")
    if final.get("batch"):
        print(f"engine loop: {json.dumps(final['batch'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"server": what, "model": model, "args": {k: v for k, v in vars(args).items() if k != "api_key"},
                       "rounds": cells, "summary": summary, "engine_loop": final.get("batch")}, f, indent=1)
    return 1 if any(r["errors"] or r["dropped"] for r in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
