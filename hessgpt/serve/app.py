"""`hessgpt serve`: the OpenAI-compatible API and the web chat page in one process.

    hessgpt serve --model1 runs/sft/ckpt.pt [--model2 runs/coder/ckpt.pt]   # HessGPT dual model + tools
                                                                           # (--max-batch 8 requests decode together)
    hessgpt serve --hf-model ./my-hf-model [--adapter ./lora]              # any local HF causal LM
                                                                           # (--max-batch 8 too)
    hessgpt serve --demo                                                   # scripted answers, no model

Binds 127.0.0.1 by default; any other address needs --api-key (or HESSGPT_API_KEY), checked as a Bearer
token on /v1/*. The flags become a backend in serve/build.py (`build_backend`, shared with chat, ask and eval).
"""

from __future__ import annotations

import argparse
import ipaddress
import os

from hessgpt.errors import HessGPTError
from hessgpt.serve.build import BackendSpec, build_backend


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hessgpt serve", description="OpenAI-compatible API + web chat page.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model1", metavar="CKPT", help="HessGPT checkpoint of the chat model (dual-model router)")
    src.add_argument("--hf-model", metavar="DIR", help="local Hugging Face causal LM directory")
    src.add_argument("--demo", action="store_true", help="scripted answers (try the page and the API without a model)")
    p.add_argument("--model2", metavar="CKPT", help="HessGPT checkpoint of the code model (with --model1)")
    p.add_argument("--adapter", metavar="DIR", help="PEFT LoRA adapter applied on the --hf-model")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="--hf-model weights: auto = bf16 on a GPU with compute capability >= 8.0, fp16 on older GPUs, fp32 on CPU")
    p.add_argument("--load-in-4bit", action="store_true", help="--hf-model in bitsandbytes nf4 (needs a CUDA GPU)")
    p.add_argument("--no-tools", action="store_true", help="never execute model-written code (no sandbox)")
    p.add_argument("--search-index", metavar="DB", help="a `hessgpt search build` database answering <search> queries")
    p.add_argument("--http-allow", action="append", default=[], metavar="HOST",
                   help="a host the http_request tool may reach (repeatable; none by default)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --api-key)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("HESSGPT_API_KEY"), help="Bearer key for /v1/* (env HESSGPT_API_KEY)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="--model1/--hf-model: requests decoded together on one engine loop (continuous batching; "
                        "default 8, 1 = one at a time)")
    p.add_argument("--prefill-chunk", type=int, default=256,
                   help="--model1/--hf-model with --max-batch >= 2: queued prompt/result tokens written per decode "
                        "step (model 1: inside the step; default 256)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="--demo: scripted answers running at once (default 1; --model1/--hf-model use --max-batch)")
    p.add_argument("--queue-size", type=int, default=16, help="requests that may wait; more get 429 (default 16)")
    p.add_argument("--max-tokens-limit", type=int, default=4096, help="largest max_tokens a request may ask for")
    p.add_argument("--max-messages", type=int, default=256, help="most messages in one request")
    p.add_argument("--max-chars", type=int, default=200_000, help="most characters of content in one request")
    p.add_argument("--shutdown-timeout", type=float, default=10.0, help="seconds in-flight requests get on shutdown")
    p.add_argument("--token-delay", type=float, default=0.02, help="--demo: seconds per streamed word")
    return p


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    spec = BackendSpec.from_args(args).check()   # flags that do not go together, before anything loads
    if not is_loopback(args.host) and not args.api_key:
        raise HessGPTError(f"--host {args.host}: binding a non-loopback address needs --api-key (or HESSGPT_API_KEY)")
    if (args.model1 or args.hf_model) and args.concurrency != 1:
        flag = "--model1" if args.model1 else "--hf-model"
        raise HessGPTError(f"--concurrency {args.concurrency}: {flag} shares one model between requests; "
                           f"use --max-batch {args.concurrency} (requests decoded together)")
    for name in ("concurrency", "max_batch", "prefill_chunk", "port", "max_tokens_limit", "max_messages", "max_chars"):
        if getattr(args, name) < 1:
            raise HessGPTError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    if args.queue_size < 0:
        raise HessGPTError(f"--queue-size {args.queue_size}: must be 0 or more")

    import uvicorn

    from hessgpt.serve.api import ServeConfig, create_app  # lazy: fastapi (~300 ms), not for --help

    backend = build_backend(spec)
    cfg = ServeConfig(api_key=args.api_key, concurrency=args.concurrency, queue_size=args.queue_size,
                      max_messages=args.max_messages, max_chars=args.max_chars, max_tokens_limit=args.max_tokens_limit,
                      default_max_tokens=min(1024, args.max_tokens_limit))
    app = create_app(backend, cfg, shutdown_timeout=args.shutdown_timeout)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"hessgpt serve: {backend.model_id} on http://{shown}:{args.port}/  (API: http://{shown}:{args.port}/v1)")
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info",
                                           timeout_graceful_shutdown=args.shutdown_timeout))
    try:
        server.run()  # Ctrl+C / SIGTERM: stop accepting, finish or cancel in-flight requests, then return
    except KeyboardInterrupt:  # uvicorn re-raises the signal after its graceful shutdown
        pass
    return 0
