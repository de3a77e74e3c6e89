"""HessGPT checkpoints in lm-evaluation-harness (https://github.com/EleutherAI/lm-evaluation-harness).

lm-eval is not a dependency. The plain route needs nothing from here:

    hessgpt convert to-hf runs/model1/final hf/model1
    lm_eval --model hf --model_args pretrained=hf/model1,dtype=float32 --tasks hellaswag,arc_easy --batch_size 8

Or, with lm-eval installed, let this module convert on the fly (model name "hessgpt"):

    python -m hessgpt.eval.lm_eval --model hessgpt --model_args pretrained=runs/model1/final --tasks arc_easy
"""

from __future__ import annotations

import os
import sys
import tempfile

from hessgpt.checkpoint import is_checkpoint
from hessgpt.convert.export import to_hf
from hessgpt.errors import HessGPTError


def export_for_hf(path: str, out_dir: str | None = None) -> str:
    """A Hugging Face directory for `path`: itself if it already is one, else `hessgpt convert to-hf` into
    out_dir (default: a fresh temporary folder)."""
    if not os.path.exists(path):
        raise HessGPTError(f"no such checkpoint {path}")
    if not is_checkpoint(path):
        return path  # an HF directory (or a legacy file HFLM will reject with its own message)
    out = out_dir or os.path.join(tempfile.mkdtemp(prefix="hessgpt-lm-eval-"), "hf")
    to_hf(path, out)
    return out


def register():
    """Register the "hessgpt" model with lm-eval (an HFLM over the converted checkpoint); returns the class."""
    try:
        from lm_eval.api.registry import register_model
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise HessGPTError("lm-evaluation-harness is not installed (pip install lm-eval); "
                           "or convert with `hessgpt convert to-hf` and use `lm_eval --model hf`") from None

    @register_model("hessgpt")
    class HessGPTLM(HFLM):
        def __init__(self, pretrained: str, **kwargs):
            super().__init__(pretrained=export_for_hf(pretrained), **kwargs)

    return HessGPTLM


def main() -> None:
    register()
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    try:
        main()
    except HessGPTError as e:
        print(f"hessgpt lm_eval: error: {e}", file=sys.stderr)
        sys.exit(1)
