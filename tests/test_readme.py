"""The README's examples, run as written (litgpt's test_readme idea), so its transcripts cannot go stale.

A fenced block right after a `<!-- readme-test -->` line (fast: every PR) or `<!-- readme-test slow -->`
(`-m slow`) is run in order in one temporary directory holding links to the repo's `tests/` and `recipes/`,
with `hessgpt` from this interpreter's environment on PATH and HF_HUB_OFFLINE=1:
- a transcript (lines starting with `$ `; a trailing `\\` continues a command on the next line) runs each
  command with bash and compares its output (stdout + stderr) with the lines below it. `...` on a line of
  its own stands for any lines, `...` inside a line for any text, a number followed by ` ms` or ` s` for any
  duration; blank lines and progress-bar lines (`ppl:  42%|...`, or containing a carriage return) are ignored;
- a ```bash block without `$ ` is run as a script and must succeed; a ```python block runs with this
  interpreter and must succeed.
Blocks build on each other (the fast ones make `tok`, `tiny-mix`, `shards/mid` and `runs/tiny`): the slow test
first replays the fast blocks, then runs the slow ones in README order.
"""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
MARK = re.compile(r"^<!-- readme-test( slow)? -->\s*$")
PROGRESS = re.compile(r"^[\w .-]+:\s+\d+%\|")  # a tqdm line: "ppl:  42%|████      | 1/2 [...]"


def readme_blocks(text: str) -> list[dict]:
    """[{"line": N, "lang": "bash", "body": "...", "slow": bool}] for each marked fenced block."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        m = MARK.match(lines[i])
        if m:
            fence = lines[i + 1] if i + 1 < len(lines) else ""
            assert fence.startswith("```"), f"README.md:{i + 1}: a readme-test mark must be followed by a ``` fence"
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            blocks.append({"line": i + 3, "lang": fence[3:].strip(), "body": "\n".join(lines[i + 2:end]),
                           "slow": bool(m.group(1))})
            i = end
        i += 1
    return blocks


def transcript(body: str) -> list[tuple[str, list[str]]]:
    """'$ cmd \\\\\\n  more\\nout\\n$ cmd2' -> [("cmd more", ["out"]), ("cmd2", [])]."""
    steps, lines, i = [], body.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        assert line.startswith("$ "), f"transcript line outside a command: {line!r}"
        cmd = line[2:]
        while cmd.rstrip().endswith("\\"):
            i += 1
            cmd = cmd.rstrip()[:-1].rstrip() + " " + lines[i].strip()
        cmd = re.sub(r"\s+#[^'\"]*$", "", cmd)  # a trailing comment
        out = []
        i += 1
        while i < len(lines) and not lines[i].startswith("$ "):
            out.append(lines[i])
            i += 1
        steps.append((cmd, out))
    return steps


def _line_regex(expected: str) -> "re.Pattern":
    parts = re.split(r"(\.\.\.|\d+(?:\.\d+)? (?:ms|s)\b)", expected.rstrip())
    rx = "".join(".*" if p == "..." else r"[\d.]+ (?:ms|s)" if re.fullmatch(r"\d+(?:\.\d+)? (?:ms|s)", p) else re.escape(p)
                 for p in parts if p)
    return re.compile(rx + r"\s*")


def matches(expected: list[str], actual: list[str]) -> bool:
    exp = [e for e in expected if e.strip()]
    act = [a.rstrip() for a in actual if a.strip() and "\r" not in a and not PROGRESS.match(a)]

    def go(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i].strip() == "...":
            return any(go(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and _line_regex(exp[i]).fullmatch(act[j]) is not None and go(i + 1, j + 1)

    return go(0, 0)


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def run_block(block: dict, cwd: str) -> None:
    where = f"README.md:{block['line']}"
    if block["lang"] == "python":
        p = subprocess.run([sys.executable, "-c", block["body"]], cwd=cwd, env=_env(), capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, f"{where}: the python block failed:\n{p.stderr[-3000:]}"
        return
    if not block["body"].lstrip().startswith("$ "):
        p = subprocess.run(["bash", "-euo", "pipefail", "-c", block["body"]], cwd=cwd, env=_env(), capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, f"{where}: the bash block failed:\n{(p.stdout + p.stderr)[-3000:]}"
        return
    for cmd, expected in transcript(block["body"]):
        p = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=600)
        actual = p.stdout.replace("\r\n", "\n").split("\n")
        assert matches(expected, actual), (f"{where}: `{cmd}` (exit {p.returncode}) printed\n" + p.stdout[-3000:] +
                                           "\nexpected (README):\n" + "\n".join(expected))


def _workdir(tmp_path) -> str:
    for name in ("tests", "recipes"):
        os.symlink(os.path.join(REPO, name), tmp_path / name)
    return str(tmp_path)


BLOCKS = readme_blocks(open(README, encoding="utf-8").read())


def test_readme_has_marked_blocks():
    assert sum(not b["slow"] for b in BLOCKS) >= 4 and any(b["slow"] for b in BLOCKS), BLOCKS


def test_readme_quick_examples(tmp_path):
    cwd = _workdir(tmp_path)
    for block in BLOCKS:
        if not block["slow"]:
            run_block(block, cwd)


@pytest.mark.slow
def test_readme_slow_examples(tmp_path):
    cwd = _workdir(tmp_path)
    for block in sorted(BLOCKS, key=lambda b: b["slow"]):  # stable: README order within each group
        run_block(block, cwd)


# The Layout block against the tree: tests/test_layout.py.
