"""benchmarks/gpu_check.py: --cpu-smoke runs every check on CPU at tiny sizes, one PASS/INFO/SKIP line each."""

import os
import re
import subprocess
import sys

from benchmarks import gpu_check

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r"^(PASS|FAIL|INFO|SKIP) [a-z0-9_.]+: \S")


def test_cpu_smoke_every_line_passes_or_informs():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--cpu-smoke"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=240)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert lines and all(LINE.match(ln) for ln in lines), lines
    assert not [ln for ln in lines if ln.startswith("FAIL")]
    names = {ln.split()[1].rstrip(":") for ln in lines}
    for want in ("env.torch", "numerics.bf16", "numerics.chunked_ce", "attention.packed_equal", "sft.lora_step",
                 "sft.packed_attention", "pretrain.step", "pretrain.eager", "pretrain.compiled", "engine.seeded",
                 "engine.greedy", "distributed.nccl_fsdp", "hf.backend", "total"):
        assert want in names, (want, sorted(names))
    passed = {ln.split()[1].rstrip(":") for ln in lines if ln.startswith("PASS")}
    assert {"numerics.bf16", "attention.packed_equal", "sft.packed_attention", "engine.seeded", "hf.backend"} <= passed


def test_a_broken_check_is_one_fail_line_and_exit_1(monkeypatch, capsys):
    def check_boom(device, sz):
        raise RuntimeError("boom on purpose")

    monkeypatch.setattr(gpu_check, "CHECKS", [gpu_check.check_env, check_boom])
    monkeypatch.setattr(gpu_check, "RESULTS", [])
    assert gpu_check.main(["--cpu-smoke"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [ln for ln in out if ln.startswith("FAIL")] == [next(ln for ln in out if "boom" in ln)]
    assert "FAIL boom: RuntimeError: boom on purpose" in out[-2]
