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


@pytest.mark.parametrize("value,expected", [('"abc"', "dim must be a positive integer, got 'abc'"),
                                            ("0", "dim must be a positive integer, got 0"),
                                            ("2.5", "dim must be a positive integer, got 2.5")])
def test_bad_config_value_is_one_line(tmp_path, value, expected):
    # a wrong type in config.json (or from --set) is named, not a TypeError from inside __post_init__
    d = tmp_path / "ck"
    d.mkdir()
    (d / "config.json").write_text('{"dim": %s, "n_layers": 2, "n_heads": 4}' % value)
    one_line_error(hessgpt("model", "info", str(d)), expected)


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


def _tool_script(messages, params, tools):
    """A backend that answers "calcule" with a code step, anything else plainly."""
    from hessgpt.events import Event

    last = messages[-1]["content"].lower()
    if "calcule" in last:
        return [Event("text", "Je lance un petit script."), Event("code", "print(10 * 10)", {"lang": "python"}),
                Event("result", "100\n", {"status": "ok"}), Event("text", "\n\nRésultat : 100.")]
    return [Event("text", f"Réponse {len(messages)}.")]


def test_ask_several_prompts_is_one_conversation(monkeypatch, capsys):
    from hessgpt import chat
    from hessgpt.serve.backends import ScriptedBackend

    backend = ScriptedBackend(_tool_script, model_id="s")
    monkeypatch.setattr(chat, "build_backend", lambda args: backend)
    assert chat.ask_main(["--prompt", "Calcule 10 * 10", "--prompt", "Et divisé par 4 ?", "--prompt", "Merci !"]) == 0
    out = capsys.readouterr().out
    # each turn answered and printed in order
    assert out.index("Calcule 10 * 10") < out.index("Résultat : 100.") < out.index("Et divisé par 4 ?") \
        < out.index("Réponse 3.") < out.index("Merci !") < out.index("Réponse 5.")
    # the history carried: an earlier tool turn is one plain assistant message (text before + "\n\n" + after)
    assert [m["role"] for m in backend.calls[2]["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert backend.calls[1]["messages"][1] == {"role": "assistant", "content": "Je lance un petit script.\n\nRésultat : 100."}
    assert backend.calls[2]["messages"][3] == {"role": "assistant", "content": "Réponse 3."}
    # --json: the events of every turn, each turn ending with its done event
    backend.calls.clear()
    assert chat.ask_main(["--prompt", "Calcule 10 * 10", "--prompt", "ok", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["type"] for e in events].count("done") == 2 and events[-1]["type"] == "done"
    assert backend.calls[1]["messages"][1]["content"] == "Je lance un petit script.\n\nRésultat : 100."


def test_chat_stores_an_earlier_tool_turn_as_one_plain_message(monkeypatch, capsys, tmp_path):
    from hessgpt import chat
    from hessgpt.serve.backends import ScriptedBackend

    backend = ScriptedBackend(_tool_script, model_id="s")
    monkeypatch.setattr(chat, "build_backend", lambda args: backend)
    lines = iter(["Calcule 10 * 10", "Et la capitale de l'Italie ?", f"/save {tmp_path}/c.json", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert chat.chat_main([]) == 0
    out = capsys.readouterr().out
    assert "Je lance un petit script." in out and "print(10 * 10)" in out and "Résultat : 100." in out
    sent = backend.calls[1]["messages"]
    assert sent[1] == {"role": "assistant", "content": "Je lance un petit script.\n\nRésultat : 100."}
    saved = json.load(open(tmp_path / "c.json"))["messages"]
    assert saved[1]["content"] == "Je lance un petit script.\n\nRésultat : 100." and len(saved) == 4


def test_ask_two_prompts_on_a_checkpoint(tiny_ckpt):
    r = hessgpt("ask", tiny_ckpt, "--no-tools", "--prompt", "Bonjour", "--prompt", "Et toi ?", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("question: ") == 2 and r.stdout.index("Bonjour") < r.stdout.index("Et toi ?")
