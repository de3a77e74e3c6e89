"""Multi-turn routing conversations composed from single-turn routing records (docs/chat-format.md,
"Multi-turn routing records").

    from hessgpt.data.routing.multiturn import N_SHARE, compose_conversations, sandbox_runner
    extra = compose_conversations(singles, n=round(N_SHARE * len(singles)), rng=random.Random(seed),
                                  lang=None, run_code=sandbox_runner(sb))

`singles` are records as `hessgpt data routing` writes them (user, assistant with `code`, tool result, final
text; or user + plain answer for negatives; top-level `category`/`reference` when present, else the category
is read from the id). Four kinds, 2-3 turns each (`kind` on the record):

- `multiturn-unrelated`: one sample, then another one that has nothing to do with it (code -> no code,
  no code -> code, code -> code), sometimes a third;
- `multiturn-followup`: a follow-up that refers to the previous *stated* result ("Et si je divise ce résultat
  par 8 ?", "Now sort that same list from largest to smallest") with its own code that uses that result as a
  literal (`print(391 / 8)`), run through `run_code`, and a final answer stating the new result; unit
  conversions chain the same way ("Combien d'heures dans 3 jours ?" -> "Et en minutes ?"); sometimes a second
  follow-up on the first one's result;
- `multiturn-thanks`: thanks/closing after a result ("Top, merci pour le calcul !") -> a reply without code;
- `multiturn-correction`: the user corrects a number of the request ("Non, je voulais dire 18, pas 17") ->
  the same code with that number changed, run again, the new result stated.

Every earlier turn is flattened (`hessgpt.data.conversation.flatten_history`: one plain assistant message =
text before the tool + "\\n\\n" + text after) and carries `"weight": 0`, so only the last turn is trained, and it
keeps its code/tool/result structure. The record's top-level `category` and `reference` describe that last
turn; `id` is `routing:multiturn-<12 hex of the messages>`. Every follow-up's stated result is checked against
an independent computation in this process (Python arithmetic on the previous literal, `sorted()` of the
parsed list, ...), and dropped when the sandbox's output disagrees. No user message equals a prompt of the
frozen OOD sets (hessgpt/eval/prompts/tools_ood_*.jsonl) verbatim.

The follow-up phrasings are shared by every split: compose train conversations from train singles (and dev
from dev) and leave the test split single-turn, or measure multi-turn on the OOD multi-turn set.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from hessgpt.data.conversation import flatten_history

N_SHARE = 0.15   # suggested share of multi-turn conversations in the routing data (of the single-turn count)
KINDS = ("multiturn-unrelated", "multiturn-followup", "multiturn-thanks", "multiturn-correction")
KIND_WEIGHTS = {"multiturn-unrelated": 0.3, "multiturn-followup": 0.4, "multiturn-thanks": 0.15, "multiturn-correction": 0.15}
LANGS = ("fr", "en")
MAX_LITERAL = 30      # a result longer than this (characters) is not reused as a literal
MAX_OUTPUT = 200      # a follow-up's output longer than this is dropped

RunCode = Callable[[str], "str | None"]   # code -> stdout, or None when the run failed


def sandbox_runner(sandbox) -> RunCode:
    """A `run_code` for compose_conversations from an open hessgpt.tools.sandbox.Sandbox: stdout of a run
    whose status is "ok", else None."""

    def run(code: str) -> str | None:
        r = sandbox.run(code)
        return r.stdout if r.status == "ok" else None

    return run


# --- the frozen test prompts: never produced verbatim ---------------------------------------------------------


def _norm(text: str) -> str:
    return re.sub(r"[\s.!?…,;:]+", " ", text.lower()).strip()


@lru_cache(maxsize=1)
def frozen_prompts() -> frozenset[str]:
    """Normalized user texts of the shipped OOD sets (single- and multi-turn)."""
    root = Path(__file__).resolve().parents[2] / "eval" / "prompts"
    out: set[str] = set()
    for name in ("tools_ood_fr.jsonl", "tools_ood_en.jsonl", "tools_ood_multiturn.jsonl"):
        p = root / name
        if not p.is_file():
            continue
        for line in p.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            for t in rec.get("turns") or []:
                if isinstance(t, dict) and isinstance(t.get("user"), str):
                    out.add(_norm(t["user"]))
            for m in rec.get("messages") or []:
                if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
                    out.add(_norm(m["content"]))
    return frozenset(out)


def _phrase(rng: random.Random, templates: list[str], **kw) -> str | None:
    """A template (with an optional lead-in) filled in, that is no frozen test prompt; None if all are."""
    order = list(range(len(templates)))
    rng.shuffle(order)
    for i in order:
        text = templates[i].format(**kw)
        if _norm(text) not in frozen_prompts():
            return text
    return None


def _lead_in(rng: random.Random, lang: str, text: str) -> str:
    """An optional short opener before a follow-up ("Ok. ", "D'accord, ")."""
    r = rng.random()
    if r < 0.6:
        return text
    opener = rng.choice(_OPENERS[lang])
    if opener.endswith(", "):
        return opener + text[:1].lower() + text[1:]
    return opener + text


_OPENERS = {"fr": ["Ok. ", "D'accord, ", "Parfait. ", "Très bien. ", "Ah, ", "Bon, "],
            "en": ["Ok. ", "Alright, ", "Great. ", "Nice. ", "Right, ", "Cool. "]}


# --- single records -> turns --------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LIST = re.compile(r"\[[^\[\]]*\]")


@dataclass
class Turn:
    """One turn: its messages (user first), what it is about, and what a follow-up may refer to."""
    messages: list[dict]
    lang: str
    category: str
    reference: dict | None
    number: str | None = None          # the stated numeric result, as printed (a literal a follow-up may reuse)
    unit: str | None = None            # its unit (unit-conversion turns)
    values: list | None = None         # the list the user gave (list follow-ups)
    followup: dict | None = None       # what a follow-up did: op, operand, previous (for checks)

    @property
    def has_code(self) -> bool:
        return any(m.get("code") is not None for m in self.messages)

    @property
    def python(self) -> bool:
        return any(m.get("role") == "tool" for m in self.messages)


def _category(rec: dict) -> str:
    if isinstance(rec.get("category"), str):
        return rec["category"]
    rid = str(rec.get("id", ""))
    m = re.match(r"routing:([a-z]+)-", rid)
    return m.group(1) if m else "unknown"


def _is_number(s: str) -> bool:
    return bool(_NUMBER.fullmatch(s)) and len(s) <= MAX_LITERAL


MAX_DECIMALS = 4   # a result is reused as a literal only with at most this many decimals; longer ones are rounded


def _short(s: str) -> bool:
    """A number a follow-up may copy into its code: short, at most MAX_DECIMALS decimals, no exponent."""
    return _is_number(s) and "e" not in s.lower() and len(s.partition(".")[2]) <= MAX_DECIMALS


def _num(s: str) -> float | int:
    return int(s) if re.fullmatch(r"-?\d+", s) else float(s)


def _contains_token(text: str, literal: str) -> bool:
    return re.search(r"(?<![\d.])" + re.escape(literal) + r"(?![\d]|\.\d)", text) is not None


def turn_from_record(rec: dict) -> Turn | None:
    """A single-turn routing record -> Turn (None when it is not one: several user messages, no answer)."""
    msgs = [dict(m) for m in rec.get("messages") or [] if m.get("role") != "system"]
    if not msgs or msgs[0].get("role") != "user" or sum(m.get("role") == "user" for m in msgs) != 1:
        return None
    if msgs[-1].get("role") != "assistant" or not (msgs[-1].get("content") or "").strip():
        return None
    lang = rec.get("lang") if rec.get("lang") in LANGS else None
    if lang is None:
        return None
    cat = _category(rec)
    ref = rec.get("reference")
    t = Turn(msgs, lang, cat, ref)
    tools = [m for m in msgs if m.get("role") == "tool"]
    if len(tools) == 1:
        out = (tools[0].get("content") or "").strip()
        if _short(out) and _contains_token(msgs[-1]["content"], out) and math.isfinite(float(out)) and abs(float(out)) < 1e12:
            t.number = out
            if ref is None and "reference" not in rec:
                t.reference = {"type": "number", "value": _num(out)}
        # the list a follow-up refers to: the stated result when it is a list of numbers, else the user's list
        result = _number_list(out) if _contains_list(msgs[-1]["content"], out) else None
        m = _LIST.search(msgs[0]["content"])
        t.values = result if result is not None or _LIST.fullmatch(out) else (_number_list(m.group(0)) if m else None)
    return t


def _number_list(text: str) -> list | None:
    try:
        values = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(values, list) and 3 <= len(values) <= 30 and all(type(v) in (int, float) for v in values):
        return values
    return None


def _contains_list(final: str, out: str) -> bool:
    return out.startswith("[") and out in final


# --- follow-ups on a numeric result -----------------------------------------------------------------------

# op -> (FR user templates, EN user templates, FR final templates, EN final templates); {k} operand, {p} previous
_NUM_OPS: dict[str, tuple[list[str], list[str], list[str], list[str]]] = {
    "div": (["Et si je divise ce résultat par {k} ?", "Divise-le par {k}.", "Et divisé par {k}, ça donne quoi ?",
             "Peux-tu diviser ce nombre par {k} ?", "Maintenant, partage ça en {k} parts égales.", "Et ce résultat divisé par {k} ?"],
            ["And if I divide that by {k}?", "Divide it by {k}.", "What do I get if I divide the result by {k}?",
             "Now split that into {k} equal parts.", "Can you divide that number by {k}?", "And that divided by {k}?"],
            ["{p} ÷ {k} = {r}.", "Divisé par {k}, cela donne {r}.", "{p} divisé par {k} font {r}."],
            ["{p} / {k} = {r}.", "Divided by {k}, that gives {r}.", "{p} divided by {k} is {r}."]),
    "mul": (["Multiplie-le par {k}.", "Et si on multiplie ça par {k} ?", "Et fois {k} ?", "Multiplie ce résultat par {k}, s'il te plaît.",
             "Ça fait combien si je le multiplie par {k} ?"],
            ["Multiply it by {k}.", "And times {k}?", "What if we multiply the result by {k}?", "Now multiply the result by {k}, please.",
             "How much is that multiplied by {k}?"],
            ["{p} × {k} = {r}.", "Multiplié par {k}, cela fait {r}.", "{p} fois {k} font {r}."],
            ["{p} × {k} = {r}.", "Multiplied by {k}, that makes {r}.", "{p} times {k} is {r}."]),
    "add": (["Ajoute {k} à ce résultat.", "Et si j'y ajoute {k} ?", "Et plus {k}, ça fait combien ?", "Rajoute {k}, s'il te plaît."],
            ["And now add {k} to that.", "Add {k} to it.", "What if I add {k} to the result?", "Plus {k}, how much is that?"],
            ["{p} + {k} = {r}.", "En ajoutant {k}, on obtient {r}.", "{p} plus {k} font {r}."],
            ["{p} + {k} = {r}.", "Adding {k} gives {r}.", "{p} plus {k} is {r}."]),
    "sub": (["Enlève {k} à ce résultat.", "Et moins {k} ?", "Retire {k}, ça donne quoi ?", "Soustrais-lui {k}."],
            ["Subtract {k} from that.", "And minus {k}?", "Take {k} away from the result.", "What's left if I remove {k}?"],
            ["{p} - {k} = {r}.", "En retirant {k}, il reste {r}.", "{p} moins {k} font {r}."],
            ["{p} - {k} = {r}.", "Taking away {k} leaves {r}.", "{p} minus {k} is {r}."]),
    "square": (["Et au carré ?", "Élève ce résultat au carré.", "Et ce nombre au carré, ça fait combien ?"],
               ["And squared?", "Square that number.", "What is the result squared?"],
               ["{p}² = {r}.", "Au carré : {r}.", "{p} au carré font {r}."],
               ["{p}² = {r}.", "Squared: {r}.", "{p} squared is {r}."]),
    "pct": (["Et {k} % de ce résultat ?", "Combien font {k} % de ça ?", "Calcule {k} % de ce nombre."],
            ["And {k}% of that?", "What is {k}% of the result?", "Now take {k}% of it."],
            ["{k} % de {p} = {r}.", "{k} % de ce résultat font {r}."],
            ["{k}% of {p} is {r}.", "{k}% of that is {r}."]),
    "round": (["Arrondis-le à l'entier le plus proche.", "Et arrondi à l'unité ?"],
              ["Round it to the nearest integer.", "And rounded to a whole number?"],
              ["Arrondi à l'entier : {r}.", "{p} arrondi donne {r}."],
              ["Rounded to the nearest integer: {r}.", "{p} rounded is {r}."]),
}

_LEADS = {"fr": ["", "", "Je calcule.", "Je reprends le résultat précédent.", "Un petit calcul :", "Je lance le calcul."],
          "en": ["", "", "Let me compute it.", "Taking the previous result:", "A quick calculation:", "Running the numbers."]}
_FIRST_LEADS = {"fr": ["", "", "Je calcule.", "Un petit calcul :", "Je lance le calcul."],
                "en": ["", "", "Let me compute it.", "A quick calculation:", "Running the numbers."]}


def _operand(rng: random.Random, op: str) -> int:
    if op in ("div", "mul"):
        return rng.randint(2, 12)
    if op in ("add", "sub"):
        return rng.choice([rng.randint(1, 20), rng.randint(10, 500)])
    if op == "pct":
        return rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 50, 75])
    return 0


def _lit(p: str) -> str:
    return f"({p})" if p.startswith("-") else p


def _num_code(op: str, p: str, k: int) -> str:
    x = _lit(p)
    return {"div": f"print({x} / {k})", "mul": f"print({x} * {k})", "add": f"print({x} + {k})",
            "sub": f"print({x} - {k})", "square": f"print({x} ** 2)", "pct": f"print({x} * {k} / 100)",
            "round": f"print(round({x}))"}[op]


def expected_number(op: str, previous: float | int, k: int) -> float | int:
    """The result of a numeric follow-up, computed here (never by the sandbox)."""
    if op == "div":
        return previous / k
    if op == "mul":
        return previous * k
    if op == "add":
        return previous + k
    if op == "sub":
        return previous - k
    if op == "square":
        return previous * previous
    if op == "pct":
        return previous * k / 100
    if op == "round":
        return round(previous)
    raise ValueError(op)


def _same_number(out: str, want: float | int) -> bool:
    if not _is_number(out):
        return False
    got = float(out)
    return math.isclose(got, float(want), rel_tol=1e-9, abs_tol=1e-9)


def _tool_turn(user: str, lead: str, code: str, stdout: str, final: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": lead, "code": code},
            {"role": "tool", "name": "python", "content": stdout}, {"role": "assistant", "content": final}]


def numeric_followup(rng: random.Random, prev: Turn, run_code: RunCode, stats: Counter) -> Turn | None:
    """A follow-up on prev's stated number, with its own code; None when it cannot be made or fails a check."""
    p = prev.number
    if p is None:
        return None
    if prev.unit is not None and prev.unit in _UNIT_NEXT and rng.random() < 0.7:
        return unit_followup(rng, prev, run_code, stats)
    ops = ["div", "mul", "add", "sub", "pct"] + (["square"] if abs(float(p)) < 1e5 else []) + (["round"] if "." in p else [])
    done = (prev.followup or {}).get("op")
    op = rng.choice([o for o in ops if o != done])
    k = _operand(rng, op)
    lang = prev.lang
    fr_u, en_u, fr_f, en_f = _NUM_OPS[op]
    user = _phrase(rng, fr_u if lang == "fr" else en_u, k=k)
    if user is None:
        return None
    user = _lead_in(rng, lang, user)
    want = expected_number(op, _num(p), k)
    code = _num_code(op, p, k)
    ndigits = None
    if isinstance(want, float) and not _short(repr(want)):
        ndigits = MAX_DECIMALS               # print(round(391 / 7, 4)): the stated result stays copyable
        code = f"print(round({code[len('print('):-1]}, {ndigits}))"
        want = round(want, ndigits)
    out = run_code(code)
    if out is None or not out.strip() or len(out) > MAX_OUTPUT:
        stats["dropped_run"] += 1
        return None
    r = out.strip()
    if not _same_number(r, want):
        stats["dropped_check"] += 1
        return None
    final = rng.choice(fr_f if lang == "fr" else en_f).format(p=p, k=k, r=r)
    msgs = _tool_turn(user, rng.choice(_LEADS[lang]), code, out, final)
    t = Turn(msgs, lang, "maths", {"type": "number", "value": _num(r)}, number=r if _short(r) else None)
    t.followup = {"op": op, "operand": k, "previous": p}
    if ndigits is not None:
        t.followup["ndigits"] = ndigits
    return t


# --- unit conversions: an own first turn, and "Et en minutes ?" ---------------------------------------------

# unit -> (FR name, EN name); conversions (from, to, factor)
_UNITS = {"weeks": ("semaines", "weeks"), "days": ("jours", "days"), "hours": ("heures", "hours"),
          "minutes": ("minutes", "minutes"), "seconds": ("secondes", "seconds"),
          "km": ("kilomètres", "kilometers"), "m": ("mètres", "meters"), "cm": ("centimètres", "centimeters"),
          "mm": ("millimètres", "millimeters"), "kg": ("kilogrammes", "kilograms"), "g": ("grammes", "grams"),
          "mg": ("milligrammes", "milligrams"), "l": ("litres", "liters"), "ml": ("millilitres", "milliliters")}
_UNIT_NEXT = {"weeks": ("days", 7), "days": ("hours", 24), "hours": ("minutes", 60), "minutes": ("seconds", 60),
              "km": ("m", 1000), "m": ("cm", 100), "cm": ("mm", 10), "kg": ("g", 1000), "g": ("mg", 1000), "l": ("ml", 1000)}


def _de(name: str) -> str:
    return ("d'" if name[0] in "aeéiouh" else "de ") + name


_UNIT_ASK = {"fr": ["Combien {de_to} y a-t-il dans {q} {frm} ?", "Convertis {q} {frm} en {to}.", "{q} {frm}, ça fait combien {de_to} ?",
                    "J'ai {q} {frm} : ça représente combien {de_to} ?"],
             "en": ["How many {to} are there in {q} {frm}?", "Convert {q} {frm} to {to}.", "{q} {frm} is how many {to}?",
                    "I have {q} {frm}: how many {to} is that?"]}
_UNIT_MORE = {"fr": ["Et en {to} ?", "Ça fait combien en {to} ?", "Convertis ça en {to}.", "Et en {to}, ça donne quoi ?",
                     "Et si je le veux en {to} ?"],
              "en": ["And in {to}?", "What's that in {to}?", "Convert that to {to}.", "How many {to} is that?",
                     "And expressed in {to}?"]}
_UNIT_FINAL = {"fr": ["{q} {frm} = {r} {to}.", "Cela fait {r} {to}.", "{q} {frm} font {r} {to}."],
               "en": ["{q} {frm} = {r} {to}.", "That is {r} {to}.", "{q} {frm} make {r} {to}."]}


def _unit_names(lang: str, unit: str) -> str:
    return _UNITS[unit][0 if lang == "fr" else 1]


def unit_turn(rng: random.Random, lang: str, run_code: RunCode, stats: Counter) -> Turn | None:
    """A first turn converting a quantity ("Combien d'heures y a-t-il dans 3 jours ?"), whose result a
    follow-up can convert further."""
    frm = rng.choice([u for u, (to, _) in _UNIT_NEXT.items() if to in _UNIT_NEXT])
    to, f = _UNIT_NEXT[frm]
    q = rng.randint(2, 60)
    fn, tn = _unit_names(lang, frm), _unit_names(lang, to)
    user = _phrase(rng, _UNIT_ASK[lang], q=q, frm=fn, to=tn, de_to=_de(tn))
    if user is None:
        return None
    code = f"print({q} * {f})"
    out = run_code(code)
    if out is None or not _same_number(out.strip(), q * f):
        stats["dropped_run" if out is None else "dropped_check"] += 1
        return None
    r = out.strip()
    final = rng.choice(_UNIT_FINAL[lang]).format(q=q, frm=fn, to=tn, r=r)
    t = Turn(_tool_turn(user, rng.choice(_FIRST_LEADS[lang]), code, out, final), lang, "maths",
             {"type": "number", "value": _num(r)}, number=r, unit=to)
    return t


def unit_followup(rng: random.Random, prev: Turn, run_code: RunCode, stats: Counter) -> Turn | None:
    """"Et en minutes ?" after a result in hours: the previous result times the factor."""
    lang, p = prev.lang, prev.number
    to, f = _UNIT_NEXT[prev.unit]
    fn, tn = _unit_names(lang, prev.unit), _unit_names(lang, to)
    user = _phrase(rng, _UNIT_MORE[lang], to=tn)
    if user is None:
        return None
    code = f"print({_lit(p)} * {f})"
    out = run_code(code)
    want = expected_number("mul", _num(p), f)
    if out is None or not _same_number(out.strip(), want):
        stats["dropped_run" if out is None else "dropped_check"] += 1
        return None
    r = out.strip()
    final = rng.choice(_UNIT_FINAL[lang]).format(q=p, frm=fn, to=tn, r=r)
    t = Turn(_tool_turn(_lead_in(rng, lang, user), rng.choice(_LEADS[lang]), code, out, final), lang, "maths",
             {"type": "number", "value": _num(r)}, number=r, unit=to)
    t.followup = {"op": "mul", "operand": f, "previous": p, "unit": to}
    return t


# --- follow-ups on a list ------------------------------------------------------------------------------------

# op -> (FR users, EN users, FR finals, EN finals, code expression of `{v}`)
_LIST_OPS: dict[str, tuple[list[str], list[str], list[str], list[str], str]] = {
    "sort_desc": (["Maintenant, trie la même liste par ordre décroissant.", "Et la même liste du plus grand au plus petit ?",
                   "Range-la dans l'ordre décroissant.", "Trie-la à l'envers, du plus grand au plus petit."],
                  ["Now sort the same list in descending order.", "Sort that same list from largest to smallest.",
                   "Can you put it in descending order now?", "And the same list, biggest first?"],
                  ["Dans l'ordre décroissant : {r}.", "Triée du plus grand au plus petit : {r}."],
                  ["In descending order: {r}.", "Sorted from largest to smallest: {r}."], "sorted({v}, reverse=True)"),
    "sort_asc": (["Et triée dans l'ordre croissant ?", "Trie cette même liste du plus petit au plus grand."],
                 ["And sorted in ascending order?", "Sort the same list from smallest to largest."],
                 ["Dans l'ordre croissant : {r}.", "Triée : {r}."],
                 ["In ascending order: {r}.", "Sorted: {r}."], "sorted({v})"),
    "reverse": (["Et cette liste à l'envers ?", "Inverse l'ordre de la même liste."],
                ["And that list reversed?", "Reverse the order of the same list."],
                ["À l'envers : {r}.", "Liste inversée : {r}."],
                ["Reversed: {r}.", "The list reversed: {r}."], "{v}[::-1]"),
    "sum": (["Et la somme de ces nombres ?", "Additionne tous les éléments de la même liste."],
            ["And the sum of those numbers?", "Add up all the items of that same list."],
            ["La somme vaut {r}.", "Somme : {r}."],
            ["The sum is {r}.", "Sum: {r}."], "sum({v})"),
    "max": (["Quel est le plus grand nombre de cette liste ?", "Et le maximum de la même liste ?"],
            ["Which is the largest number in that list?", "And the maximum of the same list?"],
            ["Le plus grand est {r}.", "Maximum : {r}."],
            ["The largest is {r}.", "Maximum: {r}."], "max({v})"),
    "min": (["Et le plus petit élément ?", "Quel est le minimum de cette liste ?"],
            ["And the smallest item?", "What is the minimum of that list?"],
            ["Le plus petit est {r}.", "Minimum : {r}."],
            ["The smallest is {r}.", "Minimum: {r}."], "min({v})"),
    "len": (["Combien d'éléments contient cette liste ?", "Et elle a combien de nombres, cette liste ?"],
            ["How many items does that list have?", "And how many numbers are in it?"],
            ["Elle contient {r} éléments.", "{r} éléments."],
            ["It has {r} items.", "{r} items."], "len({v})"),
}


def _expected_list(op: str, values: list):
    return {"sort_desc": lambda v: sorted(v, reverse=True), "sort_asc": sorted, "reverse": lambda v: list(reversed(v)),
            "sum": sum, "max": max, "min": min, "len": len}[op](list(values))


def list_followup(rng: random.Random, prev: Turn, run_code: RunCode, stats: Counter) -> Turn | None:
    """A follow-up on the list the user gave in prev ("Now sort that same list from largest to smallest")."""
    values, lang = prev.values, prev.lang
    if values is None:
        return None
    done = (prev.followup or {}).get("op")
    op = rng.choice([o for o in _LIST_OPS if o != done and not (done in ("sort_asc", "sort_desc") and o == "reverse")])
    fr_u, en_u, fr_f, en_f, expr = _LIST_OPS[op]
    user = _phrase(rng, fr_u if lang == "fr" else en_u)
    if user is None:
        return None
    var = rng.choice(["data", "nums", "values", "liste" if lang == "fr" else "items"])
    code = f"{var} = {values!r}\nprint({expr.format(v=var)})"
    out = run_code(code)
    want = _expected_list(op, values)
    if out is None or not out.strip() or len(out) > MAX_OUTPUT:
        stats["dropped_run"] += 1
        return None
    r = out.strip()
    try:
        got = ast.literal_eval(r)
    except (ValueError, SyntaxError):
        got = None
    if got != want:
        stats["dropped_check"] += 1
        return None
    final = rng.choice(fr_f if lang == "fr" else en_f).format(r=r)
    if isinstance(want, list):
        ref = {"type": "list", "value": want, "ordered": True}
        t = Turn(_tool_turn(_lead_in(rng, lang, user), rng.choice(_LEADS[lang]), code, out, final), lang, "data", ref,
                 values=want)
    else:
        ref = {"type": "number", "value": want}
        t = Turn(_tool_turn(_lead_in(rng, lang, user), rng.choice(_LEADS[lang]), code, out, final), lang, "data", ref,
                 number=r if _short(r) else None, values=values)
    t.followup = {"op": op, "values": list(values)}
    return t


def followup(rng: random.Random, prev: Turn, run_code: RunCode, stats: Counter) -> Turn | None:
    if prev.values is not None and (prev.number is None or rng.random() < 0.5):
        return list_followup(rng, prev, run_code, stats)
    return numeric_followup(rng, prev, run_code, stats)


# --- thanks / closing ----------------------------------------------------------------------------------------

_THANKS = {"fr": ["Top, merci pour le calcul !", "Merci pour ton aide !", "Nickel, c'est exactement ce qu'il me fallait.",
                  "Génial, merci infiniment !", "D'accord, merci.", "Parfait, j'ai compris, merci !", "Ok merci, à plus !",
                  "Merci, c'est noté.", "Trop bien, merci beaucoup pour ça !", "Super, c'est tout ce que je voulais savoir.",
                  "Merci, ça m'aide beaucoup.", "Ah d'accord, merci bien !"],
           "en": ["Thanks for the help!", "Thank you, that's exactly what I needed.", "Cheers, that helps.",
                  "Got it, thank you!", "Awesome, much appreciated.", "Ok, thanks for checking.", "Perfect, that's all I needed.",
                  "Thank you so much!", "Nice, thanks a bunch.", "Great, that answers my question.", "Thanks, see you later!",
                  "Brilliant, thank you."]}
_REPLIES = {"fr": ["Avec plaisir !", "De rien ! N'hésite pas si tu as d'autres questions.", "Je t'en prie, bonne continuation !",
                   "Content d'avoir pu t'aider !", "Avec plaisir, à bientôt !", "De rien, je reste disponible pour d'autres calculs."],
            "en": ["You're welcome!", "Glad I could help! Let me know if you have other questions.", "Any time, have a good day!",
                   "My pleasure!", "You're welcome, see you soon!", "Happy to help with any other calculation."]}


def thanks_turn(rng: random.Random, lang: str) -> Turn | None:
    user = _phrase(rng, _THANKS[lang])
    if user is None:
        return None
    return Turn([{"role": "user", "content": user}, {"role": "assistant", "content": rng.choice(_REPLIES[lang])}],
                lang, "negative", None)


# --- corrections ---------------------------------------------------------------------------------------------

_CORRECT = {"fr": ["Non, je voulais dire {new}, pas {old}.", "Pardon, je me suis trompé : c'est {new} et non {old}.",
                   "Oups, remplace {old} par {new}.", "Correction : {new} au lieu de {old}.", "Attends, c'était {new}, pas {old}.",
                   "Non, pas {old} : {new}."],
            "en": ["No, I meant {new}, not {old}.", "Sorry, typo: {new} instead of {old}.", "Actually, make that {new} rather than {old}.",
                   "Wait, it should be {new}, not {old}.", "Oops, replace {old} with {new}.", "Correction: {new}, not {old}."]}
_CORRECT_FINAL = {"fr": ["Avec {new} au lieu de {old}, on obtient {r}.", "Avec {new} : {r}."],
                  "en": ["With {new} instead of {old}, the result is {r}.", "With {new}: {r}."]}
_INT = re.compile(r"(?<![\w.\-])\d+(?![\w.]|\.\d)")


def correction(rng: random.Random, prev: Turn, run_code: RunCode, stats: Counter) -> Turn | None:
    """The user changes one number of prev's request: the same code with that number changed, run again."""
    if not prev.python or prev.number is None:
        return None
    user0 = prev.messages[0]["content"]
    act = next(m for m in prev.messages if m.get("code") is not None)
    code0, final0 = act["code"], prev.messages[-1]["content"]
    in_user = Counter(_INT.findall(user0))
    in_code = Counter(_INT.findall(code0))
    cands = [x for x in in_user if in_user[x] == 1 and in_code.get(x) == 1 and 2 <= int(x) <= 10**6 and len(x) == len(str(int(x)))]
    if not cands:
        return None
    old = rng.choice(cands)
    o = int(old)
    delta = rng.randint(1, max(1, o // 5))
    new = str(o + delta if rng.random() < 0.6 or o - delta < 2 else o - delta)
    code = _INT.sub(lambda m: new if m.group(0) == old else m.group(0), code0)
    user = _phrase(rng, _CORRECT[prev.lang], new=new, old=old)
    if user is None:
        return None
    out = run_code(code)
    if out is None or not out.strip() or len(out) > MAX_OUTPUT:
        stats["dropped_run"] += 1
        return None
    r = out.strip()
    if not _is_number(r):
        stats["dropped_check"] += 1
        return None
    # the first turn's final text with the operand and the result swapped, when both occur once; else a generic one
    p = prev.number
    if (len(re.findall(r"(?<![\d.])" + re.escape(old) + r"(?![\d]|\.\d)", final0)) == 1
            and len(re.findall(r"(?<![\d.])" + re.escape(p) + r"(?![\d]|\.\d)", final0)) == 1 and old != p):
        final = re.sub(r"(?<![\d.])(" + re.escape(old) + "|" + re.escape(p) + r")(?![\d]|\.\d)",
                       lambda m: new if m.group(1) == old else r, final0)
    else:
        final = rng.choice(_CORRECT_FINAL[prev.lang]).format(new=new, old=old, r=r)
    lead = act.get("content") or ""
    t = Turn(_tool_turn(user, lead, code, out, final), prev.lang, prev.category, {"type": "number", "value": _num(r)},
             number=r if _short(r) else None)
    t.followup = {"op": "correction", "old": old, "new": new}
    return t


# --- conversations -------------------------------------------------------------------------------------------


def to_multiturn_record(turns: list[Turn], kind: str) -> dict:
    """Turns -> a routing record: earlier turns flattened with weight 0, the last one intact."""
    msgs = [m for t in turns for m in t.messages]
    msgs = flatten_history(msgs, earlier_weight=0)
    last = turns[-1]
    digest = hashlib.sha1(json.dumps(msgs, ensure_ascii=False).encode()).hexdigest()[:12]
    rec = {"id": f"routing:multiturn-{digest}", "source": "routing", "lang": last.lang, "kind": kind,
           "category": last.category, "reference": last.reference, "n_turns": len(turns), "messages": msgs}
    if last.followup is not None:
        rec["followup"] = last.followup
    return rec


def compose_conversations(singles: list[dict], n: int, rng: random.Random | int, lang: str | None = None,
                          run_code: RunCode | None = None, stats: Counter | None = None,
                          kind_weights: dict[str, float] | None = None) -> list[dict]:
    """Up to n multi-turn routing records (2-3 turns) built from single-turn routing records.

    `rng`: a random.Random (its state advances) or an int seed. `lang`: "fr", "en" or None (both, each conversation in one language). `run_code`: code -> stdout or None
    (`sandbox_runner(sb)` in the generator, a fake in tests). `stats`: a Counter that gets kinds, turns and drops.
    Deterministic for the same singles, rng state and run_code outputs. Fewer than n come back only when the
    singles cannot make more (counted in stats["short"])."""
    if run_code is None:
        raise ValueError("compose_conversations needs run_code (code -> stdout), e.g. sandbox_runner(sandbox)")
    if isinstance(rng, int) and not isinstance(rng, bool):
        rng = random.Random(rng)
    stats = stats if stats is not None else Counter()
    langs = [lang] if lang else list(LANGS)
    pools: dict[str, dict[str, list[Turn]]] = {}
    for rec in singles:
        t = turn_from_record(rec)
        if t is None or t.lang not in langs:
            continue
        p = pools.setdefault(t.lang, {"code": [], "nocode": [], "python": [], "number": [], "values": []})
        if t.has_code:
            p["code"].append(t)
        elif t.category == "negative":
            p["nocode"].append(t)
        if t.python:
            p["python"].append(t)
        if t.number is not None:
            p["number"].append(t)
        if t.values is not None:
            p["values"].append(t)
    langs = [l for l in langs if l in pools]
    weights = kind_weights or KIND_WEIGHTS
    kinds = [k for k in KINDS if weights.get(k, 0) > 0]
    out: list[dict] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and langs and tries < 30 * n + 100:
        tries += 1
        l = rng.choice(langs)
        kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        turns = _compose(rng, kind, l, pools[l], run_code, stats)
        if not turns:
            stats["failed_" + kind] += 1
            continue
        rec = to_multiturn_record(turns, kind)
        if rec["id"] in seen:
            stats["duplicates"] += 1
            continue
        seen.add(rec["id"])
        out.append(rec)
        stats[kind] += 1
        stats[f"turns_{len(turns)}"] += 1
    if len(out) < n:
        stats["short"] += n - len(out)
    return out


def _pick(rng: random.Random, pool: list[Turn]) -> Turn | None:
    return rng.choice(pool) if pool else None


def _compose(rng: random.Random, kind: str, lang: str, pool: dict[str, list[Turn]], run_code: RunCode,
             stats: Counter) -> list[Turn] | None:
    three = rng.random() < 0.3
    if kind == "multiturn-unrelated":
        # earlier turns: python code or no code (an artifact's page is no history to refer to); last: anything
        first_pool = pool["python"] + pool["nocode"]
        pattern = rng.choice([("code", "nocode"), ("nocode", "code"), ("code", "code")])
        seq = pattern + ((rng.choice(["code", "nocode"]),) if three else ())
        turns: list[Turn] = []
        for i, what in enumerate(seq):
            last = i == len(seq) - 1
            src = (pool["code"] if last else pool["python"]) if what == "code" else pool["nocode"]
            t = _pick(rng, src if src else first_pool)
            if t is None or any(t is u for u in turns):
                return None
            turns.append(t)
        return turns
    if kind == "multiturn-followup":
        first = unit_turn(rng, lang, run_code, stats) if rng.random() < 0.25 else _pick(rng, pool["number"] + pool["values"])
        if first is None:
            return None
        second = followup(rng, first, run_code, stats)
        if second is None:
            return None
        turns = [first, second]
        if three:
            third = followup(rng, second, run_code, stats) if rng.random() < 0.6 else thanks_turn(rng, lang)
            if third is not None:
                turns.append(third)
        return turns
    if kind == "multiturn-thanks":
        first = _pick(rng, pool["python"])
        if first is None:
            return None
        turns = [first]
        if three:
            mid = followup(rng, first, run_code, stats)
            if mid is not None:
                turns.append(mid)
        end = thanks_turn(rng, lang)
        return turns + [end] if end is not None else None
    if kind == "multiturn-correction":
        first = _pick(rng, pool["number"])
        if first is None:
            return None
        fix = correction(rng, first, run_code, stats)
        if fix is None:
            return None
        turns = [first, fix]
        if three:
            end = thanks_turn(rng, lang)
            if end is not None:
                turns.append(end)
        return turns
    raise ValueError(kind)
