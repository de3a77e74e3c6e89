"""The lm-eval route: the checkpoint's HF export loads in transformers; registering without lm-eval fails cleanly."""

import importlib.util

import pytest
import torch

from hessgpt.errors import HessGPTError
from hessgpt.eval.lm_eval import export_for_hf, register


def test_export_for_hf_gives_a_transformers_directory(tiny_ckpt, tmp_path):
    transformers = pytest.importorskip("transformers")
    import hessgpt

    out = export_for_hf(tiny_ckpt, str(tmp_path / "hf"))
    assert export_for_hf(out) == out  # an HF directory passes through
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    model, tok = hessgpt.load(tiny_ckpt)
    ids = torch.tensor([[1] + tok.encode("Bonjour, ceci est un test.")])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model.eval()(ids), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is not None, reason="lm-eval is installed")
def test_register_without_lm_eval_is_a_user_error():
    with pytest.raises(HessGPTError, match="lm-evaluation-harness is not installed"):
        register()


def test_missing_checkpoint():
    with pytest.raises(HessGPTError, match="no such checkpoint"):
        export_for_hf("/nonexistent/ckpt")
