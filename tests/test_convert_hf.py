"""Logits parity with transformers on the same random weights, through convert to-hf and from-hf."""

import json
import os

import pytest
import torch

from hessgpt import checkpoint
from hessgpt.convert.export import to_hf
from hessgpt.convert.hf import from_hf

transformers = pytest.importorskip("transformers")


def test_to_hf_logits_and_chat_template_match(tiny_ckpt, tokenizer, tmp_path):
    out = str(tmp_path / "hf")
    to_hf(tiny_ckpt, out)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "MistralForCausalLM"
    model, _ = checkpoint.load(tiny_ckpt)
    ids = torch.randint(0, tokenizer.vocab_size, (2, 64))
    with torch.no_grad():
        diff = (model(ids) - hf(ids).logits).abs().max().item()
    assert diff < 1e-4
    # rope base carried explicitly (transformers 5 reads rope_parameters)
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["rope_parameters"]["rope_theta"] == 50000.0

    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    conv = [{"role": "system", "content": "Tu es HessGPT."}, {"role": "user", "content": "Bonjour, ça va ?"},
            {"role": "assistant", "content": "Très bien, merci !"}, {"role": "user", "content": "Calcule 2+2"}]
    enc = hf_tok.apply_chat_template(conv, add_generation_prompt=True, return_dict=True)
    assert enc["input_ids"] == tokenizer.render_for_generation(conv)
    text = hf_tok.apply_chat_template(conv, tokenize=False)
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == tokenizer.render(conv)[0]
    assert hf_tok.decode(tokenizer.encode("Bonjour 👋")) == "Bonjour 👋"
    tools = [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    enc = hf_tok.apply_chat_template(conv[1:], tools=tools, add_generation_prompt=True, return_dict=True)
    assert enc["input_ids"] == tokenizer.render_for_generation({"messages": conv[1:], "tools": tools})
    assert "# Tools" in hf_tok.decode(enc["input_ids"])


def test_from_hf_round_trip(tiny_ckpt, tmp_path):
    to_hf(tiny_ckpt, str(tmp_path / "hf"))
    from_hf(str(tmp_path / "hf"), str(tmp_path / "back"))
    a, _ = checkpoint.load(tiny_ckpt)
    b, tok = checkpoint.load(str(tmp_path / "back"))
    ids = torch.randint(0, tok.vocab_size, (1, 32))
    with torch.no_grad():
        assert (a(ids) - b(ids)).abs().max().item() < 1e-6


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_import_random_hf_model(arch, tmp_path):
    cls = transformers.LlamaForCausalLM if arch == "llama" else transformers.MistralForCausalLM
    conf = (transformers.LlamaConfig if arch == "llama" else transformers.MistralConfig)(
        vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rope_theta=20000.0, tie_word_embeddings=arch == "llama")
    torch.manual_seed(0)
    hf = cls(conf).eval()
    hf.save_pretrained(tmp_path / "hf")
    from_hf(str(tmp_path / "hf"), str(tmp_path / "ours"))
    ours, _ = checkpoint.load(str(tmp_path / "ours"))
    ids = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max().item() < 1e-4
    assert ours.config.rope_theta == 20000.0 and ours.config.tie_embeddings == (arch == "llama")


def test_unknown_hf_keys_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    conf = transformers.MistralConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    transformers.MistralForCausalLM(conf).save_pretrained(tmp_path / "hf")
    sd = load_file(str(tmp_path / "hf" / "model.safetensors"))
    sd["model.layers.0.extra.weight"] = torch.zeros(2)
    save_file(sd, str(tmp_path / "hf" / "model.safetensors"))
    from hessgpt.errors import HessGPTError

    with pytest.raises(HessGPTError, match="model.layers.0.extra.weight"):
        from_hf(str(tmp_path / "hf"), str(tmp_path / "x"))
