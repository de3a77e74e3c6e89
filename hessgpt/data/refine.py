"""`hessgpt data refine-pairs`: model 2's task, refinement pairs (request + a broken draft + what it did ->
the corrected program), every pair verified by execution.

    hessgpt data refine-pairs --routing runs/tiny-cpu/routing/train.jsonl --out data/refine
                              [--code tests/fixtures/data/apps.jsonl tests/fixtures/data/code_contests.jsonl
                                      tests/fixtures/data/code_instructions.json]
                              [--per-program 2] [--generation-share 0.25] [--val-fraction 0.05] [--seed 0]
        -> data/refine/train.jsonl, val.jsonl (conversation format: what `hessgpt sft --data` reads), stats.json

Sources: the correct, executed programs of the routing generator's TRAIN split (records whose "split" is
dev or test are refused and counted, never used), and code data files (`--code`): APPS {question, solutions,
input_output} and CodeContests {description, solutions, public_tests}, whose tests give the expected output,
and code instructions in the Code Alpaca schema {instruction, input, output}, kept when the output is Python
that prints the same thing on two runs (that is its expected output: no test to check it against).
Each program is mutated (MUTATIONS: off-by-one, wrong operator, wrong variable, missing print, swapped
arguments, syntax error, wrong math/sympy/builtin function, an unused input, a missing import) by editing its
source text at an AST node's position (the draft differs from the target by that edit only), or replaced by
another request's program (OTHER_PROGRAM: the target is then written from the request, not patched). The draft and the target both
run in the sandbox; a pair is kept only when the target prints exactly the program's correct output and the
draft fails, prints nothing or prints something else. Drops are counted by reason in stats.json.

The prompt (`refine_prompt`, docs/tools.md) is one template, the same whatever the request's language; the
router (hessgpt/tools/router.py) asks model 2 with it, on model 1's draft and its real sandbox run. A share of
"generation" samples (the request alone -> the program) keeps model 2 able to write code from scratch.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hessgpt.data.routing.output import write_jsonl
from hessgpt.datafiles import Unreadable, iter_rows
from hessgpt.errors import HessGPTError
from hessgpt.tools.sandbox import Sandbox

MAX_OUTPUT_CHARS = 200     # the draft's output/error shown in the prompt (the first characters)
MAX_PROGRAM_CHARS = 1200   # longer programs are not used (model 2's context is 512 tokens in the quickstart)


# ---------------------------------------------------------------------------------------------------
# the prompt template (model 2's only input format)
# ---------------------------------------------------------------------------------------------------
def run_status(status: str, stdout: str) -> str:
    """The run line's status: ok | no output | error | timeout | memory | output_cap | policy."""
    if status == "ok":
        return "ok" if stdout.strip() else "no output"
    return status


def run_text(status: str, stdout: str, stderr: str = "") -> str:
    """What the prompt shows of a run: its stdout (ok), or the last line of its error (the exception)."""
    if status == "ok":
        text = stdout.strip()
    else:
        lines = [line for line in (stderr or "").strip().splitlines() if line.strip()]
        text = lines[-1].strip() if lines else status
    return text if len(text) <= MAX_OUTPUT_CHARS else text[: MAX_OUTPUT_CHARS - 4] + " ..."


def refine_prompt(request: str, draft: str, status: str, stdout: str = "", stderr: str = "") -> str:
    """The refinement prompt (user message of model 2), language-independent:

        ### request
        <the user's request, in any language>
        ### draft
        <model 1's program>
        ### run: <ok | no output | error | timeout | memory | output_cap | policy>
        <its stdout, or the last line of its error>
        ### fix

    Model 2 answers with a code block: the corrected program."""
    return (f"### request\n{request.strip()}\n### draft\n{draft.strip()}\n"
            f"### run: {run_status(status, stdout)}\n{run_text(status, stdout, stderr)}\n### fix")


# ---------------------------------------------------------------------------------------------------
# programs
# ---------------------------------------------------------------------------------------------------
@dataclass
class Program:
    request: str
    code: str
    output: str | None  # the correct stdout (None: not known yet, see self_outputs)
    lang: str
    source: str        # record id


def programs_from_routing(records: list[dict], stats: Counter | None = None,
                          splits: tuple[str, ...] = ("train",)) -> list[Program]:
    """The single-step Python programs of routing records of `splits` (request, code, its real output): TRAIN
    only for training data; records of another split are refused (counted as skipped_split). The evaluation
    (`hessgpt eval refine`) reads dev/test programs the same way."""
    stats = stats if stats is not None else Counter()
    out = []
    for r in records:
        if r.get("split", "train") not in splits:
            stats["skipped_split"] += 1
            continue
        msgs = r.get("messages") or []
        users = [m for m in msgs if m.get("role") == "user"]
        code_at = next((i for i, m in enumerate(msgs) if m.get("role") == "assistant" and m.get("code") is not None), None)
        if code_at is None or len(users) != 1 or msgs[code_at].get("code_lang", "python") != "python":
            stats["skipped_not_single_python"] += 1
            continue
        tool = msgs[code_at + 1] if code_at + 1 < len(msgs) else None
        if tool is None or tool.get("role") != "tool" or not str(tool.get("content", "")).strip():
            stats["skipped_no_output"] += 1
            continue
        code = msgs[code_at]["code"]
        if len(code) > MAX_PROGRAM_CHARS:
            stats["skipped_long"] += 1
            continue
        out.append(Program(users[0]["content"], code, tool["content"], r.get("lang", "und"), str(r.get("id", ""))))
    return out


def _with_stdin(text: str, source: str) -> str:
    """The solution reading the test's lines: `input()` -> `next(stdin)` (the sandbox has no stdin, and its
    policy refuses the name `input`)."""
    return f"stdin = iter({text.splitlines()!r})\n" + source.replace("input()", "next(stdin)")


def programs_from_code_file(path: str | Path, stats: Counter | None = None) -> list[Program]:
    """Python programs from a code data file (any format of hessgpt.datafiles: .jsonl, a .json array, ...):
    - APPS-style {question, solutions, input_output: {fn_name, inputs, outputs}} and CodeContests-style
      {description, solutions: {language, solution}, public_tests}: the expected output is the test's;
    - code-instruction records, Code Alpaca-style {instruction, input, output}: the output is kept when it is
      Python (it parses; other languages: skipped_not_python) and its expected output is what it prints
      itself, twice the same (`self_outputs`: a program that prints nothing, fails or prints something else
      on a second run is dropped). Code Alpaca's programs carry no test, so these are checked for
      determinism, not against a reference.
    Either way a program is kept only if it really prints its expected output (checked by make_pairs)."""
    stats = stats if stats is not None else Counter()
    out = []
    for item in iter_rows(str(path)):
        if isinstance(item, Unreadable):
            stats[f"unreadable/{item.reason}"] += 1
            continue
        pos, rec = item
        rid = f"{Path(path).stem}:{pos.rsplit(':', 1)[1]}"
        if not isinstance(rec, dict):
            raise HessGPTError(f"{pos}: a code record must be a JSON object, got {type(rec).__name__}")
        if "question" in rec and "input_output" in rec:          # APPS
            sols = json.loads(rec["solutions"]) if isinstance(rec.get("solutions"), str) else rec.get("solutions") or []
            io = json.loads(rec["input_output"]) if isinstance(rec["input_output"], str) else rec["input_output"]
            fn, ins, outs = io.get("fn_name"), io.get("inputs") or [], io.get("outputs") or []
            if not sols or not fn or not ins:
                stats["skipped_code_without_test"] += 1
                continue
            code = sols[0].rstrip() + f"\n\n\nprint({fn}(*{ins[0]!r}))\n"
            out.append(Program(rec["question"], code, f"{outs[0]}\n", "en", rid))
        elif "description" in rec and isinstance(rec.get("solutions"), dict):   # CodeContests (3 = Python 3)
            s = rec["solutions"]
            py = [src for lang, src in zip(s.get("language", []), s.get("solution", [])) if lang == 3]
            tests = rec.get("public_tests") or {}
            if not py or not tests.get("input"):
                stats["skipped_code_without_test"] += 1
                continue
            code = _with_stdin(tests["input"][0], py[0].rstrip() + "\n")
            out.append(Program(rec["description"], code, tests["output"][0], "en", rid))
        elif "instruction" in rec and "output" in rec:           # code instructions (Code Alpaca)
            code = str(rec["output"]).strip("\n")
            try:
                ast.parse(code)
            except SyntaxError:
                stats["skipped_not_python"] += 1
                continue
            if len(code) > MAX_PROGRAM_CHARS:
                stats["skipped_long"] += 1
                continue
            extra = str(rec.get("input") or "").strip()
            request = str(rec["instruction"]).strip() + (f"\n{extra}" if extra else "")
            out.append(Program(request, code + "\n", None, "en", rid))
        else:
            raise HessGPTError(f"{pos}: neither an APPS, a CodeContests nor a code-instruction record (keys {sorted(rec)})")
    return out


def self_outputs(programs: list[Program], sandbox, stats: Counter | None = None) -> list[Program]:
    """The programs whose expected output is unknown (output None: code instructions) run twice: kept, with
    that output, when both runs are ok and print the same non-empty text; else dropped and counted
    (dropped_self_failed, dropped_self_no_output, dropped_self_nondeterministic). Others pass through."""
    stats = stats if stats is not None else Counter()
    todo = [p for p in programs if p.output is None]
    if not todo:
        return programs
    runs = sandbox.run_many([p.code for p in todo] * 2)
    stats["sandbox_runs"] += len(runs)
    known = {}
    for p, a, b in zip(todo, runs[:len(todo)], runs[len(todo):]):
        if a.status != "ok" or b.status != "ok":
            stats["dropped_self_failed"] += 1
        elif not a.stdout.strip():
            stats["dropped_self_no_output"] += 1
        elif _norm(a.stdout) != _norm(b.stdout):
            stats["dropped_self_nondeterministic"] += 1
        else:
            known[id(p)] = Program(p.request, p.code, a.stdout, p.lang, p.source)
    return [known[id(p)] if p.output is None else p for p in programs if p.output is not None or id(p) in known]


# ---------------------------------------------------------------------------------------------------
# mutations: each edits the source text at one AST node (formatting and comments kept)
# ---------------------------------------------------------------------------------------------------
def _offsets(code: str) -> list[int]:
    """Byte offset of each line start (ast column offsets are UTF-8 byte offsets)."""
    starts, pos = [0], 0
    for line in code.encode("utf-8").splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def _span(code: str, node) -> tuple[int, int]:
    s = _offsets(code)
    return s[node.lineno - 1] + node.col_offset, s[node.end_lineno - 1] + node.end_col_offset


def _edit(code: str, edits: list[tuple[int, int, str]]) -> str:
    """Replace byte spans [(start, end, text)] (non-overlapping) of the source."""
    b = code.encode("utf-8")
    for start, end, text in sorted(edits, reverse=True):
        b = b[:start] + text.encode("utf-8") + b[end:]
    return b.decode("utf-8")


def _src(code: str, node) -> str:
    s, e = _span(code, node)
    return code.encode("utf-8")[s:e].decode("utf-8")


def _nodes(tree, cls) -> list:
    return [n for n in ast.walk(tree) if isinstance(n, cls) and hasattr(n, "end_col_offset")]


def _stored_names(tree) -> list[str]:
    names = {n.id for n in _nodes(tree, ast.Name) if isinstance(n.ctx, ast.Store)}
    return sorted(names)


def off_by_one(code: str, tree, rng: random.Random) -> str | None:
    """An integer literal one too big or too small (range bounds, counts, operands)."""
    consts = [n for n in _nodes(tree, ast.Constant) if type(n.value) is int]
    if not consts:
        return None
    n = rng.choice(consts)
    s, e = _span(code, n)
    return _edit(code, [(s, e, str(n.value + rng.choice((-1, 1))))])


OP_SWAP = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "+"), ast.Div: ("/", "*"),
           ast.FloorDiv: ("//", "/"), ast.Mod: ("%", "//"), ast.Pow: ("**", "*")}
CMP_SWAP = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
            ast.Eq: ("==", "!="), ast.NotEq: ("!=", "==")}


def _swap_between(code: str, left, right, old: str, new: str) -> str | None:
    """Replace the operator token `old` in the text between two operand nodes."""
    _, a = _span(code, left)
    b, _ = _span(code, right)
    gap = code.encode("utf-8")[a:b].decode("utf-8")
    if gap.strip(" ()\n\t\\") != old:
        return None
    i = gap.index(old)
    return _edit(code, [(a + len(gap[:i].encode()), a + len(gap[: i + len(old)].encode()), new)])


def wrong_operator(code: str, tree, rng: random.Random) -> str | None:
    """One arithmetic or comparison operator replaced (+ -> -, * -> +, < -> <=, == -> !=, ...)."""
    cands = [("bin", n) for n in _nodes(tree, ast.BinOp) if type(n.op) in OP_SWAP]
    cands += [("cmp", n) for n in _nodes(tree, ast.Compare) if len(n.ops) == 1 and type(n.ops[0]) in CMP_SWAP]
    rng.shuffle(cands)
    for kind, n in cands:
        old, new = OP_SWAP[type(n.op)] if kind == "bin" else CMP_SWAP[type(n.ops[0])]
        right = n.right if kind == "bin" else n.comparators[0]
        out = _swap_between(code, n.left, right, old, new)
        if out is not None:
            return out
    return None


def wrong_variable(code: str, tree, rng: random.Random) -> str | None:
    """One use of a variable replaced by another variable of the program."""
    names = _stored_names(tree)
    uses = [n for n in _nodes(tree, ast.Name) if isinstance(n.ctx, ast.Load) and n.id in names]
    if len(names) < 2 or not uses:
        return None
    n = rng.choice(uses)
    other = rng.choice([x for x in names if x != n.id])
    s, e = _span(code, n)
    return _edit(code, [(s, e, other)])


def missing_print(code: str, tree, rng: random.Random) -> str | None:
    """A `print(x)` statement turned into `result = x`: the program computes and shows nothing (a bare `x`
    would not do: the sandbox echoes a last expression, as a notebook does)."""
    calls = [st.value for st in _nodes(tree, ast.Expr) if isinstance(st.value, ast.Call)
             and isinstance(st.value.func, ast.Name) and st.value.func.id == "print" and len(st.value.args) == 1
             and not st.value.keywords]
    if not calls:
        return None
    c = rng.choice(calls)
    s, e = _span(code, c)
    return _edit(code, [(s, e, "result = " + _src(code, c.args[0]))])


NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)


def swapped_arguments(code: str, tree, rng: random.Random) -> str | None:
    """The first two positional arguments of a call (or the operands of -, /, //, %, **) swapped."""
    cands = [(c.args[0], c.args[1]) for c in _nodes(tree, ast.Call) if len(c.args) >= 2
             and not any(isinstance(a, ast.Starred) for a in c.args[:2])
             and not (isinstance(c.func, ast.Name) and c.func.id == "print")]
    cands += [(b.left, b.right) for b in _nodes(tree, ast.BinOp) if isinstance(b.op, NON_COMMUTATIVE)]
    if not cands:
        return None
    a, b = rng.choice(cands)
    sa, ea = _span(code, a)
    sb, eb = _span(code, b)
    if ea > sb:
        return None
    return _edit(code, [(sa, ea, _src(code, b)), (sb, eb, _src(code, a))])


def syntax_error(code: str, tree, rng: random.Random) -> str | None:
    """A closing bracket or a block's colon deleted, or a string left unclosed."""
    lines = code.splitlines(keepends=True)
    cands = []
    for i, line in enumerate(lines):
        body = line.rstrip("\n")
        for ch in ")]":
            j = body.rfind(ch)
            if j >= 0:
                cands.append((i, j, 1))
        if body.rstrip().endswith(":") and body.lstrip().split(" ", 1)[0] in ("def", "for", "if", "while", "else:", "elif", "with", "class"):
            cands.append((i, len(body.rstrip()) - 1, 1))
    if not cands:
        return None
    rng.shuffle(cands)
    for i, j, k in cands:
        line = lines[i]
        out = "".join(lines[:i]) + line[:j] + line[j + k:] + "".join(lines[i + 1:])
        try:
            ast.parse(out)
        except SyntaxError:
            return out
    return None


FUNC_SWAP = {"sqrt": "log", "floor": "ceil", "ceil": "floor", "sin": "cos", "cos": "sin", "tan": "sin",
             "log": "log10", "log10": "log", "log2": "log10", "exp": "sqrt", "factorial": "gamma", "gcd": "lcm",
             "lcm": "gcd", "isqrt": "sqrt", "diff": "integrate", "integrate": "diff", "expand": "factor",
             "factor": "expand", "min": "max", "max": "min", "sum": "len", "mean": "median", "median": "mean",
             "stdev": "pstdev", "pstdev": "stdev", "round": "int", "sorted": "list", "upper": "lower", "lower": "upper"}


def wrong_function(code: str, tree, rng: random.Random) -> str | None:
    """A called function replaced by a related one (math.sqrt -> math.log, sp.diff -> sp.integrate, min -> max)."""
    cands = []
    for c in _nodes(tree, ast.Call):
        f = c.func
        if isinstance(f, ast.Name) and f.id in FUNC_SWAP:
            cands.append((f, FUNC_SWAP[f.id]))
        elif isinstance(f, ast.Attribute) and f.attr in FUNC_SWAP:
            cands.append((f, _src(code, f.value) + "." + FUNC_SWAP[f.attr]))
    if not cands:
        return None
    f, new = rng.choice(cands)
    s, e = _span(code, f)
    return _edit(code, [(s, e, new)])


def unused_input(code: str, tree, rng: random.Random) -> str | None:
    """One operand of a computation dropped (`a * b` -> `a`): an input of the request goes unused. A dropped
    variable is preferred (it stays defined, never read)."""
    bins = _nodes(tree, ast.BinOp)
    named = [(b, side) for b in bins for side in ("left", "right") if isinstance(getattr(b, side), ast.Name)]
    cands = named or [(b, side) for b in bins for side in ("left", "right")
                      if isinstance(getattr(b, side), (ast.Constant, ast.Name))]
    if not cands:
        return None
    b, dropped = rng.choice(cands)
    keep = b.right if dropped == "left" else b.left
    s, e = _span(code, b)
    return _edit(code, [(s, e, _src(code, keep))])


def missing_import(code: str, tree, rng: random.Random) -> str | None:
    """A top-level `import m` / `from m import f` statement removed: a NameError where the program uses it (the
    commonest failure of model 1's own programs: `statistics`, `math`, `sympy` used and never imported)."""
    imports = [st for st in tree.body if isinstance(st, (ast.Import, ast.ImportFrom))]
    if not imports:
        return None
    st = rng.choice(imports)
    lines = code.splitlines(keepends=True)
    return "".join(lines[: st.lineno - 1] + lines[st.end_lineno:])


MUTATIONS: dict[str, Callable] = {
    "off_by_one": off_by_one, "wrong_operator": wrong_operator, "wrong_variable": wrong_variable,
    "missing_print": missing_print, "swapped_arguments": swapped_arguments, "syntax_error": syntax_error,
    "wrong_function": wrong_function, "unused_input": unused_input, "missing_import": missing_import,
}
# A draft kind that is not an edit: another request's program (model 1 answered something else, or wrote a
# program that cannot be repaired by an edit): the target is then written from the request, not patched.
OTHER_PROGRAM = "other_program"
DRAFT_KINDS = (*MUTATIONS, OTHER_PROGRAM)


def other_program(p: Program, programs: list[Program], rng: random.Random, tries: int = 8) -> str | None:
    """The code of another program of `programs` (another request, another output), or None."""
    for _ in range(min(tries, len(programs))):
        q = rng.choice(programs)
        if q.request != p.request and q.code.strip() != p.code.strip() and q.output != p.output:
            return q.code
    return None


def mutate(code: str, kind: str, rng: random.Random) -> str | None:
    """The program with one mutation of `kind` (MUTATIONS), or None when it does not apply / changes nothing."""
    if kind not in MUTATIONS:
        raise HessGPTError(f"unknown mutation {kind!r} (kinds: {', '.join(MUTATIONS)})")
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    out = MUTATIONS[kind](code, tree, rng)
    return None if out is None or out.strip() == code.strip() else out


# ---------------------------------------------------------------------------------------------------
# pairs: mutate, execute both, keep the verified ones
# ---------------------------------------------------------------------------------------------------
def _norm(s: str) -> str:
    return "\n".join(line.rstrip() for line in s.strip().splitlines())


def pair_record(p: Program, kind: str, draft: str, run) -> dict:
    """A conversation-format record: the refinement prompt -> a code block with the corrected program."""
    prompt = refine_prompt(p.request, draft, run.status, run.stdout, run.stderr)
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": "", "code": p.code.strip("\n")}]
    digest = hashlib.sha1(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()[:12]
    return {"id": f"refine:{kind}-{digest}", "source": "refine", "lang": p.lang, "category": "refine", "kind": kind,
            "program": p.source, "split": "train", "messages": messages}


def generation_record(p: Program) -> dict:
    """The request alone -> the program (model 2 writing code from scratch)."""
    messages = [{"role": "user", "content": p.request}, {"role": "assistant", "content": "", "code": p.code.strip("\n")}]
    digest = hashlib.sha1(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()[:12]
    return {"id": f"refine:generate-{digest}", "source": "refine", "lang": p.lang, "category": "generate",
            "kind": "generate", "program": p.source, "split": "train", "messages": messages}


def make_pairs(programs: list[Program], sandbox, per_program: int = 2, seed: int = 0,
               kinds: tuple[str, ...] = DRAFT_KINDS, stats: Counter | None = None) -> list[dict]:
    """Up to `per_program` verified pairs per program (draft kinds taken in turn, shuffled per program: the
    MUTATIONS, and OTHER_PROGRAM, a program of another request drawn from `programs`).

    Verification, both programs in `sandbox`: the target (the original program) must run ok and print the
    program's correct output (else: dropped_target_wrong); the draft must fail, print nothing or print
    something else (else: dropped_draft_same_output)."""
    stats = stats if stats is not None else Counter()
    rng = random.Random(seed)
    drafts: list[tuple[Program, str, str]] = []
    for p in programs:
        order = list(kinds)
        rng.shuffle(order)
        got = 0
        for kind in order:
            if got >= per_program:
                break
            d = other_program(p, programs, rng) if kind == OTHER_PROGRAM else mutate(p.code, kind, rng)
            if d is None:
                stats[f"not_applicable/{kind}"] += 1
                continue
            drafts.append((p, kind, d))
            got += 1
    targets = {id(p): p for p, _, _ in drafts}
    target_runs = dict(zip(targets, sandbox.run_many([p.code for p in targets.values()]))) if targets else {}
    draft_runs = sandbox.run_many([d for _, _, d in drafts]) if drafts else []
    stats["sandbox_runs"] += len(target_runs) + len(draft_runs)
    out = []
    for (p, kind, d), r in zip(drafts, draft_runs):
        t = target_runs[id(p)]
        if t.status != "ok" or _norm(t.stdout) != _norm(p.output):
            stats["dropped_target_wrong"] += 1
            continue
        if r.status == "ok" and _norm(r.stdout) == _norm(p.output):
            stats[f"dropped_draft_same_output/{kind}"] += 1
            continue
        out.append(pair_record(p, kind, d, r))
        stats[f"kept/{kind}"] += 1
    return out


def _bucket(key: str) -> float:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big") / 2**32


def build(routing_files: list[str], code_files: list[str], sandbox, per_program: int = 2, seed: int = 0,
          val_fraction: float = 0.05, generation_share: float = 0.25, max_programs: int | None = None
          ) -> tuple[dict[str, list[dict]], dict]:
    """{"train", "val"} records and the stats. Programs are split by a hash of their request (a program's
    pairs all go to the same split); `generation_share` adds that share (of the pairs) of generation samples."""
    if not 0 <= val_fraction < 1:
        raise HessGPTError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0 <= generation_share <= 1:
        raise HessGPTError(f"generation_share must be in [0, 1], got {generation_share}")
    if per_program < 1:
        raise HessGPTError(f"per_program must be >= 1, got {per_program}")
    t0 = time.time()
    stats: Counter = Counter()
    programs: list[Program] = []
    for f in routing_files:
        if not Path(f).exists():
            raise HessGPTError(f"no such routing file {f}")
        recs = [json.loads(line) for line in Path(f).read_text(encoding="utf-8").splitlines() if line.strip()]
        programs += programs_from_routing(recs, stats)
    rng = random.Random(seed)
    rng.shuffle(programs)
    if max_programs is not None:
        programs = programs[:max_programs]
    for f in code_files:
        if not Path(f).exists():
            raise HessGPTError(f"no such code file {f}")
        programs += programs_from_code_file(f, stats)
    programs = self_outputs(programs, sandbox, stats)
    stats["programs"] = len(programs)
    pairs = make_pairs(programs, sandbox, per_program, seed, stats=stats)
    n_gen = round(generation_share * len(pairs))
    with_pairs = {r["program"] for r in pairs}
    gen_pool = [p for p in programs if p.source in with_pairs]
    gens = [generation_record(p) for p in random.Random(seed + 1).sample(gen_pool, min(n_gen, len(gen_pool)))]
    by_request = {p.source: p.request for p in programs}
    splits: dict[str, list[dict]] = {"train": [], "val": []}
    for r in pairs + gens:
        split = "val" if _bucket(by_request[r["program"]]) < val_fraction else "train"
        splits[split].append(r)
    for k in splits:
        random.Random(seed + 2).shuffle(splits[k])
    d = {"programs": len(programs), "pairs": len(pairs), "generation": len(gens), "train": len(splits["train"]),
         "val": len(splits["val"]), "seconds": round(time.time() - t0, 1), "routing": routing_files, "code": code_files,
         "kept": {k.split("/", 1)[1]: v for k, v in sorted(stats.items()) if k.startswith("kept/")},
         "counts": {k: v for k, v in sorted(stats.items()) if not k.startswith("kept/")}}
    return splits, d


def write(splits: dict[str, list[dict]], stats: dict, out: str) -> None:
    """out/train.jsonl, out/val.jsonl, then out/stats.json (last: it marks the folder finished). Atomic."""
    write_jsonl(Path(out) / "train.jsonl", splits["train"])
    write_jsonl(Path(out) / "val.jsonl", splits["val"])
    tmp = Path(out) / "stats.json.tmp"
    tmp.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, Path(out) / "stats.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hessgpt data refine-pairs", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routing", nargs="+", default=[], help="routing TRAIN JSONL files (dev/test records are refused)")
    ap.add_argument("--code", nargs="*", default=[],
                    help="code data files: APPS / CodeContests style (with tests) or Code Alpaca style "
                         "{instruction, input, output} (Python outputs that print the same twice)")
    ap.add_argument("--out", required=True, help="output folder: train.jsonl, val.jsonl, stats.json")
    ap.add_argument("--per-program", type=int, default=2, help="pairs per program (different mutation kinds)")
    ap.add_argument("--max-programs", type=int, default=None, help="use at most this many routing programs")
    ap.add_argument("--generation-share", type=float, default=0.25, help="request -> program samples, a share of the pairs")
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="sandbox workers")
    args = ap.parse_args(argv)
    if not args.routing and not args.code:
        raise HessGPTError("give --routing FILE and/or --code FILE")
    with Sandbox(workers=args.workers) as sb:
        splits, d = build(args.routing, args.code, sb, args.per_program, args.seed, args.val_fraction,
                          args.generation_share, args.max_programs)
    write(splits, d, args.out)
    print(f"refine-pairs: {d['pairs']} verified pairs from {d['programs']} programs + {d['generation']} generation "
          f"samples in {d['seconds']} s; kept per kind: {', '.join(f'{k}={v}' for k, v in d['kept'].items())}")
    print(f"  wrote {args.out}/train.jsonl ({d['train']}), val.jsonl ({d['val']}), stats.json", file=sys.stdout)
    return 0
