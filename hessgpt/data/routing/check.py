"""`--validate`: check an externally generated file (e.g. written by a large LLM): the inline
`<|code|>...<|end|>` markup expanded, every Python block run in the sandbox, samples whose final answer states
a number the output does not support dropped."""

import json
import math
import re
from pathlib import Path

from hessgpt.data.conversation import Skip, from_dict
from hessgpt.data.routing.build import _run_with_retry
from hessgpt.data.routing.output import write_jsonl
from hessgpt.tools import sandbox as tools_sandbox  # the module: .Sandbox looked up per run (tests swap it)


# ---------------------------------------------------------------------------------------------------
# --validate: check an externally generated file (e.g. written by a large LLM)
# ---------------------------------------------------------------------------------------------------
_MARK = re.compile(r"(<\|code\|>|<\|result\|>|<\|end\|>)")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?")


def expand_inline(messages: list[dict]) -> list[dict]:
    """The routing format with `<|code|>SRC<|end|>` (and optional `<|result|>OUT<|end|>`) inside an
    assistant's content -> conversation-format messages (code field, tool message, final text)."""
    out: list[dict] = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("role") != "assistant" or "<|code|>" not in content or "code" in m:
            out.append(m)
            continue
        parts = _MARK.split(content)
        text, i = "", 0
        while i < len(parts):
            tok = parts[i]
            if tok == "<|code|>":
                src = parts[i + 1] if i + 1 < len(parts) else ""
                out.append({"role": "assistant", "content": text.strip(), "code": src.strip("\n")})
                text, i = "", i + 3   # skip source and its <|end|>
            elif tok == "<|result|>":
                res = parts[i + 1] if i + 1 < len(parts) else ""
                out.append({"role": "tool", "name": "python", "content": res})
                i += 3
            elif tok == "<|end|>":
                i += 1
            else:
                text += tok
                i += 1
        if text.strip():
            out.append({"role": "assistant", "content": text.strip()})
    return out


def _numbers(text: str) -> list[str]:
    return [n.replace(",", ".") for n in _NUMBER.findall(text)]


def _number_supported(stated: str, pool: list[float]) -> bool:
    """The stated number equals one of pool, exactly or rounded to as many decimals as it was written with."""
    try:
        v = float(stated)
    except ValueError:
        return True
    decimals = len(stated.split(".")[1]) if "." in stated else 0
    for p in pool:
        if math.isclose(v, p, rel_tol=1e-9, abs_tol=1e-12):
            return True
        if math.isfinite(p) and abs(round(p, decimals) - v) < 10 ** (-decimals) / 2 + 1e-12:
            return True
    return False


def unsupported_numbers(final: str, stdout: str, context: str) -> list[str]:
    """Numbers in the final answer found neither in the real output nor in the question/code."""
    pool = []
    for s in _numbers(stdout) + _numbers(context):
        try:
            pool.append(float(s))
        except ValueError:
            pass
    return [s for s in _numbers(final) if not _number_supported(s, pool)]


def _norm_out(s: str) -> str:
    return "\n".join(line.rstrip() for line in s.strip().splitlines())


def check_record(rec: dict, results: dict[int, object]) -> tuple[dict | None, str]:
    """(fixed record or None, problem). `results` maps message index -> RunResult of its code."""
    msgs = rec["messages"]
    fixed: list[dict] = []
    real_output: str | None = None   # the stdout the next tool message must carry
    for i, m in enumerate(msgs):
        fixed.append(dict(m))
        if m.get("role") == "tool" and real_output is not None:
            fixed[-1]["content"] = real_output   # same text as stated, up to trailing whitespace
        real_output = None
        if i not in results:
            continue
        r = results[i]
        if r.status != "ok":
            return None, f"message {i}: code {r.status}: {(r.stderr or '').strip().splitlines()[-1:] or ['']}"[:300]
        nxt = msgs[i + 1] if i + 1 < len(msgs) else None
        has_tool = nxt is not None and nxt.get("role") == "tool"
        if has_tool and _norm_out(nxt.get("content", "")) != _norm_out(r.stdout):
            return None, (f"message {i + 1}: stated output {nxt.get('content', '').strip()[:80]!r} but the code prints "
                          f"{r.stdout.strip()[:80]!r}")
        # the next assistant text after this code block states the result
        j = i + (2 if has_tool else 1)
        if j >= len(msgs):
            return None, f"message {i}: no answer after the code"
        if msgs[j].get("role") == "assistant" and msgs[j].get("role") == "assistant":
            context = " ".join(str(x.get("content", "")) + " " + str(x.get("code", "")) for x in msgs[: i + 1])
            bad = unsupported_numbers(msgs[j].get("content", ""), r.stdout, context)
            if bad:
                return None, (f"message {j}: states {', '.join(bad[:3])} but the code prints {r.stdout.strip()[:80]!r}")
        if has_tool:
            real_output = r.stdout
        else:   # fill in the real output
            fixed.append({"role": "tool", "name": "python", "content": r.stdout})
    rec = dict(rec)
    rec["messages"] = fixed
    return rec, ""


def validate_file(path: str, out: str | None, workers: int = 2, sandbox=None) -> dict:
    """Execute every Python block of `path`, drop the wrong samples, write the good ones to `out`."""
    records, problems = [], []
    unreadable = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list):
                    raise ValueError("no 'messages' list")
            except (json.JSONDecodeError, ValueError) as e:
                problems.append((lineno, f"not a record: {e}"))
                unreadable += 1
                continue
            rec = dict(rec)
            rec["messages"] = expand_inline(rec["messages"])
            rec.setdefault("id", f"routing:external-{lineno}")
            rec.setdefault("source", "routing")
            rec.setdefault("lang", "und")
            try:
                from_dict(rec)
            except Skip as e:
                problems.append((lineno, f"bad conversation: {e}"))
                unreadable += 1
                continue
            records.append((lineno, rec))
    jobs = [(k, i, m["code"]) for k, (_, rec) in enumerate(records) for i, m in enumerate(rec["messages"])
            if m.get("role") == "assistant" and m.get("code") is not None and m.get("code_lang", "python") == "python"]
    own = sandbox is None
    sb = tools_sandbox.Sandbox(workers=workers) if own else sandbox
    try:
        runs = _run_with_retry(sb, [code for *_, code in jobs])
    finally:
        if own:
            sb.close()
    per_rec: dict[int, dict[int, object]] = {}
    for (k, i, _), r in zip(jobs, runs):
        per_rec.setdefault(k, {})[i] = r
    kept = []
    for k, (lineno, rec) in enumerate(records):
        fixed, problem = check_record(rec, per_rec.get(k, {}))
        if fixed is None:
            problems.append((lineno, problem))
        else:
            kept.append(fixed)
    problems.sort()
    if out:
        write_jsonl(Path(out), kept)
    return {"records": len(records) + unreadable, "kept": len(kept), "dropped": len(problems), "code_runs": len(jobs), "problems": problems}
