"""`hessgpt eval report` on two tiny run folders written by the test (metrics.jsonl + eval/bench.json)."""

import json

import pytest

from hessgpt.eval.bench import score_items, with_baselines

ITEMS = [
    {"id": f"x{i}", "lang": lang, "category": cat, "messages": [{"role": "user", "content": "q"}],
     "checks": [{"type": "contains_any", "values": ["oui", "yes"]}]}
    for i, (lang, cat) in enumerate([("fr", "factual"), ("en", "factual"), ("fr", "conversation"),
                                     ("en", "instruction"), ("fr", "creativity"), ("en", "robustness")])
]


def make_run(root, name, losses, answers, baseline=False):
    run = root / name
    (run / "final" / "eval").mkdir(parents=True)
    with open(run / "metrics.jsonl", "w") as f:
        for step, loss in enumerate(losses):
            row = {"step": step * 10, "loss": loss, "tokens": step * 1000, "lr": 1e-3}
            if step % 2 == 1:
                row["val_loss"] = loss + 0.1
            f.write(json.dumps(row) + "\n")
        f.write('{"step": 99, "loss"')  # a run killed while writing its last line
    bench = {"kind": "bench", "checkpoint": str(run / "final"), **score_items(ITEMS, answers)}
    if baseline:  # a result of today's `eval bench --train-data`; run_b is one written before the baseline existed
        bench = with_baselines(bench, ITEMS)
        bench["overlap"] = {"n_overlapping": 2, "ids": ["x0", "x3"], "train_data": ["routing/train.jsonl"]}
    (run / "final" / "eval" / "bench.json").write_text(json.dumps(bench))
    (run / "final" / "eval" / "ppl.json").write_text(json.dumps(
        {"kind": "ppl", "data": ["val.txt"], "mean_nll": losses[-1], "ppl": 2.718 ** losses[-1], "bpb": 1.1, "tokens": 500}))
    return run, bench


def test_report_two_runs(tmp_path, capsys):
    from hessgpt.eval.cli import main

    a, bench_a = make_run(tmp_path, "run_a", [4.0, 3.0, 2.5, 2.2], ["oui"] * 6, baseline=True)
    b, bench_b = make_run(tmp_path, "run_b", [4.2, 3.5, 3.1, 2.9], ["oui", "no", "non", "yes", "non", "no"])
    out = tmp_path / "report"
    assert main(["report", str(a), str(b / "final"), "--out", str(out)]) == 0
    assert "report.md" in capsys.readouterr().out

    for png in ("loss.png", "bench.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

    summary = json.loads((out / "report.json").read_text())["entries"]
    assert [e["label"] for e in summary] == ["run_a", "run_b/final"]  # a checkpoint is named with its run
    assert summary[0]["train"] == {"steps": 30, "tokens": 3000, "final_loss": 2.2, "final_val_loss": pytest.approx(2.3),
                                   "best_val_loss": pytest.approx(2.3)}
    assert summary[1]["train"]["final_val_loss"] == pytest.approx(3.0)  # metrics.jsonl found in the parent run
    assert summary[0]["bench"]["total"] == bench_a["total"] == 20.0
    assert summary[1]["bench"]["total"] == bench_b["total"] < 20

    md = (out / "report.md").read_text()
    assert "![loss curves](loss.png)" in md and "![benchmark](bench.png)" in md
    assert "| category | run_a | run_b/final |" in md
    assert "| **Total** | **20.0 / 20** | " + f"**{bench_b['total']:.1f} / 20** |" in md
    assert f"| Factual precision | 8.0 / 8 | {bench_b['categories']['factual']['score']:.1f} / 8 |" in md
    assert "| run_b/final | val.txt |" in md
    const = bench_a["baselines"]["constant"]["total"]
    assert summary[0]["bench"]["constant"]["total"] == const and "constant" not in summary[1]["bench"]
    assert f"| constant-answer baseline | {const:.1f} / 20 | – |" in md
    assert "| items overlapping training data | 2 | – |" in md
    assert "run_a: bench items overlapping routing/train.jsonl: x0, x3" in md


def test_report_errors(tmp_path):
    from hessgpt.errors import HessGPTError
    from hessgpt.eval.report import build_report

    (tmp_path / "empty").mkdir()
    with pytest.raises(HessGPTError, match="no metrics.jsonl"):
        build_report([str(tmp_path / "empty")], str(tmp_path / "out"))
    with pytest.raises(HessGPTError, match="not a run or checkpoint folder"):
        build_report([str(tmp_path / "missing")], str(tmp_path / "out"))
