"""Decode- and prefill-speed benchmark: HessGPT's engine (fp32, int8, int4) vs `transformers` on the same weights,
and vs llama.cpp's own benchmark tool `llama-bench` on the same model exported with `to-gguf` (fp32 vs f32, int8
vs q8_0, int4 vs q4_0: the same Q4_0 blocks on both sides).

"hessgpt fp32" is the engine as users get it: batch-1 decode through the native kernels (hessgpt/kernels,
compiled on first use) when they can be built here; "hessgpt fp32 (PyTorch path)" is the same engine with
them turned off (InferenceModel on PyTorch ops only), for reference.

    scripts/build-llama-bench.sh                         # once: builds llama-bench into ~/.cache/hessgpt/llama.cpp
    python benchmarks/decode.py                          # S, M and model1-0.5b, ~5 minutes on 2 cores
    python benchmarks/decode.py --models M --systems fp32,int8,llama --rounds 5
    python benchmarks/decode.py --models runs/smollm2-search/base --systems fp32,int8,llama   # a checkpoint
    python benchmarks/decode.py --models M --systems int8,int4,llama --rounds 5          # + llama.cpp q4_0

llama-bench is `--llama-bench PATH`, else the one on PATH, else the one scripts/build-llama-bench.sh built
($HESSGPT_LLAMA_CPP_DIR/bin, else the newest ~/.cache/hessgpt/llama.cpp/<version>/bin); without one the
llama.cpp rows are skipped (said on the first line).

Measured per model, each figure the median of interleaved rounds (one round runs every system once, in turn,
so the slow drifts of a shared machine hit every system alike; never the best run):
  decode (tg): batch-1 greedy tok/s of N tokens from an empty cache (HessGPT: a 1-token prompt then N-1 steps,
      N forward passes; llama-bench `-n N`: N single-token decodes);
  prefill (pp): prompt tok/s of one batch-1 forward over a P-token prompt (HessGPT: the engine's prefill;
      llama-bench `-p P`), for each P of --prefill that fits the model's context;
  the bandwidth ceiling (bytes of weights read per token / measured read bandwidth) and the fraction reached;
  batch-8 decode throughput with the peak RSS of a process doing only that (one child process per system).

Models (random weights, Mistral layout, untied head), or any HessGPT checkpoint folder:
    S  ~16M:  vocab 8192,  dim 384, 6 layers, 6 heads / 2 kv, hidden 1024
    M  ~125M: vocab 32000, dim 768, 12 layers, 12 heads / 4 kv, hidden 2048
    model1-0.5b: the preset (vocab 32008, dim 1280, 22 layers, 20 heads / 5 kv, hidden 3840)
"""

import argparse
import csv
import glob
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from transformers import MistralConfig, MistralForCausalLM

from hessgpt import checkpoint, kernels
from hessgpt.config import ModelConfig
from hessgpt.convert.export import to_gguf
from hessgpt.convert.hf import config_to_hf
from hessgpt.engine import Engine, SamplingParams
from hessgpt.model import Transformer
from hessgpt.tokenizer import train_tokenizer

MODELS = {
    "S": dict(vocab_size=8192, dim=384, n_layers=6, n_heads=6, n_kv_heads=2, hidden_dim=1024, context_length=1024, tie_embeddings=False),
    "M": dict(vocab_size=32000, dim=768, n_layers=12, n_heads=12, n_kv_heads=4, hidden_dim=2048, context_length=1024, tie_embeddings=False),
    "model1-0.5b": "model1-0.5b",
}
SYSTEMS = {   # --systems name -> the row it adds
    "fp32": "hessgpt fp32", "pytorch": "hessgpt fp32 (PyTorch path)", "int8": "hessgpt int8", "int4": "hessgpt int4",
    "plain": "plain static-cache fp32", "transformers": "transformers fp32", "llama": "llama.cpp f32 / q8_0 (/ q4_0 with int4)",
}
PAIRS = [("hessgpt fp32", "llama.cpp f32"), ("hessgpt int8", "llama.cpp q8_0"),   # the comparisons reported
         ("hessgpt int4", "llama.cpp q4_0")]


def make_model(spec: str):
    """A preset of MODELS with random weights (seed 0), or the model of a HessGPT checkpoint folder."""
    if spec in MODELS:
        s = MODELS[spec]
        cfg = ModelConfig.preset(s, context_length=1024) if isinstance(s, str) else ModelConfig(**s)
        return Transformer(cfg).init_weights(seed=0).eval()
    if checkpoint.is_checkpoint(spec):
        return checkpoint.load(spec)[0]
    raise SystemExit(f"--models: {spec!r} is neither a preset ({', '.join(MODELS)}) nor a HessGPT checkpoint folder")


def hf_model(model):
    """The same weights as a transformers MistralForCausalLM (fp32, eager attention)."""
    d = config_to_hf(model.config)
    d.pop("architectures"), d.pop("model_type"), d.pop("torch_dtype")
    hf = MistralForCausalLM(MistralConfig(**d))
    hf.load_state_dict(model.state_dict(), strict=False)
    return hf.eval()


def model_linear_params(model) -> int:
    """Weights of every linear layer, the head included (2 FLOPs each per decoded token)."""
    cfg = model.config
    return cfg.num_params(embeddings=False) - (2 * cfg.n_layers + 1) * cfg.dim + cfg.vocab_size * cfg.dim


def weight_bytes_per_token(model, bits: int = 32) -> int:
    """Bytes a batch-1 decode step must read: every linear weight (incl. the head) at `bits` (32 fp32, 8 int8 with
    a scale a row, 4 Q4_0: 4.5 bits with its fp16 scale a block of 32), the norms and one embedding row."""
    cfg = model.config
    n_small = (2 * cfg.n_layers + 1) * cfg.dim + cfg.dim
    per_weight = {32: 4.0, 8: 1.0, 4: 18 / 32}[bits]
    return int(model_linear_params(model) * per_weight) + n_small * 4


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


# ---- llama-bench: where it is, how it is run, what it printed ------------------------------------------


def llama_cpp_cache() -> str:
    """Where scripts/build-llama-bench.sh installs: $XDG_CACHE_HOME/hessgpt/llama.cpp (~/.cache/...)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                        "hessgpt", "llama.cpp")


def _version_key(path: str) -> tuple:
    """Sort key of .../llama.cpp/<version>/bin/llama-bench: the version's numbers."""
    return tuple(int(x) for x in re.findall(r"\d+", os.path.basename(os.path.dirname(os.path.dirname(path)))))


def find_llama_bench(explicit: str | None = None) -> str | None:
    """The one place that decides which llama-bench runs: `explicit` (--llama-bench), else `llama-bench` on
    PATH, else scripts/build-llama-bench.sh's ($HESSGPT_LLAMA_CPP_DIR/bin, else the newest version under
    llama_cpp_cache()); None when there is none."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise SystemExit(f"--llama-bench {explicit!r}: not an executable file")
        return os.path.abspath(explicit)
    on_path = shutil.which("llama-bench")
    if on_path:
        return on_path
    built = []
    if os.environ.get("HESSGPT_LLAMA_CPP_DIR"):
        built.append(os.path.join(os.environ["HESSGPT_LLAMA_CPP_DIR"], "bin", "llama-bench"))
    built += sorted(glob.glob(os.path.join(llama_cpp_cache(), "*", "bin", "llama-bench")), key=_version_key, reverse=True)
    return next((p for p in built if os.access(p, os.X_OK)), None)


def parse_llama_bench(text: str) -> list[dict]:
    """llama-bench's `-o json` or `-o csv` output -> one dict per test: kind "pp" (prompt processing, n = prompt
    tokens) or "tg" (generation, n = generated tokens), tok_s (its avg_ts), build (commit and build number),
    n_threads, model_type. A test mixing both (`-pg`) or at a depth (`-d`) is kind "pg"/"tg@d" and not compared."""
    text = text.strip()
    if not text:
        raise ValueError("llama-bench printed nothing")
    rows = json.loads(text) if text[0] == "[" else list(csv.DictReader(io.StringIO(text)))
    out = []
    for r in rows:
        n_prompt, n_gen, depth = int(r["n_prompt"]), int(r["n_gen"]), int(r.get("n_depth") or 0)
        kind = "pg" if n_prompt and n_gen else ("pp" if n_prompt else "tg")
        if depth:
            kind += f"@{depth}"
        out.append({"kind": kind, "n": n_prompt if kind.startswith("pp") else n_gen, "tok_s": float(r["avg_ts"]),
                    "build": f"{r['build_commit']} (build {int(r['build_number'])})", "n_threads": int(r["n_threads"]),
                    "model_type": r.get("model_type", "")})
    return out


def llama_bench_version(bench: str) -> str:
    """What the output names as the reference: the build's commit (from `--version`) and, for one built by
    scripts/build-llama-bench.sh, the VERSION file it wrote beside bin/ (commit and date of the vendored sources)."""
    out = subprocess.run([bench, "--version"], capture_output=True, text=True)
    line = next((ln.strip() for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("version")), "version unknown")
    stamp = os.path.join(os.path.dirname(os.path.dirname(bench)), "VERSION")
    if os.path.exists(stamp):
        with open(stamp) as f:
            line += f"; llama.cpp {f.read().strip()} vendored by llama-cpp-python {os.path.basename(os.path.dirname(os.path.dirname(bench)))}"
    return f"llama-bench {line} ({bench})"


class LlamaBench:
    """One llama-bench run (its warm-up, then one repetition) on a GGUF file = one round of this system."""

    def __init__(self, bench: str, gguf_path: str, threads: int):
        self.bench, self.path, self.threads = bench, gguf_path, threads

    def command(self, tokens: int, prefill: list[int]) -> list[str]:
        return [self.bench, "-m", self.path, "-p", ",".join(map(str, prefill)) or "0", "-n", str(tokens),
                "-t", str(self.threads), "-r", "1", "-o", "json"]

    def round(self, tokens: int, prefill: list[int]) -> dict:
        cmd = self.command(tokens, prefill)
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"llama-bench failed ({' '.join(cmd)}):\n{out.stderr[-2000:]}")
        return round_result(parse_llama_bench(out.stdout), tokens, prefill)


def round_result(rows: list[dict], tokens: int, prefill: list[int]) -> dict:
    """The decode and prefill figures of one llama-bench round, shaped like a HessGPT round."""
    tg = [r["tok_s"] for r in rows if r["kind"] == "tg" and r["n"] == tokens]
    pp = {r["n"]: r["tok_s"] for r in rows if r["kind"] == "pp"}
    missing = [f"tg{tokens}"] * (len(tg) != 1) + [f"pp{p}" for p in prefill if p not in pp]
    if missing:
        raise ValueError(f"llama-bench output lacks {', '.join(missing)} (it has {[r['kind'] + str(r['n']) for r in rows]})")
    return {"decode": tg[0], "prefill": {p: pp[p] for p in prefill}}


# ---- interleaved rounds, medians --------------------------------------------------------------------------


def interleaved_rounds(systems: dict, rounds: int) -> dict[str, list[dict]]:
    """Call every system's round() once per round, in turn (A, B, C, A, B, C, ...): a slow drift of a shared
    machine hits every system alike. Returns each system's list of round results, in order."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    out = {k: [] for k in systems}
    for _ in range(rounds):
        for k, run in systems.items():
            out[k].append(run())
    return out


def medians(results: list[dict]) -> dict:
    """The median of each figure over the rounds (never the best): {"decode": x, "prefill": {P: y}}."""
    return {"decode": statistics.median(r["decode"] for r in results),
            "prefill": {p: statistics.median(r["prefill"][p] for r in results) for p in results[0]["prefill"]}}


# ---- one round of a HessGPT / transformers system ---------------------------------------------------------


def run_engine(engine, prompt: list[int], n: int) -> float:
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


def torch_round(system, start: list[int], prompt: list[int], tokens: int, prefill: list[int]) -> dict:
    """One round of an Engine or a transformers model: decode of `tokens` from `start`, then each prefill length."""
    hf = isinstance(system, MistralForCausalLM)
    decode = run_hf(system, start, tokens) if hf else run_engine(system, start, tokens)
    pf = {p: (prefill_hf if hf else prefill_engine)(system, prompt[:p]) for p in prefill}
    return {"decode": decode, "prefill": pf}


# ---- batch-8 throughput + peak memory, one child process per system ----------------------------------


def peak_rss_mib() -> float:
    """VmHWM of this process (ru_maxrss would include the parent's RSS at fork time)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


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
        engine = Engine(model, None, max_len=256, int8=args.child == "int8")
        p = SamplingParams(max_new_tokens=n, stop_token_ids=[-1])
        engine.generate_batch([q[:4] for q in prompts], SamplingParams(max_new_tokens=2, stop_token_ids=[-1]))
        t = time.perf_counter()
        out = engine.generate_batch(prompts, p)
        assert all(len(o) == n for o in out)
    dt = time.perf_counter() - t
    print(json.dumps({"tok_s": args.batch * n / dt, "peak_rss_mib": peak_rss_mib()}))


def batch_run(spec: str, system: str, batch: int, tokens: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", system, "--model", spec, "--batch", str(batch), "--tokens", str(tokens),
           "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode:
        raise RuntimeError(f"{system} batch run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- main ----------------------------------------------------------------------------------------


def _stand_in_tokenizer(vocab_size: int):
    """A byte-level BPE trained on the test fixtures (ids beyond it are padding rows in the GGUF vocab)."""
    here = os.path.dirname(os.path.abspath(__file__))
    texts = [os.path.join(here, "..", "tests", "fixtures", "text", f) for f in ("fr_ud_gsd.txt", "en_c4.txt")]
    return train_tokenizer(texts, vocab_size=min(vocab_size, 2048))


def export_ggufs(spec: str, model, tmp: str, types=("f32", "q8_0")) -> dict[str, str]:
    """The GGUF files of this model in `types` (a checkpoint's own tokenizer; a preset gets a stand-in)."""
    ck = spec
    if not checkpoint.is_checkpoint(spec):
        ck = os.path.join(tmp, spec)
        checkpoint.save(ck, model, _stand_in_tokenizer(model.config.vocab_size))   # a GGUF needs a tokenizer
    paths = {}
    for t in types:
        paths[t] = os.path.join(tmp, f"{os.path.basename(os.path.normpath(spec))}-{t}.gguf")
        to_gguf(ck, paths[t], t)
    return paths


def bench_model(spec: str, args, bench: str | None, bw: float, peak: float, tmp: str) -> dict:
    tokens = args.big_tokens if spec == "model1-0.5b" else args.tokens
    wanted = args.systems.split(",")
    model = make_model(spec)
    cfg = model.config
    prefill = [p for p in args.prefill if p <= cfg.context_length]
    g = torch.Generator().manual_seed(0)
    start = torch.randint(0, cfg.vocab_size, (1,), generator=g).tolist()
    prompt = torch.randint(0, cfg.vocab_size, (max(prefill, default=1),), generator=g).tolist()
    max_len = max([tokens + 1, *prefill])
    systems = {}
    if "fp32" in wanted:
        systems["hessgpt fp32"] = Engine(model, None, max_len=max_len)
    if "pytorch" in wanted:
        with kernels.disabled():
            systems["hessgpt fp32 (PyTorch path)"] = Engine(model, None, max_len=max_len)
    if "int8" in wanted:
        systems["hessgpt int8"] = Engine(model, None, max_len=max_len, int8=True)
    if "int4" in wanted:
        systems["hessgpt int4"] = Engine(model, None, max_len=max_len, int4=True)
    if "plain" in wanted:
        systems["plain static-cache fp32"] = Engine(model, None, max_len=max_len, fast=False)
    if "transformers" in wanted:
        systems["transformers fp32"] = hf_model(model)
    for k, s in systems.items():   # warm-up (kernel build, first-call allocations, thread pools)
        torch_round(s, start, prompt, 4, prefill[:1])
    if bench and "llama" in wanted:   # llama-bench warms up inside each run
        # the llama.cpp side of each HessGPT system asked for (f32 for fp32 or none of them, q8_0, q4_0)
        types = tuple(t for t, ours in (("f32", "fp32"), ("q8_0", "int8"), ("q4_0", "int4")) if ours in wanted) or ("f32",)
        for t, path in export_ggufs(spec, model, tmp, types).items():
            systems[f"llama.cpp {t}"] = LlamaBench(bench, path, args.threads)
    runs = {k: (lambda s=s: s.round(tokens, prefill)) if isinstance(s, LlamaBench)
            else (lambda s=s: torch_round(s, start, prompt, tokens, prefill)) for k, s in systems.items()}
    samples = interleaved_rounds(runs, args.rounds)
    res = {"params": cfg.num_params(), "tokens": tokens, "prefill": prefill, "systems": {}}
    for k in systems:
        m = medians(samples[k])
        bits = 4 if ("int4" in k or "q4_0" in k) else 8 if ("int8" in k or "q8_0" in k) else 32
        need = weight_bytes_per_token(model, bits=bits)
        ceiling = bw / need
        res["systems"][k] = {"decode_tok_s": m["decode"], "prefill_tok_s": m["prefill"], "rounds": samples[k],
                             "ceiling_tok_s": ceiling, "frac_ceiling": m["decode"] / ceiling,
                             "frac_matmul_peak": m["decode"] * 2 * model_linear_params(model) / peak}
    del systems, model
    if args.batch and spec != "model1-0.5b":
        for k, kind in (("hessgpt fp32", "fp32"), ("hessgpt int8", "int8"), ("transformers fp32", "hf")):
            if k in res["systems"]:
                res["systems"][k]["batch"] = batch_run(spec, kind, args.batch, min(tokens, 64), args.threads)
    return res


def print_tables(results: dict, rounds: int, reference: str | None, bw: float, peak: float, threads: int) -> None:
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; threads {threads}, read bandwidth "
          f"{bw / 1e9:.1f} GB/s, fp32 matmul peak {peak / 1e9:.0f} GFLOP/s; medians of {rounds} interleaved rounds")
    lengths = sorted({p for r in results.values() for p in r["prefill"]})
    pp_head = "".join(f" pp{p} tok/s |" for p in lengths)
    print(f"| model | system | decode tok/s | vs transformers |{pp_head} ceiling tok/s | % of ceiling | % matmul peak | batch-8 tok/s | batch-8 peak RSS MiB |")
    print("|---|---|---|---|" + "---|" * len(lengths) + "---|---|---|---|---|")
    for name, r in results.items():
        base = r["systems"].get("transformers fp32", {}).get("decode_tok_s")
        for k, s in r["systems"].items():
            b = s.get("batch") or {}
            vs = f"{s['decode_tok_s'] / base:.2f}x" if base else "-"
            pf = "".join(f" {s['prefill_tok_s'][p]:.0f} |" if p in s["prefill_tok_s"] else " - |" for p in lengths)
            print(f"| {name} ({r['params'] / 1e6:.0f}M) | {k} | {s['decode_tok_s']:.1f} | {vs} |{pf} "
                  f"{s['ceiling_tok_s']:.0f} | {100 * s['frac_ceiling']:.0f}% | {100 * s['frac_matmul_peak']:.1f}% | "
                  f"{b.get('tok_s', float('nan')):.0f} | {b.get('peak_rss_mib', float('nan')):.0f} |")
    if not reference:
        return
    print(f"\nHessGPT vs llama-bench, same GGUF, medians of {rounds} interleaved rounds; reference: {reference}")
    pp_head = "".join(f" pp{p}: HessGPT / llama.cpp tok/s |" for p in lengths)
    print(f"| model | pair | tg: HessGPT / llama.cpp tok/s |{pp_head}")
    print("|---|---|---|" + "---|" * len(lengths))
    for name, r in results.items():
        for ours, ref in PAIRS:
            if ours not in r["systems"] or ref not in r["systems"]:
                continue
            a, b = r["systems"][ours], r["systems"][ref]
            cells = [f"{a['decode_tok_s']:.1f} / {b['decode_tok_s']:.1f} = **{a['decode_tok_s'] / b['decode_tok_s']:.2f}x**"]
            for p in lengths:
                x, y = a["prefill_tok_s"].get(p), b["prefill_tok_s"].get(p)
                cells.append(f"{x:.0f} / {y:.0f} = **{x / y:.2f}x**" if x and y else "-")
            print(f"| {name} (tg{r['tokens']}) | {ours} vs {ref} | " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="S,M,model1-0.5b", help=f"comma list of presets ({', '.join(MODELS)}) and/or checkpoint folders")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=128, help="decode (tg) tokens")
    p.add_argument("--big-tokens", type=int, default=32, help="decode tokens for model1-0.5b (slow in fp32)")
    p.add_argument("--prefill", default="128,512", help="prompt lengths of the prefill (pp) figures; those beyond a model's context are dropped")
    p.add_argument("--batch", type=int, default=8, help="batch size of the throughput run (0 = skip)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--llama-bench", help="the llama-bench binary (default: on PATH, else scripts/build-llama-bench.sh's)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--child", choices=["fp32", "int8", "hf"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        child(args)
        return 0
    bad = [s for s in args.systems.split(",") if s not in SYSTEMS]
    if bad:
        p.error(f"--systems: unknown {', '.join(map(repr, bad))} (known: {', '.join(SYSTEMS)})")
    try:
        args.prefill = [int(x) for x in args.prefill.split(",") if x]
    except ValueError:
        p.error(f"--prefill: {args.prefill!r} is not a comma list of prompt lengths")
    bench = find_llama_bench(args.llama_bench) if "llama" in args.systems.split(",") else None
    reference = llama_bench_version(bench) if bench else None
    print(f"reference: {reference}" if bench else
          "note: no llama-bench (--llama-bench, PATH, scripts/build-llama-bench.sh's cache): llama.cpp rows skipped")
    bw, peak = read_bandwidth(), matmul_peak()
    lib = kernels.lib() if kernels.available() else None
    print("native kernels: " + (f"on (AVX{lib.hg_simd_width()}, {'OpenMP' if lib.hg_openmp() else 'pthread pool'})" if lib
                                else f"off ({kernels.build.unavailable_reason() or 'build failed'}): 'hessgpt fp32' is the PyTorch path"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models.split(","):
            t = time.perf_counter()
            results[spec] = bench_model(spec, args, bench, bw, peak, tmp)
            print(f"{spec}: done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    print_tables(results, args.rounds, reference, bw, peak, args.threads)
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"threads": args.threads, "bandwidth": bw, "matmul_peak": peak, "rounds": args.rounds,
                       "reference": reference, "results": results}, f, indent=2)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
