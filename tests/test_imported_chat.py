"""Imported models keep their own chat format (docs/chat-format.md, "Imported models").

A tiny random Llama with a ChatML vocabulary and SmolLM2-135M-Instruct's chat template (Apache-2.0,
HuggingFaceTB/SmolLM2-135M-Instruct tokenizer_config.json) is saved by transformers, imported with
`convert from-hf`, and rendered: ids equal transformers' apply_chat_template, HessGPT's tool blocks inside
the assistant turn, loss mask on assistant tokens only, generation stopping at <|im_end|>.
"""

import json

import pytest
import torch

from hessgpt import checkpoint
from hessgpt.convert.export import to_hf
from hessgpt.convert.hf import from_hf
from hessgpt.engine import Engine, SamplingParams
from hessgpt.errors import HessGPTError
from hessgpt.tokenizer import Tokenizer
from hessgpt.train.sft import render_file


transformers = pytest.importorskip("transformers")

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TEXT = ["What is the capital of France? Paris is the capital of France.",
        "Quelle est la capitale de la France ? La capitale de la France est Paris.",
        "print(15 * 23) 345 You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        "system user assistant Bonjour, ça va ? Très bien, merci !"] * 20


@pytest.fixture(scope="module")
def imported(tmp_path_factory, chatml_tokenizer):
    """(HF folder, HessGPT checkpoint folder) of a tiny ChatML Llama."""
    root = tmp_path_factory.mktemp("imported")
    bpe, hf_tok = chatml_tokenizer(TEXT, 400, SMOLLM2_TEMPLATE)
    hf_tok.save_pretrained(root / "hf")
    conf = transformers.LlamaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                    max_position_embeddings=256, tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(conf).save_pretrained(root / "hf")
    from_hf(str(root / "hf"), str(root / "ckpt"))
    return str(root / "hf"), str(root / "ckpt")


CONV = [{"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital of France."},
        {"role": "user", "content": "Quelle est la capitale de la France ?"}]


def test_renders_the_checkpoints_own_template_like_transformers(imported):
    hf_dir, ckpt = imported
    _, tok = checkpoint.load(ckpt)
    ref = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert tok.template is not None
    for conv in (CONV, [{"role": "system", "content": "Tu es HessGPT."}] + CONV):
        want = ref.apply_chat_template(conv, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert tok.render_for_generation(conv) == want
        full = conv + [{"role": "assistant", "content": "La capitale de la France est Paris."}]
        assert tok.render(full)[0] == ref.apply_chat_template(full, return_dict=True)["input_ids"]
    text = tok.decode(tok.render_for_generation(CONV))
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nQuelle est la capitale de la France ?<|im_end|>\n<|im_start|>assistant\n")
    assert "<|user|>" not in text and "<s>" not in text
    # message text never becomes a special token, whatever it contains
    ids = tok.render_for_generation([{"role": "user", "content": "<|im_end|>"}])
    assert ids.count(tok.template.specials["<|im_end|>"]) == 2   # the system turn's and the user turn's, not the text


def test_loss_mask_covers_assistant_tokens_and_tool_blocks_only(imported, tmp_path):
    _, ckpt = imported
    _, tok = checkpoint.load(ckpt)
    im_end = tok.template.specials["<|im_end|>"]
    conv = {"messages": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris.", "weight": 0},
        {"role": "user", "content": "Calcule 15 * 23"},
        {"role": "assistant", "content": "Je calcule.", "code": "print(15 * 23)"},
        {"role": "tool", "name": "python", "content": "345"},
        {"role": "assistant", "content": "15 * 23 = 345."}]}
    ids, mask = tok.render(conv)
    assert len(ids) == len(mask)
    trained = [i for i, m in zip(ids, mask) if m]
    want = (tok.encode("Je calcule.") + [tok.code_id] + tok.encode("print(15 * 23)") + [tok.end_id]
            + tok.encode("15 * 23 = 345.") + [im_end])
    assert trained == want
    # the result sits inside the assistant turn as HessGPT's tokens, untrained
    r, block = ids.index(tok.result_id), [tok.result_id] + tok.encode("345") + [tok.end_id]
    assert ids[r:r + len(block)] == block and not any(mask[r:r + len(block)])
    text = tok.decode(ids)
    assert "<|im_start|>assistant\nJe calcule.<|code|>print(15 * 23)<|end|><|result|>345<|end|>15 * 23 = 345.<|im_end|>\n" in text
    assert text.count("<|im_start|>assistant") == 2   # one template turn for text, code, result and answer
    # SFT tokenizes conversations with the same renderer
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(conv) + "\n")
    (got_ids, got_mask), = render_file(str(path), tok, 512)[0]
    assert (got_ids, got_mask) == (ids, mask)


def test_template_survives_save_and_load_and_native_stays_native(imported, tokenizer, tmp_path):
    _, ckpt = imported
    _, tok = checkpoint.load(ckpt)
    tok.save(str(tmp_path / "tok"))
    again = Tokenizer.load(str(tmp_path / "tok"))
    assert again.render_for_generation(CONV) == tok.render_for_generation(CONV)
    assert tokenizer.template is None and tokenizer.stop_ids == [tokenizer.end_id, tokenizer.eos_id]
    assert tokenizer.render_for_generation(CONV)[0] == tokenizer.bos_id
    with pytest.raises(HessGPTError, match="already ends inside an assistant turn"):
        tok.render_for_generation(CONV + [{"role": "assistant", "content": "x"}])


def test_generation_stops_at_the_templates_end_token(imported):
    _, ckpt = imported
    model, tok = checkpoint.load(ckpt)
    im_end = tok.template.specials["<|im_end|>"]
    assert tok.template.end_of_turn == im_end and im_end in tok.stop_ids
    prompt = tok.render_for_generation(CONV)
    # make <|im_end|> the model's greedy next token: its output row along the prompt's last hidden state
    hidden = {}
    model.model.norm.register_forward_hook(lambda mod, inp, out: hidden.update(h=out[0, -1].detach()))
    with torch.no_grad():
        model(torch.tensor([prompt]))
        model.lm_head.weight[im_end] = 100 * hidden["h"] / hidden["h"].norm()
    engine = Engine(model, tok)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    native_stops = SamplingParams(temperature=0.0, max_new_tokens=8, stop_token_ids=[tok.end_id, tok.eos_id])
    assert engine.generate(prompt, native_stops)[0] == im_end   # HessGPT's own stops alone would run past it
    assert engine.generate(prompt, greedy) == []                # the checkpoint's stop: the turn ends there


def test_hf_export_keeps_the_template_with_the_tool_blocks(imported, tmp_path):
    _, ckpt = imported
    model, tok = checkpoint.load(ckpt)
    to_hf(ckpt, str(tmp_path / "hf"))
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    tools = [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    conv = [{"role": "system", "content": "Tu es HessGPT."},
            {"role": "user", "content": "Calcule 15 * 23"},
            {"role": "assistant", "content": "Je calcule.", "code": "print(15 * 23)"},
            {"role": "tool", "name": "python", "content": "345"},
            {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
            {"role": "tool", "name": "get_weather", "content": "{\"temp\": 20}"},
            {"role": "assistant", "content": "15 * 23 = 345, 20 degrés."}]
    got = ref.apply_chat_template(conv, tools=tools, return_dict=True)["input_ids"]
    assert got == tok.render({"messages": conv, "tools": tools})[0]
    no_system = ref.apply_chat_template(conv[1:], tools=tools, return_dict=True)["input_ids"]   # tools still rendered
    assert no_system == tok.render({"messages": conv[1:], "tools": tools})[0]
    assert '# Tools\n{"name": "get_weather"' in ref.decode(no_system)
    assert (ref.apply_chat_template(CONV, add_generation_prompt=True, return_dict=True)["input_ids"]
            == tok.render_for_generation(CONV))
    assert ref.eos_token == "<|im_end|>"
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert hf.generation_config.eos_token_id[0] == tok.template.specials["<|im_end|>"]
    ids = torch.tensor([got])
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max().item() < 1e-4


def test_lora_trains_the_new_token_rows_and_peft_loads_them(imported, tmp_path):
    peft = pytest.importorskip("peft")
    from hessgpt.train.merge import merge
    from hessgpt.train.sft import main as sft_main

    _, ckpt = imported
    base, tok = checkpoint.load(ckpt)
    conv = {"messages": [{"role": "user", "content": "Calcule 15 * 23"},
                         {"role": "assistant", "content": "Je calcule.", "code": "print(15 * 23)"},
                         {"role": "tool", "name": "python", "content": "345"},
                         {"role": "assistant", "content": "15 * 23 = 345."}]}
    data = tmp_path / "train.jsonl"
    data.write_text((json.dumps(conv) + "\n") * 4)
    out = str(tmp_path / "adapter")
    assert sft_main(["--base", ckpt, "--data", str(data), "--out", out, "--lora", "--rank", "4", "--alpha", "8",
                     "--dropout", "0", "--steps", "3", "--lr", "1e-2", "--batch-size", "2", "--seq-len", "128",
                     "--dtype", "fp32", "--no-progress", "--eval-every", "0", "--device", "cpu"]) == 0
    rows = sorted(set(tok.special.values()) - {None})
    with open(f"{out}/adapter_config.json") as f:
        assert json.load(f)["trainable_token_indices"] == {"embed_tokens": rows, "lm_head": rows}   # untied head
    merge(ckpt, out, str(tmp_path / "merged"))
    merged, _ = checkpoint.load(str(tmp_path / "merged"))
    emb = lambda m: m.model.embed_tokens.weight.detach()
    assert (emb(merged)[tok.code_id] - emb(base)[tok.code_id]).abs().max() > 0      # the new rows were trained
    others = [i for i in range(tok.vocab_size) if i not in rows]
    assert torch.equal(emb(merged)[others], emb(base)[others])                     # and only they
    # transformers + peft on the base's HF export, with the adapter: the merged checkpoint's logits
    to_hf(ckpt, str(tmp_path / "hf"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32)
    pm = peft.PeftModel.from_pretrained(hf, out).eval()
    ids = torch.tensor([tok.render(conv)[0]])
    with torch.no_grad():
        assert (pm(input_ids=ids).logits - merged(ids)).abs().max().item() < 1e-4


LLAMA2_STYLE = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
                "{{ message['content'] + eos_token }}{% endif %}{% endfor %}")


def test_sentencepiece_gguf_with_its_template_renders_like_transformers(tmp_path):
    """A SentencePiece (Llama 2 / Mistral style) GGUF the test writes, with an [INST] template: the text runs
    between special tokens are encoded as transformers encodes the whole string (no extra "▁" per piece)."""
    gguf = pytest.importorskip("gguf")
    from hessgpt.config import ModelConfig
    from hessgpt.convert.gguf import gguf_tensors
    from hessgpt.convert.gguf_import import load_gguf
    from hessgpt.model import Transformer

    pieces = (["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
              + ["▁", *"abcdefghijklmnopqrstuvwxyzéàçBLPIT[]/N", "▁l", "▁le", "▁la", "es", "en", "on", "▁de", "▁c",
                 "▁ch", "▁cha", "▁chat", "er", "re", "▁p", "▁pa", "▁par", "ar", "ri", "is", "▁Pa", "▁Par", "▁Paris",
                 "▁[", "IN", "INST", "▁[/"])
    n_normal = len(pieces) - 259
    cfg = ModelConfig(vocab_size=len(pieces), dim=32, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=64,
                      context_length=64, rope_theta=10000.0, tie_embeddings=True)
    path = str(tmp_path / "spm.gguf")
    w = gguf.GGUFWriter(path, "llama")
    for add, v in [(w.add_context_length, 64), (w.add_embedding_length, 32), (w.add_block_count, 1),
                   (w.add_feed_forward_length, 64), (w.add_head_count, 2), (w.add_head_count_kv, 1),
                   (w.add_rope_dimension_count, 16), (w.add_rope_freq_base, 10000.0), (w.add_layer_norm_rms_eps, cfg.norm_eps),
                   (w.add_tokenizer_model, "llama"), (w.add_token_list, pieces),
                   (w.add_token_scores, [0.0] * 259 + [-float(i) for i in range(n_normal)]),
                   (w.add_token_types, [2, 3, 3] + [6] * 256 + [1] * n_normal),   # UNKNOWN, CONTROL, BYTE, NORMAL
                   (w.add_bos_token_id, 1), (w.add_eos_token_id, 2), (w.add_unk_token_id, 0), (w.add_chat_template, LLAMA2_STYLE)]:
        add(v)
    for name, t in gguf_tensors(Transformer(cfg).init_weights(2)):
        w.add_tensor(name, t.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()

    _, tok = load_gguf(path)
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="spm.gguf")
    conv = [{"role": "user", "content": "le chat de Paris"}, {"role": "assistant", "content": "la chaine par ici"},
            {"role": "user", "content": "Paris"}]
    assert tok.render(conv[:2])[0] == ref.apply_chat_template(conv[:2], return_dict=True)["input_ids"]
    assert tok.render_for_generation(conv) == ref.apply_chat_template(conv, add_generation_prompt=True, return_dict=True)["input_ids"]
    ids, mask = tok.render(conv[:2])
    assert tok.template.end_of_turn == tok.eos_id == 2   # the model's own </s> closes the turn
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "la chaine par ici</s>"


def test_a_template_that_trims_contents_is_followed(imported, tmp_path):
    """Llama 3 style `message['content'] | trim`: contents with surrounding blanks render as transformers'."""
    hf_dir, _ = imported
    trimming = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n\n' + message['content'] | trim "
                "+ '<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n\n' }}{% endif %}")
    ref = transformers.AutoTokenizer.from_pretrained(hf_dir)
    ref.chat_template = trimming
    ref.save_pretrained(tmp_path / "hf")
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "hf" / name).write_bytes(open(f"{hf_dir}/{name}", "rb").read())
    from_hf(str(tmp_path / "hf"), str(tmp_path / "ckpt"))
    _, tok = checkpoint.load(str(tmp_path / "ckpt"))
    assert tok.template.trims
    conv = [{"role": "user", "content": "  What is the capital of France?\n"}, {"role": "assistant", "content": "\nParis. "},
            {"role": "user", "content": " Quelle est la capitale de la France ? "}]
    assert tok.render_for_generation(conv) == ref.apply_chat_template(conv, add_generation_prompt=True, return_dict=True)["input_ids"]
    _, plain = checkpoint.load(imported[1])
    assert not plain.template.trims


def test_new_tool_token_rows_start_as_the_mean_of_the_words_they_stand_for(imported):
    """Descriptive initialization: `<|code|>`'s new embedding and output rows are the mean of the rows of
    "```python\\n" in the source vocabulary, each new token its own row (not all the same overall mean)."""
    from safetensors.torch import load_file

    from hessgpt.tokenizer import CODE, END, TOKEN_DESCRIPTIONS

    hf_dir, ckpt = imported
    src = load_file(f"{hf_dir}/model.safetensors")
    ours = load_file(f"{ckpt}/model.safetensors")
    tok = Tokenizer.load(ckpt)
    old_vocab = src["model.embed_tokens.weight"].shape[0]
    assert tok.code_id >= old_vocab and tok.end_id >= old_vocab
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        for name, i in ((CODE, tok.code_id), (END, tok.end_id)):
            ids = tok.encode(TOKEN_DESCRIPTIONS[name])
            assert ids and max(ids) < old_vocab
            torch.testing.assert_close(ours[key][i], src[key][ids].mean(0))
        assert not torch.allclose(ours[key][tok.code_id], ours[key][tok.end_id])
        torch.testing.assert_close(ours[key][:old_vocab], src[key])
