"""Decode-speed benchmark: HessGPT's engine (fp32, int8) vs `transformers` generate on the same random weights,
and llama.cpp on the exported GGUF when it is available (a `llama-bench` binary on PATH, or the `llama_cpp`
Python bindings).

"hessgpt fp32" is the engine as users get it: batch-1 decode through the native kernels (hessgpt/kernels,
compiled on first use) when they can be built here; "hessgpt fp32 (PyTorch path)" is the same engine with
them turned off (InferenceModel on PyTorch ops only), for reference.

    python benchmarks/decode.py                          # S, M and model1-0.5b, ~5 minutes on 2 cores
    python benchmarks/decode.py --models S --rounds 3 --tokens 64 --json out.json

Measured per model: batch-1 greedy decode tok/s (a 16-token prompt then N new tokens, medians of interleaved
rounds), prefill tok/s (a 128-token prompt), the bandwidth ceiling (bytes of weights read per token / measured
read bandwidth) and the fraction of it reached, and batch-8 decode throughput with the peak RSS of a process
doing only that (one child process per system, so the two memory figures are comparable).

Models (random weights, Mistral layout, untied head):
    S  ~16M:  vocab 8192,  dim 384, 6 layers, 6 heads / 2 kv, hidden 1024
    M  ~125M: vocab 32000, dim 768, 12 layers, 12 heads / 4 kv, hidden 2048
    model1-0.5b: the preset (vocab 32008, dim 1280, 22 layers, 20 heads / 5 kv, hidden 3840)
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

MODELS = {
    "S": dict(vocab_size=8192, dim=384, n_layers=6, n_heads=6, n_kv_heads=2, hidden_dim=1024, context_length=1024, tie_embeddings=False),
    "M": dict(vocab_size=32000, dim=768, n_layers=12, n_heads=12, n_kv_heads=4, hidden_dim=2048, context_length=1024, tie_embeddings=False),
    "model1-0.5b": "model1-0.5b",
}


def make_model(name: str):
    from hessgpt.config import ModelConfig
    from hessgpt.model import Transformer

    spec = MODELS[name]
    cfg = ModelConfig.preset(spec, context_length=1024) if isinstance(spec, str) else ModelConfig(**spec)
    return Transformer(cfg).init_weights(seed=0).eval()


def hf_model(model):
    """The same weights as a transformers MistralForCausalLM (fp32, eager attention)."""
    from transformers import MistralConfig, MistralForCausalLM

    from hessgpt.convert.hf import config_to_hf

    d = config_to_hf(model.config)
    d.pop("architectures"), d.pop("model_type"), d.pop("torch_dtype")
    hf = MistralForCausalLM(MistralConfig(**d))
    hf.load_state_dict(model.state_dict(), strict=False)
    return hf.eval()


def weight_bytes_per_token(model, int8: bool = False) -> int:
    """Bytes a batch-1 decode step must read: every linear weight (incl. the head), one embedding row."""
    cfg = model.config
    n_linear = cfg.num_params(embeddings=False) - (2 * cfg.n_layers + 1) * cfg.dim + cfg.vocab_size * cfg.dim
    n_small = (2 * cfg.n_layers + 1) * cfg.dim + cfg.dim
    return n_linear * (1 if int8 else 4) + n_small * 4


def read_bandwidth(gib: float = 1.0) -> float:
    """Memory read bandwidth in bytes/s: best of a few full reductions over a buffer far larger than the cache."""
    x = torch.ones(int(gib * 2**30 / 4))
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        x.sum()
        best = max(best, x.numel() * 4 / (time.perf_counter() - t))
    return best


def matmul_peak() -> float:
    """fp32 FLOP/s of a large square matmul (this CPU's practical peak)."""
    a, b = torch.randn(1536, 1536), torch.randn(1536, 1536)
    a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * 1536**3 / (time.perf_counter() - t))
    return best


# ---- one timed run per system ------------------------------------------------------------------------


def run_engine(engine, prompt: list[int], n: int) -> float:
    from hessgpt.engine import SamplingParams

    p = SamplingParams(max_new_tokens=n, stop_token_ids=[-1])
    t = time.perf_counter()
    out = engine.generate(prompt, p)
    dt = time.perf_counter() - t
    assert len(out) == n
    return n / dt


def run_hf(hf, prompt: list[int], n: int) -> float:
    ids = torch.tensor([prompt])
    t = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          pad_token_id=0)
    dt = time.perf_counter() - t
    assert out.shape[1] == len(prompt) + n
    return n / dt


def prefill_engine(engine, prompt: list[int]) -> float:
    engine._ensure_cache(1)
    x = torch.tensor([prompt])
    t = time.perf_counter()
    engine._forward(x, 0)
    return len(prompt) / (time.perf_counter() - t)


def prefill_hf(hf, prompt: list[int]) -> float:
    x = torch.tensor([prompt])
    t = time.perf_counter()
    with torch.inference_mode():
        hf(x, use_cache=True)
    return len(prompt) / (time.perf_counter() - t)


class LlamaCpp:
    """llama.cpp on a GGUF file: `llama-bench` if on PATH, else the llama_cpp Python bindings, else None."""

    def __init__(self, gguf_path: str, threads: int):
        self.path, self.threads = gguf_path, threads
        self.bench = shutil.which("llama-bench")
        self.llm = None
        if self.bench is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                return
            self.llm = Llama(gguf_path, n_ctx=512, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)

    @property
    def available(self) -> bool:
        return self.bench is not None or self.llm is not None

    def decode(self, prompt: list[int], n: int) -> float:
        if self.bench:
            out = subprocess.run([self.bench, "-m", self.path, "-p", "0", "-n", str(n), "-t", str(self.threads), "-r", "1", "-o", "json"],
                                 capture_output=True, text=True, check=True)
            return float(json.loads(out.stdout)[0]["avg_ts"])
        self.llm.reset()
        t = time.perf_counter()
        k = 0
        for _ in self.llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            k += 1
            if k == n:
                break
        return n / (time.perf_counter() - t)

    def prefill(self, prompt: list[int]) -> float | None:
        if self.llm is None:
            return None
        self.llm.reset()
        t = time.perf_counter()
        self.llm.eval(prompt)
        return len(prompt) / (time.perf_counter() - t)


# ---- batch-8 throughput + peak memory, one child process per system ----------------------------------


def peak_rss_mib() -> float:
    """VmHWM of this process (ru_maxrss would include the parent's RSS at fork time)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    model = make_model(args.model)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, model.config.vocab_size, (16,), generator=g).tolist() for _ in range(args.batch)]
    n = args.tokens
    if args.child == "hf":
        sys_ = hf_model(model)
        del model
        ids = torch.tensor(prompts)
        with torch.inference_mode():
            sys_.generate(ids[:, :4], max_new_tokens=2, do_sample=False, pad_token_id=0)    # warm-up
            t = time.perf_counter()
            out = sys_.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                do_sample=False, pad_token_id=0)
        assert out.shape == (args.batch, 16 + n)
    else:
        from hessgpt.engine import Engine, SamplingParams

        engine = Engine(model, None, max_len=256, int8=args.child == "int8")
        p = SamplingParams(max_new_tokens=n, stop_token_ids=[-1])
        engine.generate_batch([q[:4] for q in prompts], SamplingParams(max_new_tokens=2, stop_token_ids=[-1]))
        t = time.perf_counter()
        out = engine.generate_batch(prompts, p)
        assert all(len(o) == n for o in out)
    dt = time.perf_counter() - t
    print(json.dumps({"tok_s": args.batch * n / dt, "peak_rss_mib": peak_rss_mib()}))


def batch_run(name: str, system: str, batch: int, tokens: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", system, "--model", name, "--batch", str(batch), "--tokens", str(tokens),
           "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode:
        raise RuntimeError(f"{system} batch run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- main ----------------------------------------------------------------------------------------


def bench_model(name: str, rounds: int, tokens: int, threads: int, batch: int, bw: float, peak: float, tmp: str) -> dict:
    from hessgpt import checkpoint, kernels
    from hessgpt.convert.export import to_gguf
    from hessgpt.engine import Engine

    model = make_model(name)
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, cfg.vocab_size, (16,), generator=g).tolist()
    long_prompt = torch.randint(0, cfg.vocab_size, (128,), generator=g).tolist()
    with kernels.disabled():
        pytorch_fp32 = Engine(model, None, max_len=512)
    systems = {
        "hessgpt fp32": Engine(model, None, max_len=512),
        "hessgpt fp32 (PyTorch path)": pytorch_fp32,
        "hessgpt int8": Engine(model, None, max_len=512, int8=True),
        "plain static-cache fp32": Engine(model, None, max_len=512, fast=False),
        "transformers fp32": hf_model(model),
    }
    llama = {}
    if shutil.which("llama-bench") or _has_llama_cpp():
        ck = os.path.join(tmp, name)
        checkpoint.save(ck, model, _stand_in_tokenizer(cfg.vocab_size))   # a GGUF needs a tokenizer
        for t in ("f32", "q8_0"):
            path = os.path.join(tmp, f"{name}-{t}.gguf")
            to_gguf(ck, path, t)
            llama[f"llama.cpp {t}"] = LlamaCpp(path, threads)
    systems.update({k: v for k, v in llama.items() if v.available})

    decode = {k: [] for k in systems}
    prefill = {k: [] for k in systems}
    for k, s in systems.items():   # warm-up (first-call allocations, thread pools)
        _decode(k, s, prompt, 4)
    for _ in range(rounds):        # interleaved rounds: slow drifts of a shared machine hit every system alike
        for k, s in systems.items():
            decode[k].append(_decode(k, s, prompt, tokens))
            pf = _prefill(k, s, long_prompt)
            if pf is not None:
                prefill[k].append(pf)
    res = {"params": cfg.num_params(), "systems": {}}
    for k in systems:
        tps = statistics.median(decode[k])
        need = weight_bytes_per_token(model, int8=("int8" in k or "q8_0" in k))
        ceiling = bw / need
        res["systems"][k] = {"decode_tok_s": tps, "prefill_tok_s": statistics.median(prefill[k]) if prefill[k] else None,
                             "ceiling_tok_s": ceiling, "frac_ceiling": tps / ceiling,
                             "frac_matmul_peak": tps * 2 * (need / (1 if ("int8" in k or "q8_0" in k) else 4)) / peak}
    del systems, model
    if batch:
        for k in ("hessgpt fp32", "hessgpt int8", "transformers fp32"):
            child_kind = {"hessgpt fp32": "fp32", "hessgpt int8": "int8", "transformers fp32": "hf"}[k]
            res["systems"][k]["batch"] = batch_run(name, child_kind, batch, min(tokens, 64), threads)
    return res


def _has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _stand_in_tokenizer(vocab_size: int):
    """A byte-level BPE trained on the test fixtures (ids beyond it are padding rows in the GGUF vocab)."""
    from hessgpt.tokenizer import train_tokenizer

    here = os.path.dirname(os.path.abspath(__file__))
    texts = [os.path.join(here, "..", "tests", "fixtures", "text", f) for f in ("fr_ud_gsd.txt", "en_c4.txt")]
    return train_tokenizer(texts, vocab_size=min(vocab_size, 2048))


def _decode(k, s, prompt, n):
    if k.startswith("llama.cpp"):
        return s.decode(prompt, n)
    if k.startswith("transformers"):
        return run_hf(s, prompt, n)
    return run_engine(s, prompt, n)


def _prefill(k, s, prompt):
    if k.startswith("llama.cpp"):
        return s.prefill(prompt)
    if k.startswith("transformers"):
        return prefill_hf(s, prompt)
    return prefill_engine(s, prompt)


def print_table(results: dict, bw: float, peak: float, threads: int) -> None:
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; threads {threads}, read bandwidth {bw / 1e9:.1f} GB/s, fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    print("| model | system | decode tok/s | vs transformers | prefill tok/s | ceiling tok/s | % of ceiling | % matmul peak | batch-8 tok/s | batch-8 peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        base = r["systems"]["transformers fp32"]["decode_tok_s"]
        for k, s in r["systems"].items():
            b = s.get("batch") or {}
            pf = f"{s['prefill_tok_s']:.0f}" if s["prefill_tok_s"] else "-"
            print(f"| {name} ({r['params'] / 1e6:.0f}M) | {k} | {s['decode_tok_s']:.1f} | {s['decode_tok_s'] / base:.2f}x | {pf} | "
                  f"{s['ceiling_tok_s']:.0f} | {100 * s['frac_ceiling']:.0f}% | {100 * s['frac_matmul_peak']:.1f}% | "
                  f"{b.get('tok_s', float('nan')):.0f} | {b.get('peak_rss_mib', float('nan')):.0f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="S,M,model1-0.5b")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--big-tokens", type=int, default=32, help="tokens for model1-0.5b (slow in fp32)")
    p.add_argument("--batch", type=int, default=8, help="batch size of the throughput run (0 = skip)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--child", choices=["fp32", "int8", "hf"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        child(args)
        return 0
    bw, peak = read_bandwidth(), matmul_peak()
    from hessgpt import kernels

    lib = kernels.lib() if kernels.available() else None
    print("native kernels: " + (f"on (AVX{lib.hg_simd_width()}, {'OpenMP' if lib.hg_openmp() else 'pthread pool'})" if lib
                                else f"off ({kernels.build.unavailable_reason() or 'build failed'}): 'hessgpt fp32' is the PyTorch path"))
    if not (shutil.which("llama-bench") or _has_llama_cpp()):
        print("note: llama.cpp not found (no llama-bench on PATH, no llama_cpp module): llama.cpp rows skipped")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            n = args.big_tokens if name == "model1-0.5b" else args.tokens
            t = time.perf_counter()
            results[name] = bench_model(name, args.rounds, n, args.threads, args.batch if name != "model1-0.5b" else 0, bw, peak, tmp)
            print(f"{name}: done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    print_table(results, bw, peak, args.threads)
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"threads": args.threads, "bandwidth": bw, "matmul_peak": peak, "results": results}, f, indent=2)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
