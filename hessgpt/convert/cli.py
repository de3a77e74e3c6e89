"""`hessgpt convert`: to-hf, to-gguf (export.py), from-hf (hf.py) and from-gguf (gguf_import.py)."""

import argparse

from hessgpt.convert.export import to_gguf, to_hf
from hessgpt.convert.gguf_import import from_gguf
from hessgpt.convert.hf import from_hf


def cli_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="hessgpt convert", description="Move weights to and from other ecosystems.")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("to-hf", help="HessGPT checkpoint -> transformers MistralForCausalLM directory")
    a.add_argument("ckpt")
    a.add_argument("out")
    b = sub.add_parser("from-hf", help="Mistral/Llama transformers directory -> HessGPT checkpoint")
    b.add_argument("hf_dir")
    b.add_argument("out")
    g = sub.add_parser("to-gguf", help="HessGPT checkpoint -> GGUF file for llama.cpp / Ollama")
    g.add_argument("ckpt")
    g.add_argument("out")
    g.add_argument("--type", default="f16", choices=["f32", "f16", "q8_0", "q4_0"])
    i = sub.add_parser("from-gguf", help="llama-architecture GGUF file (F32/F16/BF16/Q8_0/Q4_0/Q4_1/K-quants) -> HessGPT checkpoint")
    i.add_argument("gguf_file")
    i.add_argument("out")
    args = p.parse_args(argv)
    if args.cmd == "to-hf":
        to_hf(args.ckpt, args.out)
        print(f"wrote {args.out} (load with transformers.AutoModelForCausalLM.from_pretrained({args.out!r}))")
    elif args.cmd == "from-hf":
        from_hf(args.hf_dir, args.out)
        print(f"wrote HessGPT checkpoint {args.out}")
    elif args.cmd == "from-gguf":
        stats = from_gguf(args.gguf_file, args.out)
        types = ", ".join(f"{n} {k}" for k, n in sorted(stats["types"].items()))
        print(f"wrote HessGPT checkpoint {args.out} ({stats['params'] / 1e6:.1f}M params fp32, vocab {stats['vocab_size']}; "
              f"dequantized from {types} tensors)")
    else:
        to_gguf(args.ckpt, args.out, args.type)
        print(f"wrote {args.out}")
    return 0
