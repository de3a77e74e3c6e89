"""benchmarks/decode.py against llama-bench: the parser of llama-bench's output (on outputs recorded from a real
build, tests/fixtures/bench/README.md), the medians of interleaved rounds, where llama-bench is looked for, and,
where a llama.cpp build is found (scripts/build-llama-bench.sh), llama.cpp running HessGPT's GGUF export."""

import json
import os
import subprocess

import pytest
import torch

from benchmarks import decode
from hessgpt import checkpoint
from hessgpt.convert.export import to_gguf

BENCH = os.path.join(os.path.dirname(__file__), "fixtures", "bench")


def read(name: str) -> str:
    with open(os.path.join(BENCH, name)) as f:
        return f.read()


# ---- the parser ---------------------------------------------------------------------------------------------


def test_parse_recorded_json_output():
    rows = decode.parse_llama_bench(read("llama-bench-tiny-f32.json"))
    assert [(r["kind"], r["n"]) for r in rows] == [("pp", 16), ("pp", 64), ("tg", 8)]
    raw = json.loads(read("llama-bench-tiny-f32.json"))
    assert [r["tok_s"] for r in rows] == [x["avg_ts"] for x in raw]
    assert all(r["tok_s"] > 0 and r["n_threads"] == 1 for r in rows)
    assert rows[0]["build"] == f"{raw[0]['build_commit']} (build {raw[0]['build_number']})"


def test_parse_recorded_csv_output_equals_json():
    """The same run printed with -o csv parses to the same tests (the figures differ: it is another run)."""
    rows = decode.parse_llama_bench(read("llama-bench-tiny-q8_0.csv"))
    assert [(r["kind"], r["n"]) for r in rows] == [("pp", 16), ("pp", 64), ("tg", 8)]
    assert all(isinstance(r["tok_s"], float) and r["tok_s"] > 0 for r in rows)
    assert "Q8_0" in rows[0]["model_type"]


def test_parse_kinds_of_mixed_and_deep_tests():
    row = dict(json.loads(read("llama-bench-tiny-f32.json"))[0])
    mixed = {**row, "n_prompt": 16, "n_gen": 8}
    deep = {**row, "n_prompt": 0, "n_gen": 8, "n_depth": 64}
    got = decode.parse_llama_bench(json.dumps([mixed, deep]))
    assert [(r["kind"], r["n"]) for r in got] == [("pg", 8), ("tg@64", 8)]


def test_round_result_takes_tg_and_each_pp_and_names_what_is_missing():
    rows = decode.parse_llama_bench(read("llama-bench-tiny-f32.json"))
    got = decode.round_result(rows, 8, [16, 64])
    assert got == {"decode": rows[2]["tok_s"], "prefill": {16: rows[0]["tok_s"], 64: rows[1]["tok_s"]}}
    with pytest.raises(ValueError, match=r"lacks tg128, pp512"):
        decode.round_result(rows, 128, [16, 512])


def test_parse_empty_output_is_an_error():
    with pytest.raises(ValueError, match="printed nothing"):
        decode.parse_llama_bench("  \n")


def test_llama_bench_command():
    lb = decode.LlamaBench("/x/llama-bench", "/m.gguf", 2)
    assert lb.command(128, [128, 512]) == ["/x/llama-bench", "-m", "/m.gguf", "-p", "128,512", "-n", "128", "-t", "2",
                                           "-r", "1", "-o", "json"]
    assert lb.command(64, [])[3:5] == ["-p", "0"]


# ---- interleaved rounds and their medians -------------------------------------------------------------------


def test_rounds_interleave_systems_and_report_medians_not_the_best():
    calls = []
    figures = {"a": iter([10.0, 30.0, 20.0]), "b": iter([5.0, 1.0, 100.0])}

    def system(name):
        def run():
            calls.append(name)
            x = next(figures[name])
            return {"decode": x, "prefill": {128: 2 * x}}
        return run

    samples = decode.interleaved_rounds({"a": system("a"), "b": system("b")}, 3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert [r["decode"] for r in samples["a"]] == [10.0, 30.0, 20.0]
    assert decode.medians(samples["a"]) == {"decode": 20.0, "prefill": {128: 40.0}}
    assert decode.medians(samples["b"]) == {"decode": 5.0, "prefill": {128: 10.0}}   # best would be 100
    with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
        decode.interleaved_rounds({"a": system("a")}, 0)


def test_median_of_an_even_number_of_rounds():
    assert decode.medians([{"decode": x, "prefill": {}} for x in (1.0, 4.0, 2.0, 3.0)]) == {"decode": 2.5, "prefill": {}}


# ---- where llama-bench is found -----------------------------------------------------------------------------


def _exe(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(path, 0o755)
    return path


def test_find_llama_bench_order(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HESSGPT_LLAMA_CPP_DIR", raising=False)
    assert decode.find_llama_bench() is None
    root = tmp_path / "cache" / "hessgpt" / "llama.cpp"
    _exe(str(root / "0.3.9" / "bin" / "llama-bench"))
    newest = _exe(str(root / "0.3.36" / "bin" / "llama-bench"))
    assert decode.find_llama_bench() == newest                      # 0.3.36 > 0.3.9 (numbers, not text)
    own = _exe(str(tmp_path / "own" / "bin" / "llama-bench"))
    monkeypatch.setenv("HESSGPT_LLAMA_CPP_DIR", str(tmp_path / "own"))
    assert decode.find_llama_bench() == own
    on_path = _exe(str(tmp_path / "path" / "llama-bench"))
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    assert decode.find_llama_bench() == on_path
    flag = _exe(str(tmp_path / "flag" / "llama-bench"))
    assert decode.find_llama_bench(flag) == flag
    with pytest.raises(SystemExit, match=r"--llama-bench '/no/such': not an executable file"):
        decode.find_llama_bench("/no/such")


# ---- llama.cpp on HessGPT's export, where a build is found --------------------------------------------------

LLAMA_BENCH = decode.find_llama_bench()
needs_llama = pytest.mark.skipif(LLAMA_BENCH is None, reason="no llama-bench on PATH or built by scripts/build-llama-bench.sh")


@needs_llama
@pytest.mark.parametrize("kind", ["f32", "q8_0"])
def test_llama_bench_runs_the_export(tiny_ckpt, tmp_path, kind):
    path = str(tmp_path / f"tiny-{kind}.gguf")
    to_gguf(tiny_ckpt, path, kind)
    got = decode.LlamaBench(LLAMA_BENCH, path, 1).round(4, [16])
    assert got["decode"] > 0 and got["prefill"][16] > 0
    assert decode.llama_bench_version(LLAMA_BENCH).startswith("llama-bench version")


@needs_llama
def test_llama_completion_greedy_equals_hessgpt(tiny_ckpt, tmp_path):
    """llama.cpp's own generator (llama-completion, built beside llama-bench) continues a prompt greedily with
    the same text as HessGPT's model on the same weights. Special tokens are banned on both sides (llama.cpp
    bans its end-of-generation ones under --ignore-eos and does not print the others)."""
    cli = os.path.join(os.path.dirname(LLAMA_BENCH), "llama-completion")
    if not os.access(cli, os.X_OK):
        pytest.skip(f"no llama-completion beside {LLAMA_BENCH}")
    path = str(tmp_path / "tiny-f32.gguf")
    to_gguf(tiny_ckpt, path, "f32")
    model, tok = checkpoint.load(tiny_ckpt)
    text = "Bonjour, comment allez-vous ? The weather is nice."
    n = 16
    banned = sorted(tok.special_id_set)
    bias = [a for i in banned for a in ("--logit-bias", f"{i}-inf")]
    # llama.cpp prints through an asynchronous log thread that can lose the tail of stdout at exit (~1 run in
    # 40 here: b'ow sous time' instead of the whole text and its closing b'\n\n'); a run cut short is run again.
    for _ in range(5):
        out = subprocess.run([cli, "-m", path, "-p", text, "-n", str(n), "--temp", "0", "--ignore-eos", "-no-cnv",
                              "--no-display-prompt", "-t", "1", "--no-warmup", "-c", "256", *bias],
                             capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr[-2000:]
        if out.stdout.endswith(b"\n\n"):
            break
    ids = tok.encode(text)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids]))[0, -1]
            logits[banned] = -float("inf")
            ids.append(int(logits.argmax()))
    ours = tok.decode(ids[len(tok.encode(text)):])
    assert len(ours.strip()) > n        # 16 tokens of text, not an empty answer on both sides
    assert out.stdout.decode("utf-8", "replace").strip() == ours.strip()
