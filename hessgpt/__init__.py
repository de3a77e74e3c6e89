"""HessGPT: build a small bilingual (French/English) chat LLM from scratch and use it with tools.

    import hessgpt
    model, tokenizer = hessgpt.load("runs/tiny")            # `hessgpt model init tiny --tokenizer tok --out runs/tiny`
    logits = model(torch.tensor([tokenizer.encode("Bonjour")]))
"""

__version__ = "0.1.0"


def load(path, device=None, dtype=None):
    """Load (model, tokenizer) from a HessGPT checkpoint folder, a legacy .pt file or a Hugging Face directory."""
    from hessgpt.checkpoint import load

    return load(path, device=device, dtype=dtype)
