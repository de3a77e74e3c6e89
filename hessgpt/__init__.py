"""HessGPT: build a small bilingual (French/English) chat LLM from scratch and use it with tools.

    import hessgpt
    model, tokenizer = hessgpt.load("runs/tiny")            # `hessgpt model init tiny --tokenizer tok --out runs/tiny`
    logits = model(torch.tensor([tokenizer.encode("Bonjour")]))
"""

__version__ = "0.1.0"


def load(path, device=None, dtype=None):
    """Load (model, tokenizer) from a HessGPT checkpoint folder (fp32 or int8), a legacy .pt file, a Hugging Face
    directory or a .gguf file (hessgpt/loader.py decides which)."""
    # imported here, not at the top, so that `import hessgpt.<anything>` (e.g. the CLI's instant --help) does
    # not import torch; this is not a cycle: loader.py never imports the package root
    from hessgpt.loader import load  # lazy: torch (~1.5 s)

    return load(path, device=device, dtype=dtype)
