"""The `hessgpt` command: real subprocesses, checking output and one-line errors with exit code 1."""

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def hessgpt(*args, input=None, timeout=240):
    return subprocess.run([sys.executable, "-m", "hessgpt", *args], capture_output=True, text=True, env=ENV,
                          input=input, timeout=timeout)


def one_line_error(r, needle):
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and needle in lines[0], lines[0]


def test_help_lists_commands():
    r = hessgpt("--help")
    assert r.returncode == 0
    for cmd in ("tokenizer", "model", "convert", "generate", "chat", "ask", "data", "pretrain", "sft", "merge", "serve", "eval"):
        assert f"  {cmd} " in r.stdout


def test_model_info_preset_and_checkpoint(tiny_ckpt):
    r = hessgpt("model", "info", "model1-0.5b")
    assert r.returncode == 0 and "(496.5M;" in r.stdout and "n_kv_heads      5" in r.stdout
    r = hessgpt("model", "info", tiny_ckpt, "--json")
    info = json.loads(r.stdout)
    assert info["dim"] == 128 and info["num_params"] > 0


def test_bad_path_is_one_line(tmp_path):
    one_line_error(hessgpt("model", "info", str(tmp_path / "nope")), "nope")
    one_line_error(hessgpt("generate", str(tmp_path / "nope"), "--prompt", "x"), "nope")


def test_unknown_config_key_is_one_line(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"dim": 64, "n_layers": 2, "n_heads": 4, "hidden": 5}))
    one_line_error(hessgpt("model", "info", str(d)), "unknown config key 'hidden'")


def test_vocab_mismatch_is_one_line(tmp_path, tokenizer):
    from hessgpt import checkpoint
    from hessgpt.config import ModelConfig
    from hessgpt.model import Transformer

    checkpoint.save(str(tmp_path / "ck"), Transformer(ModelConfig.preset("tiny", vocab_size=300)), tokenizer)
    one_line_error(hessgpt("generate", str(tmp_path / "ck"), "--prompt", "x"), "vocab mismatch")


def test_tokenizer_train_and_encode(tmp_path):
    text = os.path.join(os.path.dirname(__file__), "fixtures", "text", "fr_ud_gsd.txt")
    r = hessgpt("tokenizer", "train", "--input", text, "--vocab-size", "600", "--out", str(tmp_path / "tok"))
    assert r.returncode == 0, r.stderr
    assert "vocab 600" in r.stdout and "tiktoken (verified identical)" in r.stdout
    r = hessgpt("tokenizer", "encode", str(tmp_path / "tok"), "Bonjour <|code|>")
    ids = json.loads(r.stdout.splitlines()[0])
    assert 8 not in ids  # <|code|> typed as text is not the special token


def test_generate_and_chat_and_ask(tiny_ckpt, tmp_path):
    r = hessgpt("generate", tiny_ckpt, "--prompt", "Bonjour", "--max-new-tokens", "8")
    assert r.returncode == 0 and r.stdout.startswith("Bonjour")
    r = hessgpt("chat", tiny_ckpt, "--no-tools", "--max-new-tokens", "5",
                input=f"Salut\n/system Tu es HessGPT.\n/save {tmp_path}/c.json\nÇa va ?\n/quit\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("hessgpt> ") == 2 and "(system prompt set)" in r.stdout
    saved = json.load(open(tmp_path / "c.json"))
    assert saved["system"] == "Tu es HessGPT." and saved["messages"][0] == {"role": "user", "content": "Salut"}
    r = hessgpt("ask", "--model1", tiny_ckpt, "--no-tools", "--prompt", "Calcule 15 * 23", "--max-new-tokens", "5", "--json")
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[-1]["type"] == "done" and events[-1]["data"]["completion_tokens"] <= 5


def test_convert_cli_round_trip(tiny_ckpt, tmp_path):
    r = hessgpt("convert", "to-hf", tiny_ckpt, str(tmp_path / "hf"))
    assert r.returncode == 0, r.stderr
    r = hessgpt("convert", "from-hf", str(tmp_path / "hf"), str(tmp_path / "back"))
    assert r.returncode == 0, r.stderr
    assert os.path.exists(tmp_path / "back" / "model.safetensors")
