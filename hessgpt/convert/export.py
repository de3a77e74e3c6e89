"""Export to other ecosystems from any path `hessgpt.load` reads (a HessGPT checkpoint, int8 folder, legacy .pt,
Hugging Face folder or GGUF file): `hessgpt convert to-hf` and `to-gguf`. They sit above loader.py, which
itself uses the readers in hf.py, gguf_import.py and legacy.py.
"""

import os

from hessgpt.convert.gguf import check_type, write_gguf
from hessgpt.convert.hf import save_hf
from hessgpt.errors import HessGPTError
from hessgpt.loader import load


def to_hf(ckpt: str, out: str) -> None:
    """Write a directory that `AutoModelForCausalLM` and `AutoTokenizer` load offline."""
    model, tokenizer = load(ckpt)
    save_hf(model, tokenizer, out)


def to_gguf(ckpt: str, out: str, type: str = "f16") -> dict:
    """Write `out` (a .gguf file, atomically). Returns {"tensors", "bytes", "type"}."""
    check_type(type)
    model, tokenizer = load(ckpt)
    if tokenizer is None:
        raise HessGPTError(f"{ckpt}: no tokenizer beside the weights; a GGUF file needs one")
    return write_gguf(model, tokenizer, out, type, name=os.path.basename(os.path.normpath(ckpt)))
