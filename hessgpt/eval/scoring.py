"""Automatic, reproducible scoring of one answer against one bench item's checks.

Every check returns a score in [0, 1]. An item's score is the mean of its content checks, halved when the
answer is not in the expected language, and 0 when the answer is degenerate (empty, looping, garbled,
leaking special tokens). No randomness, no model: the same answer always gets the same score.

Check types (the `checks` list of a prompt item, see hessgpt/eval/prompts/*.jsonl and docs/evaluation.md):

    {"type": "contains_any", "values": [...]}     one of the strings appears (case/accent-insensitive)
    {"type": "contains_all", "values": [...]}     all of them appear
    {"type": "not_contains", "values": [...]}     none of them appears
    {"type": "regex", "pattern": "..."}           re.search matches (IGNORECASE)
    {"type": "numbered_list", "n": 5}             exactly n items "1." / "1)" ... in order
    {"type": "bullet_list", "n": 3}               exactly n lines starting with -, * or •
    {"type": "lines", "n": 3}                     exactly n non-empty lines
    {"type": "max_words", "n": 30} / {"type": "min_words", "n": 20}
    {"type": "json"}                              the answer (or its ```json block) parses as JSON
    {"type": "uppercase"} / {"type": "lowercase"}
    {"type": "lang", "lang": "fr"}                the answer is in that language (py3langid)
    {"type": "chrf", "references": [...], "target": 50}   min(1, chrF / target) against the references
    {"type": "number", "value": 42}               the answer's numbers include this value

The answer-language check is added automatically from the item's `answer_lang` (default: its `lang`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

from hessgpt.errors import HessGPTError

SPECIAL_TOKEN_RE = re.compile(r"<\|(?:system|user|assistant|end|code|result|tool_call|tool_response)\|>|</?s>|<pad>|</?search>")
GARBLED_RE = re.compile(r"[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # broken UTF-8, control characters
# Candidate languages for language id: a small set is far more stable on short answers (a list of five English
# nouns is "it" among 97 languages but clearly "en" between fr and en). The bench is fr/en.
LANGS = ("fr", "en")


# ---------------------------------------------------------------------------- normalisation helpers


def normalize(text: str) -> str:
    """Lowercase, strip accents, collapse whitespace and typographic quotes: 'Élève  l’été' -> "eleve l'ete"."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u00a0", " ").replace("\u202f", " ")
    return re.sub(r"\s+", " ", text.lower()).strip()


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


_NUM_RE = re.compile(r"(?<![\w.])-?\d+(?:[.,\u00a0\u202f ]\d+)*")


def extract_numbers(text: str) -> set[float]:
    """Every value the numbers in `text` could mean, reading both conventions.

    "1,000" -> {1000, 1.0, 0}; "12,5" -> {12.5, 12, 5}; "1 234,5" -> {1234.5, ...}; "$18.00" -> {18.0, ...}.
    Over-generous on purpose: the check is "the reference value is among them".
    """
    values: set[float] = set()
    for m in _NUM_RE.finditer(text):
        raw = m.group(0).replace("\u00a0", " ").replace("\u202f", " ")
        neg = raw.startswith("-")
        body = raw.lstrip("-")
        candidates = [body.replace(" ", "").replace(",", ""),                    # 1,234.5 (en)
                      body.replace(" ", "").replace(".", "").replace(",", ".")]  # 1.234,5 (fr/de)
        candidates += re.split(r"[ ,]", body)                                   # separate numbers "3, 4"
        for c in candidates:
            try:
                v = float(c)
            except ValueError:
                continue
            values.add(-v if neg else v)
    return values


def number_in(text: str, value: float) -> bool:
    return any(abs(v - value) <= 1e-6 * max(1.0, abs(value)) for v in extract_numbers(text))


# ---------------------------------------------------------------------------- language id


@lru_cache(maxsize=4)
def _identifier(langs: tuple[str, ...]):
    import py3langid.langid as L

    ident = L.LanguageIdentifier.from_modelpath(L.MODEL_DIR / L.MODEL_FILE, norm_probs=True)
    ident.set_languages(list(langs))
    return ident


def detect_lang(text: str, langs: tuple[str, ...] = LANGS) -> str | None:
    """ISO code of the text's language among `langs`, or None when the text is too short to tell (< 3 words)."""
    if len(words(text)) < 3:
        return None
    # numbers, code and URLs carry no language signal
    clean = re.sub(r"```.*?```|https?://\S+|\d+", " ", text, flags=re.S)
    if len(words(clean)) < 3:
        return None
    return _identifier(tuple(langs)).classify(clean)[0]


# ---------------------------------------------------------------------------- degenerate output


@dataclass
class Degeneracy:
    empty: bool = False
    repetitive: bool = False
    garbled: bool = False
    leaked_tokens: bool = False
    repeat_ratio: float = 0.0

    @property
    def degenerate(self) -> bool:
        return self.empty or self.repetitive or self.garbled or self.leaked_tokens

    def reasons(self) -> list[str]:
        return [n for n in ("empty", "repetitive", "garbled", "leaked_tokens") if getattr(self, n)]


def repeat_ratio(text: str, n: int = 3) -> float:
    """Fraction of word n-grams that repeat an earlier one (0 = all distinct, -> 1 for a loop)."""
    w = words(text)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    if len(grams) < 4:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def degeneracy(text: str) -> Degeneracy:
    """Empty answers, loops (word 3-grams > 50% repeated, one line repeated >= 4 times, a char run), garbled
    text (U+FFFD from broken UTF-8, control characters) and special tokens leaking into the visible text."""
    d = Degeneracy()
    stripped = text.strip()
    if not stripped or not re.search(r"\w", stripped):
        d.empty = True
        return d
    d.repeat_ratio = repeat_ratio(stripped)
    lines = [ln.strip() for ln in stripped.splitlines() if ln.strip()]
    most_common_line = max((lines.count(ln) for ln in set(lines)), default=0)
    char_run = re.search(r"(.{1,8}?)\1{15,}", stripped, flags=re.S) is not None  # "hahahaha..." x16
    d.repetitive = d.repeat_ratio > 0.5 or most_common_line >= 4 or char_run
    d.garbled = GARBLED_RE.search(text) is not None
    d.leaked_tokens = SPECIAL_TOKEN_RE.search(text) is not None
    return d


# ---------------------------------------------------------------------------- the checks


def _list_items(text: str, pattern: str) -> list[str]:
    return [m.group(1) for m in re.finditer(pattern, text, flags=re.M)]


def numbered_items(text: str) -> list[int]:
    """The numbers of lines that look like '1. ...', '2) ...', '**3.** ...'."""
    return [int(x) for x in _list_items(text, r"^\s*\**(\d+)\s*[.)]\**\s+\S")]


def _json_ok(text: str) -> bool:
    m = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.S)
    body = m.group(1) if m else text.strip()
    try:
        json.loads(body)
        return True
    except (ValueError, TypeError):
        return False


def chrf(hyp: str, references: list[str]) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_chrf(hyp, references).score)


def run_check(check: dict, answer: str) -> float:
    """Score in [0, 1] of `answer` against one check dict (see the module docstring)."""
    kind = check["type"]
    norm = normalize(answer)
    if kind == "contains_any":
        return float(any(normalize(v) in norm for v in check["values"]))
    if kind == "contains_all":
        vals = check["values"]
        return sum(normalize(v) in norm for v in vals) / len(vals)
    if kind == "not_contains":
        return float(not any(normalize(v) in norm for v in check["values"]))
    if kind == "regex":
        return float(re.search(check["pattern"], answer, flags=re.I | re.M) is not None)
    if kind == "numbered_list":
        nums = numbered_items(answer)
        return float(nums == list(range(1, check["n"] + 1)))
    if kind == "bullet_list":
        return float(len(_list_items(answer, r"^\s*[-*•]\s+(\S)")) == check["n"])
    if kind == "lines":
        return float(len([ln for ln in answer.splitlines() if ln.strip()]) == check["n"])
    if kind == "max_words":
        return float(0 < len(words(answer)) <= check["n"])
    if kind == "min_words":
        return float(len(words(answer)) >= check["n"])
    if kind == "json":
        return float(_json_ok(answer))
    if kind == "uppercase":
        letters = [c for c in answer if c.isalpha()]
        return float(bool(letters) and all(c.isupper() for c in letters))
    if kind == "lowercase":
        letters = [c for c in answer if c.isalpha()]
        return float(bool(letters) and all(c.islower() for c in letters))
    if kind == "lang":
        langs = LANGS if check["lang"] in LANGS else (*LANGS, check["lang"])
        got = detect_lang(answer, langs)
        return 1.0 if got is None else float(got == check["lang"])
    if kind == "chrf":
        return min(1.0, chrf(answer, check["references"]) / check.get("target", 50.0))
    if kind == "number":
        return float(number_in(answer, float(check["value"])))
    raise ValueError(f"unknown check type {kind!r}")


@dataclass
class ItemScore:
    score: float                                   # in [0, 1]
    checks: list[dict] = field(default_factory=list)  # [{"type": ..., "score": ...}]
    degenerate: list[str] = field(default_factory=list)
    lang: str | None = None                        # detected answer language


def item_checks(item: dict) -> list[dict]:
    """The item's own checks plus the answer-language check (unless answer_lang is null)."""
    checks = list(item.get("checks", []))
    answer_lang = item.get("answer_lang", item.get("lang"))
    if answer_lang and not any(c["type"] == "lang" for c in checks):
        checks.append({"type": "lang", "lang": answer_lang})
    return checks


def score_answer(item: dict, answer: str) -> ItemScore:
    """Mean of the item's content checks (1 if it has none) x 0.5 if the language check fails; 0 if degenerate.

    The language check multiplies rather than adds, so a wrong answer in the right language gets nothing and
    a right answer in the wrong language gets half.
    """
    deg = degeneracy(answer)
    results = [{"type": c["type"], "score": run_check(c, answer)} for c in item_checks(item)]
    content = [r["score"] for r in results if r["type"] != "lang"]
    score = sum(content) / len(content) if content else 1.0
    if any(r["type"] == "lang" and r["score"] < 1.0 for r in results):
        score *= 0.5
    return ItemScore(score=0.0 if deg.degenerate else score, checks=results,
                     degenerate=deg.reasons(), lang=detect_lang(answer))


# ---------------------------------------------------------------------------- tool-use results


# One number token: digits, optional thousands groups of exactly 3 digits separated by a (narrow) space, then
# any "." / "," groups ("1,000.5", "48,875", "1,5", "12 500", "70 000"); "3, 4" is two numbers.
_TOKEN_RE = re.compile(r"(?<![\w.,])-?\d+(?:[ \u00a0\u202f]\d{3}(?!\d))*(?:[.,]\d+)*")
_SYMBOLIC_SEPS = ("=", ":", " est ", " is ", " vaut ", "equals")
_SYMBOLIC_NAMES = {"sqrt", "sin", "cos", "tan", "exp", "log", "ln", "pi", "e", "E"}
_SYMBOLIC_CHARS = re.compile(r"[0-9A-Za-z_+\-*/().\s]*")
YES_WORDS = {"yes", "oui", "vrai", "true"}
NO_WORDS = {"no", "non", "faux", "false"}


def number_readings(token: str) -> set[float]:
    """The values one number token can mean: "48,875" -> {48875, 48.875}; "1,5" -> {1.5}; "12 500" -> {12500}."""
    neg = token.startswith("-")
    body = re.sub(r"[ \u00a0\u202f]", "", token.lstrip("-"))
    out: set[float] = set()
    commas, dots = body.split(","), body.split(".")
    # en: "," groups thousands (3 digits each), at most one "."
    if all(len(g) == 3 for g in commas[1:]) and body.count(".") <= 1:
        out.add(float(body.replace(",", "")))
    # fr: "." groups thousands, at most one "," (the decimal comma)
    if all(len(g) == 3 for g in dots[1:]) and body.count(",") <= 1:
        out.add(float(body.replace(".", "").replace(",", ".")))
    if body.count(".") == 1 and "," not in body:
        out.add(float(body))
    return {-v if neg else v for v in out}


def ordered_numbers(text: str) -> list[set[float]]:
    """The numbers of `text` in order, each as the set of its readings."""
    return [r for r in (number_readings(m.group(0)) for m in _TOKEN_RE.finditer(text)) if r]


def _close(a: float, b: float, tol: float | None = None) -> bool:
    return abs(a - b) <= (1e-6 * max(1.0, abs(b)) if tol is None else tol)


def _same_number(a: set[float], b: set[float]) -> bool:
    return any(_close(x, y) for x in a for y in b)


def numbers_beyond_question(final_text: str, question: str) -> list[set[float]]:
    """The answer's numbers minus, as a multiset, the question's: each question number removes the earliest
    answer number it can equal ("5 * 1 = 5" for "what is 5*1?" keeps the last 5)."""
    nums = ordered_numbers(final_text)
    for q in ordered_numbers(question):
        hit = next((i for i, a in enumerate(nums) if _same_number(a, q)), None)
        if hit is not None:
            nums.pop(hit)
    return nums


def confident_lang(text: str, threshold: float = 0.9) -> str | None:
    """The text's language (fr/en) when it has >= 3 words once numbers and code are removed and py3langid is
    at least `threshold` sure; else None."""
    clean = re.sub(r"```.*?```|`[^`]*`|https?://\S+|[\d.,]+", " ", text, flags=re.S)
    if len(words(clean)) < 3:
        return None
    lang, prob = _identifier(LANGS).classify(clean)
    return lang if prob >= threshold else None


def symbolic_answer(final_text: str) -> str | None:
    """The expression after the last "=", ":", " est ", " is ", " vaut ", "equals", normalised for sympy's
    parser ("^" -> "**", ², ³, ×, −, "+ C" dropped), up to the end of its sentence; None when there is none."""
    text = final_text.replace("\u2212", "-").replace("\u00d7", "*").replace("\u00b7", "*").replace("\u00f7", "/")
    text = text.replace("\u00b2", "^2").replace("\u00b3", "^3").replace("`", " ").replace("$", " ")
    pos = [(text.rfind(s), s) for s in _SYMBOLIC_SEPS]
    at, sep = max(pos)
    if at < 0:
        return None
    expr = text[at + len(sep):]
    expr = re.split(r"\n|[!?;]|\.(?!\d)", expr, maxsplit=1)[0]
    expr = re.sub(r"\+\s*(?:C|K|cste|constante|constant)\s*$", "", expr.strip()).strip()
    return expr.replace("^", "**") or None


def parse_symbolic(expr: str):
    """sympy expression of a short maths string, or None when it is not one (length, characters, names)."""
    import sympy
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                            standard_transformations)

    if not expr or len(expr) > 300 or not _SYMBOLIC_CHARS.fullmatch(expr) or "__" in expr:
        return None
    for name in re.findall(r"[A-Za-z_]\w*", expr):  # single-letter symbols or a few known functions only
        if name not in _SYMBOLIC_NAMES and not re.fullmatch(r"[A-Za-z]{1,3}", name):
            return None  # a word of text, not a product of symbols
    local = {"e": sympy.E, "E": sympy.E, "ln": sympy.log, "x": sympy.Symbol("x")}
    try:
        return parse_expr(expr, local_dict=local, transformations=(*standard_transformations,
                          implicit_multiplication_application, convert_xor))
    except Exception:  # the parser raises many kinds (SyntaxError, TokenError, TypeError...) on non-maths text
        return None


def _list_answer(final_text: str) -> list | None:
    import ast

    lists = re.findall(r"\[[^\[\]]*\]", final_text)
    if lists:
        try:
            v = ast.literal_eval(lists[-1])
        except (ValueError, SyntaxError):
            v = None
        if isinstance(v, (list, tuple)):
            return list(v)
    _, sep, tail = final_text.rpartition(":")
    if not sep:
        return None
    tail = re.split(r"\n", tail.strip(), maxsplit=1)[0].strip().rstrip(".!")
    items = [x.strip().strip("'\"«»`").strip() for x in re.split(r",\s+|,(?=\D)|\s+(?:et|and)\s+", tail)]
    out: list = []
    for it in items:
        if not it:
            continue
        r = number_readings(it) if _TOKEN_RE.fullmatch(it) else set()
        out.append(min(r) if len(r) == 1 else (next(iter(r)) if r else it))
    return out or None


# a list item that is a label and one number: "quotient 43", "le reste 0", "remainder: 2"
_LABELLED_NUMBER = re.compile(r"(?:[^\W\d_]+[':\s]+)+(-?\d[\d.,]*)")


def _item_eq(a, b) -> bool:
    if isinstance(b, bool) or isinstance(a, bool):
        return a == b
    if isinstance(b, (int, float)) and isinstance(a, (int, float)):
        return _close(float(a), float(b))
    if isinstance(b, (int, float)) and isinstance(a, str):
        m = _LABELLED_NUMBER.fullmatch(a.strip())
        if m:
            return any(_close(v, float(b)) for v in number_readings(m.group(1)))
    return str(a) == str(b)


def _symbolic_equal(got, value) -> tuple[bool, str]:
    """(right, reason) of a parsed sympy expression (or None) against a symbolic reference string."""
    import sympy

    want = parse_symbolic(str(value).replace("^", "**"))
    if want is None:
        raise HessGPTError(f"symbolic reference {value!r} does not parse")
    if got is None:
        return False, "no_result"
    try:
        ok = sympy.simplify(got - want) == 0
    except Exception:  # e.g. an equation or a relational where an expression is expected
        return False, "no_result"
    return bool(ok), "ok" if ok else "wrong_value"


def _exact_numbers_list(text: str) -> list[float] | None:
    """The real values of the last [...] list of `text` when every item is a closed-form number sympy reads
    ("[-7/2 - sqrt(41)/2, 3]", "[0, 3]"), else None."""
    lists = re.findall(r"\[([^\[\]]*)\]", text)
    if not lists or not lists[-1].strip():
        return None
    out = []
    for item in lists[-1].split(","):
        e = parse_symbolic(item.strip())
        if e is None or e.free_symbols:
            return None
        try:
            v = complex(e.evalf())
        except (TypeError, ValueError):
            return None
        if abs(v.imag) > 1e-9:
            return None
        out.append(v.real)
    return out


def score_output(reference: dict | float, output: str) -> tuple[bool, str]:
    """Is a program's printed output the reference? The output is the value itself, not a sentence: the last
    line for a symbolic result, the lines as items for a list printed one per line, else as score_result reads
    an answer. Separates code that computed the wrong thing from a right result stated wrongly (eval tools)."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    if not lines:
        return False, "no_result"
    kind = reference.get("type") if isinstance(reference, dict) else "number"
    if kind == "symbolic":
        return _symbolic_equal(parse_symbolic(lines[-1].replace("^", "**")), reference["value"])
    if kind == "list" and len(lines) > 1 and not any("[" in ln for ln in lines):
        return score_result(reference, ": " + ", ".join(lines))
    return score_result(reference, "\n".join(lines))


def score_result(reference: dict | float, final_text: str, question: str = "",
                 lang: str | None = None) -> tuple[bool, str]:
    """Is the result stated in `final_text` (the assistant text after the last tool result) the reference?

    reference: the type-tagged object of docs/evaluation.md ({"type": "number"|"symbolic"|"list"|"string"|
    "bool"|"set_of_numbers", "value": ...}) or a plain number (= number). Returns (right, reason) with reason
    one of "ok", "wrong_value", "restated_question" (only the question's own numbers are stated), "no_result"
    (nothing of the expected type found), "wrong_language" (confidently the other language of `lang`).
    """
    if not isinstance(reference, dict):
        reference = {"type": "number", "value": float(reference)}
    kind, value = reference.get("type"), reference.get("value")
    if lang in LANGS:
        got = confident_lang(final_text)
        if got is not None and got != lang:
            return False, "wrong_language"
    if kind == "number":
        nums = numbers_beyond_question(final_text, question)
        stated = ordered_numbers(final_text)
        if not nums and len(stated) == 1:  # "It's 12." for "144 divided by 12": the result is a question number
            ok = any(_close(v, float(value), reference.get("tol")) for v in stated[0])
            return ok, "ok" if ok else "restated_question"
        if not nums:
            return False, "restated_question" if stated else "no_result"
        ok = any(_close(v, float(value), reference.get("tol")) for v in nums[-1])
        return ok, "ok" if ok else "wrong_value"
    if kind == "set_of_numbers":
        ref = [float(v) for v in value]
        exact = _exact_numbers_list(final_text)   # "[-7/2 - sqrt(41)/2, -7/2 + sqrt(41)/2]": sympy's own roots
        if exact is not None:
            ok = all(any(_close(r, v) for r in exact) for v in ref) and all(any(_close(r, v) for v in ref) for r in exact)
            return ok, "ok" if ok else "wrong_value"
        nums = numbers_beyond_question(final_text, question)
        if not nums:
            return False, "restated_question" if ordered_numbers(final_text) else "no_result"
        ok = all(any(_close(r, v) for n in nums for r in n) for v in ref) and \
            all(any(_close(r, v) for r in n for v in ref) for n in nums)
        return ok, "ok" if ok else "wrong_value"
    if kind == "symbolic":
        return _symbolic_equal(parse_symbolic(symbolic_answer(final_text) or ""), value)
    if kind == "list":
        got = _list_answer(final_text)
        if got is None:
            return False, "no_result"
        want = list(value)
        if reference.get("ordered", True):
            ok = len(got) == len(want) and all(_item_eq(a, b) for a, b in zip(got, want))
        else:
            rest = list(got)
            ok = len(got) == len(want)
            for b in want:
                hit = next((i for i, a in enumerate(rest) if _item_eq(a, b)), None)
                if hit is None:
                    ok = False
                    break
                rest.pop(hit)
        return ok, "ok" if ok else "wrong_value"
    if kind == "string":
        flags = re.I if reference.get("ignore_case") else 0
        ok = re.search(rf"(?<!\w){re.escape(str(value))}(?!\w)", final_text, flags) is not None
        return ok, "ok" if ok else "wrong_value"
    if kind == "bool":
        w = set(words(normalize(final_text)))
        yes, no = bool(w & YES_WORDS), bool(w & NO_WORDS)
        if not (yes or no):
            return False, "no_result"
        ok = (yes and not no) if value else (no and not yes)
        return ok, "ok" if ok else "wrong_value"
    raise HessGPTError(f"unknown reference type {kind!r} (expected number, symbolic, list, string, bool or set_of_numbers)")


# ---------------------------------------------------------------------------- search answers (eval tools)

# An answer that says the documents do not hold it, or that it does not know (normalize()d text: lower case,
# no accents, straight apostrophes). Written from the generator's "not found" sentences and the usual ways of
# declining, in both languages; a constant "I don't know." declines too (the baseline shows what that is worth).
DECLINE_RE = re.compile(
    r"pas trouve|ne (?:le |la |les |l')?trouve pas|trouve rien|rien trouve|aucun (?:document|passage|resultat|source)|"
    r"ne (?:mentionne|mentionnent|parle|parlent|dit|disent|contient|contiennent|precise|precisent|indique|indiquent)\w* pas|"
    r"rien (?:dans|sur)|je ne (?:sais|peux) pas|pas (?:d'information|de reponse|en mesure)|introuvable|"
    r"(?:could not|couldn't|cannot|can't|can not|did not|didn't|was unable to|am unable to) (?:find|locate)|no (?:document|passage|result|information|source)|"
    r"none of the (?:document|passage|result)|nothing in the|(?:do|does|did)(?: not|n't) (?:mention|say|state|cover|contain|know)|"
    r"not (?:found|mentioned|stated)|i (?:do not|don't) know|unable to find")
_CITATION_RE = re.compile(r"\[\d+\]")


def declines(text: str) -> bool:
    """Does the answer say it found nothing / does not know (rather than state a fact)?"""
    return DECLINE_RE.search(normalize(text)) is not None


def _without_article(value: str) -> str:
    """"le dollar canadien" -> "dollar canadien", "l'euro" -> "euro": the fact, however the sentence is built."""
    return re.sub(r"^(?:le|la|les|l'|the)\s*", "", normalize(value))


def states_value(text: str, value: str) -> bool:
    """`value` (article aside) as whole words of `text`, case and accents aside ("Bern" is not "Berne")."""
    v = _without_article(value)
    return bool(v) and re.search(rf"(?<!\w){re.escape(v)}(?!\w)", normalize(text)) is not None


def score_search(spec: dict, searched: bool, final_text: str, question: str = "", lang: str | None = None) -> tuple[bool, str]:
    """One search item (`spec` = {"needed": bool, "answerable": bool | None, "value": str | None}) of `eval tools`.

    - answerable: right iff the answer after the hits states the value and does not decline ("ok",
      "declined", "wrong_value", "wrong_language"); whether it searched is scored apart (search recall).
    - unanswerable: right iff it declines and states no number beyond the question's, citations aside ("ok",
      "invented": no decline, "number_stated": declines but gives a number).
    - no_search: right iff it did not search and answered something ("ok", "searched", "empty").
    """
    if not spec.get("needed"):
        if searched:
            return False, "searched"
        return (True, "ok") if final_text.strip() else (False, "empty")
    if spec.get("answerable"):
        if lang in LANGS:
            got = confident_lang(final_text)
            if got is not None and got != lang:
                return False, "wrong_language"
        if declines(final_text):
            return False, "declined"
        ok = states_value(final_text, str(spec.get("value") or ""))
        return ok, "ok" if ok else "wrong_value"
    if not declines(final_text):
        return False, "invented"
    if numbers_beyond_question(_CITATION_RE.sub(" ", final_text), question):
        return False, "number_stated"
    return True, "ok"
