"""`hessgpt data routing`: the verified bilingual routing dataset (when to write code, when not to).

    hessgpt data routing --n 20000 --out data/routing.jsonl [--langs fr,en] [--seed 0]
                         [--val-fraction 0.05] [--negative-fraction 0.25] [--workers 2]
        -> data/routing.jsonl (train) + data/routing.val.jsonl (validation) + data/routing.stats.json
    hessgpt data routing --validate llm_made.jsonl [--out checked.jsonl]
        -> runs every code block of an externally generated file, reports and drops the wrong samples
    hessgpt data routing ... --search-share 0.12
        -> + search conversations (hessgpt.data.routing_mix: the CLI of `hessgpt data routing`)

Four categories share the positive samples equally: `maths` (arithmetic, percentages, equations,
derivatives and integrals with sympy, statistics, word problems), `algo` (sorting, search, Fibonacci,
factorial, primes, strings, stacks/queues), `web` (HTML/CSS/JS *artifacts*: code_lang html/css/js, never
executed, no tool message) and `data` (lists, dicts, JSON parsing, arrays). `negative` samples
(greetings, facts, opinions, definitions) are answered directly, without code, so the model also learns
when NOT to call the interpreter.

Every Python sample goes through the sandbox (hessgpt.tools.sandbox, never this process); the tool
message holds the real stdout and the final sentence is built from it (a template filled with the
output's text), so no sample states a number the code did not print. Failed runs are dropped and
counted. Generation is deterministic for a seed; user prompts are deduplicated (case/space-insensitive).
The record id is `routing:<category>-<hash>`.
"""

import argparse
import functools
import hashlib
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

from hessgpt.data import routing_phrasing as P
from hessgpt.data.routing_multiturn import N_SHARE, compose_conversations, sandbox_runner
from hessgpt.errors import HessGPTError

CATEGORIES = ("maths", "algo", "web", "data")
LANGS = ("fr", "en")


@dataclass
class Candidate:
    """A sample before execution. `answer` is a str.format template filled with the params plus
    `out` (stdout stripped) and `l` (its lines); for web/negative it is the final text."""

    category: str
    kind: str
    lang: str
    user: str
    lead: str = ""
    code: str | None = None
    code_lang: str = "python"
    answer: str = ""
    params: dict = field(default_factory=dict)
    reference: dict | None = None   # type-tagged, computed here in plain Python (None: no exact result)
    ref_lines: bool = False         # a list reference stated one item per printed line
    split: str = "train"
    template: str = ""              # the question template (python samples), for the stats

    def key(self) -> str:
        return " ".join(self.user.lower().split())


# ---------------------------------------------------------------------------------------------------
# splits by construction: train / dev / test never share a template, an entity or an operand integer
# ---------------------------------------------------------------------------------------------------
SPLITS = ("train", "dev", "test")
SPLIT_SEED_OFFSET = {"train": 0, "dev": 7919, "test": 104729}   # each split is generated with its own seed


def _h(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")


def str_split(key: str) -> str:
    """The split an item belongs to by its stable hash: about 80% train, 10% dev, 10% test."""
    b = _h(key) % 100
    return "test" if b < 10 else "dev" if b < 20 else "train"


def int_split(n: int) -> str:
    """The split an operand integer belongs to (a hash bucket of n, not a visible digit pattern)."""
    return str_split(f"int:{n}")


MIN_PARTITIONED = 3    # lists with fewer distinct items are shared by all splits (listed in the stats)
MIN_INT_RANGE = 20     # integer ranges with fewer values are shared (list lengths, degrees, small coefficients)


def _item_key(x) -> str:
    return x if isinstance(x, str) else repr(x)


@functools.lru_cache(maxsize=None)
def partition(items: tuple) -> dict:
    """{split: [items]} for a list: distinct items by their stable hash, each split keeping at least one item.
    The empty string (no greeting, no politeness) is shared. Lists with < MIN_PARTITIONED items are shared."""
    uniq = list(dict.fromkeys(x for x in items if x != ""))
    shared = [""] if "" in items else []
    if len(uniq) < MIN_PARTITIONED:
        return {s: list(items) for s in SPLITS}
    parts = {s: [] for s in SPLITS}
    for x in uniq:
        parts[str_split(_item_key(x))].append(x)
    for s in ("test", "dev"):       # each split keeps at least one item: take the train item of lowest hash
        if not parts[s]:
            donor = max(("train", "dev", "test"), key=lambda d: len(parts[d]))
            x = min(parts[donor], key=lambda y: _h(_item_key(y)))
            parts[donor].remove(x)
            parts[s].append(x)
    # keep the list's weights (repeated items, e.g. several empty greetings) inside each split
    return {s: [x for x in items if (x == "" and shared) or x in parts[s]] for s in SPLITS}


class SplitRandom(random.Random):
    """random.Random whose content draws stay inside one split: choice/sample over lists of phrasings and
    entities take only the split's part of the list, randint over a range of >= MIN_INT_RANGE values only
    integers of the split, uniform only values whose cents are such integers. randrange/random/choices
    (structure: which sub-kind, how many operators) are not partitioned."""

    def __init__(self, seed, split: str = "train"):
        super().__init__(seed)
        self.split = split
        self.shared_lists: Counter = Counter()

    def _part(self, seq):
        if not seq or len(seq) > 5000:
            return seq
        try:
            items = tuple(seq)
            if isinstance(items[0], (int, float)) and not isinstance(items[0], bool) and len(set(items)) < 10:
                return seq            # a few numeric options (operator counts, weights): structure, shared
            if all(isinstance(x, str) and 0 < len(x) <= 2 for x in items):
                return seq            # operators, single symbols: structure
            part = partition(items)
        except TypeError:             # unhashable items
            return seq
        if part["train"] == part["test"]:   # too short to partition: shared, counted in the stats
            self.shared_lists[_item_key(items[0])[:60]] += 1
        return part[self.split]

    def choice(self, seq):
        return super().choice(self._part(seq))

    def sample(self, population, k, **kw):
        pop = list(population)
        if pop and not isinstance(pop[0], (int, float)):   # a few numbers to pick (bounds): structure, shared
            pop = self._part(pop)
        return super().sample(pop, min(k, len(pop)), **kw)

    def randint(self, a, b):
        if b - a + 1 < MIN_INT_RANGE:
            return super().randint(a, b)
        for _ in range(1000):
            n = super().randint(a, b)
            if int_split(n) == self.split:
                return n
        return n

    def uniform(self, a, b):
        return self.randint(int(math.ceil(a * 100)), int(b * 100)) / 100



# ---------------------------------------------------------------------------------------------------
# phrasing: greetings, politeness, lead-ins. Variety here is what lets the model generalise.
# ---------------------------------------------------------------------------------------------------
GREET = {
    "fr": ["", "", "", "", "Bonjour, ", "Salut ! ", "Coucou, ", "Bonsoir. ", "Hello ! ", "Bonjour ! ", "Dis-moi, ",
           "J'ai une question : ", "Petite question : ", "Hey, ", "Alors, "],
    "en": ["", "", "", "", "Hi, ", "Hello! ", "Hey, ", "Good morning. ", "Quick question: ", "Hi there! ",
           "I have a question: ", "Hey there, ", "So, ", "Excuse me, "],
}
PLEASE = {   # inside the sentence, before its final punctuation
    "fr": ["", "", "", "", "", " s'il te plaît", " stp", " svp", " s'il vous plaît", ", s'il te plaît"],
    "en": ["", "", "", "", "", " please", ", please", ", please", " please"],
}
THANKS = {   # a separate closing sentence
    "fr": ["", "", "", "", "", " Merci !", " Merci d'avance.", " Merci beaucoup.", " Merci 🙂"],
    "en": ["", "", "", "", "", " Thanks!", " Thank you.", " Thanks in advance.", " Cheers!"],
}
LEADS = {
    "fr": ["", "", "Je calcule ça en Python.", "Voici le code :", "Je vais utiliser Python.", "Calculons-le.",
           "Je lance un petit script.", "Je vérifie avec Python.", "Un peu de code pour être exact :",
           "Je fais le calcul.", "Voyons ce que donne le code."],
    "en": ["", "", "Let me compute that in Python.", "Here is the code:", "I'll use Python for this.",
           "Let's calculate it.", "Running a quick script.", "Let me check with Python.", "A bit of code to be exact:",
           "I'll do the computation.", "Let's see what the code gives."],
}
WEB_LEADS = {
    "fr": ["Voici le code :", "Voici une proposition :", "Voilà :", "Bien sûr, voici le code.", "Avec plaisir :", ""],
    "en": ["Here is the code:", "Here's one way to do it:", "Sure, here it is:", "Of course:", "Here you go:", ""],
}


def _wrap(rng: random.Random, lang: str, core: str) -> str:
    """Greeting + question + politeness + thanks, with some casual spellings (lower case, no final punctuation)."""
    core = core.strip()
    please = rng.choice(PLEASE[lang])
    if please:
        m = re.search(r"\s*([?.!:]+)$", core)
        core = core[: m.start()] + please + (m.group(0) if m else "") if m else core + please
    greet = rng.choice(GREET[lang])
    # after "Bonjour, " or "Question : " the sentence goes on in lower case (not for acronyms: "PGCD")
    if greet.rstrip().endswith((",", ":")) and len(core) > 1 and core[1].islower():
        core = core[0].lower() + core[1:]
    text = greet + core + rng.choice(THANKS[lang])
    r = rng.random()
    if r < 0.1:
        text = text.lower()
    elif r < 0.18:
        text = text.rstrip(" ?.!🙂")
    return text


def _fr_num(x) -> str:
    """A number as a French user would type it (decimal comma)."""
    return str(x).replace(".", ",")


def _num(lang: str, x) -> str:
    return _fr_num(x) if lang == "fr" else str(x)


def _poly(rng: random.Random, max_deg: int = 4) -> str:
    for _ in range(200):
        s = _poly_any(rng, max_deg)
        if str_split(s) == getattr(rng, "split", "train"):
            return s
    return s


def _poly_any(rng: random.Random, max_deg: int = 4) -> str:
    """A random polynomial in x as Python source, e.g. '3*x**2 - 5*x + 2'."""
    deg = rng.randint(1, max_deg)
    terms = []
    for d in range(deg, -1, -1):
        c = rng.randint(-9, 9) if d < deg else rng.choice([1, 2, 3, 4, 5, -1, -2, 6, 7])
        if c == 0:
            continue
        mono = "" if d == 0 else ("x" if d == 1 else f"x**{d}")
        coef = str(abs(c)) if (abs(c) != 1 or d == 0) else ""
        body = f"{coef}*{mono}" if coef and mono else (coef or mono)
        terms.append(("-" if c < 0 else "+", body))
    s = ("-" if terms[0][0] == "-" else "") + terms[0][1]
    for sign, body in terms[1:]:
        s += f" {sign} {body}"
    return s


def _func(rng: random.Random) -> str:
    for _ in range(200):
        s = _func_any(rng)
        if str_split(s) == getattr(rng, "split", "train"):
            return s
    return s


def _func_any(rng: random.Random) -> str:
    """A function of x for calculus: polynomial, trig, exp, log, products."""
    a, b = rng.randint(1, 9), rng.randint(2, 6)
    return rng.choice([
        _poly(rng), _poly(rng, 3), f"sin({a}*x)", f"cos({a}*x)", f"exp({a}*x)", f"x**{b}*exp(x)", f"x*sin(x)",
        f"log(x**2 + {a})", f"{a}*x**{b} + sin(x)", f"exp(-x)*cos({a}*x)", f"sqrt(x + {a})", f"x**{b}/{a}",
        f"tan(x) + {a}*x", f"(x + {a})**{b}", f"x*log(x)", f"{a}/(x + {b})",
    ])


# ---------------------------------------------------------------------------------------------------
# independent references: computed here, in plain Python (never by running the sample's code), and
# compared with the sandbox's stdout; a sample is kept only when both agree
# ---------------------------------------------------------------------------------------------------
def _rnum(v, tol=None) -> dict:
    r = {"type": "number", "value": v}
    if tol is not None:
        r["tol"] = tol
    return r


def _plain(v):
    """Tuples -> lists, recursively (JSON-like values)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _rlist(v, ordered: bool = True) -> dict:
    return {"type": "list", "value": _plain(v), "ordered": ordered}


def _rstr(v: str) -> dict:
    return {"type": "string", "value": v}


_BINOPS = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mult": lambda a, b: a * b, "Div": lambda a, b: a / b,
           "FloorDiv": lambda a, b: a // b, "Mod": lambda a, b: a % b, "Pow": lambda a, b: a ** b}


def _eval_shown(text: str) -> Fraction:
    """The expression as the user sees it ("17 × 23", "2^5") evaluated exactly with Fractions."""
    import ast

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow):
                return Fraction(a.numerator ** int(b))
            return Fraction(_BINOPS[type(node.op).__name__](a, b))
        raise ValueError(f"unexpected expression {text!r}")

    return ev(ast.parse(text.replace("×", "*").replace("^", "**"), mode="eval"))


def _mean(d):
    return sum(d) / len(d)


def _median(d):
    s, n = sorted(d), len(d)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _stdev(d):
    m = _mean(d)
    return (sum((x - m) ** 2 for x in d) / (len(d) - 1)) ** 0.5


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def _fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _factorial(n):
    r = 1
    for i in range(2, n + 1):
        r *= i
    return r


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def _insertion_sort(data, desc=False):
    out = []
    for x in data:
        i = len(out)
        while i > 0 and ((out[i - 1] < x) if desc else (out[i - 1] > x)):
            i -= 1
        out.insert(i, x)
    return out


def _binary(n: int) -> str:
    s = ""
    while n:
        s, n = str(n % 2) + s, n // 2
    return s or "0"


def _digit_sum(n: int) -> int:
    t = 0
    while n:
        t, n = t + n % 10, n // 10
    return t


def _argmax(d: dict):
    best = None
    for k, v in d.items():
        if best is None or v > d[best]:
            best = k
    return best


def _invert(d: dict) -> list:
    """{v: k} as a dict comprehension builds it (a later key wins, first position kept), as pairs."""
    order, val = [], {}
    for k, v in d.items():
        if v not in val:
            order.append(v)
        val[v] = k
    return [[v, val[v]] for v in order]


def _top_letters(text: str, k: int) -> list:
    counts: dict = {}
    for c in text:
        if c.isalpha():
            counts[c] = counts.get(c, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])   # stable: ties keep first appearance
    return [[c, n] for c, n in ranked[:k]]


def _sym_ref(op: str, f: str) -> str:
    import sympy as sp

    x = sp.symbols("x")
    e = sp.sympify(f, locals={"x": x})
    return str(sp.diff(e, x) if op == "diff" else sp.integrate(e, x))


def _poly_integral(f: str, lo: int, hi: int) -> Fraction:
    """Definite integral of a polynomial string ('3*x**2 - 5*x + 2'), term by term with Fractions."""
    total = Fraction(0)
    for t in (t for t in f.replace(" ", "").replace("-", "+-").split("+") if t):
        neg, t = t.startswith("-"), t.lstrip("-")
        if "x" not in t:
            c, d = int(t), 0
        else:
            head, _, tail = t.rpartition("x")
            c = int(head.rstrip("*")) if head else 1
            d = int(tail[2:]) if tail else 1
        total += (-c if neg else c) * (Fraction(hi) ** (d + 1) - Fraction(lo) ** (d + 1)) / (d + 1)
    return total


def _parse_number(text: str) -> float:
    t = text.strip()
    if "/" in t:
        return float(Fraction(t))
    return float(t)


def _num_eq(a, b, tol) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= (tol if tol is not None else 1e-9 * max(1.0, abs(b)))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_num_eq(x, y, tol) for x, y in zip(a, b))
    return a == b


def _literal(text: str):
    import ast

    v = ast.literal_eval(text.strip())
    if isinstance(v, dict):
        v = [[k, x] for k, x in v.items()]
    return _plain(v)


def _value_agrees(ref: dict, text: str) -> bool:
    kind, value = ref["type"], ref["value"]
    tol = ref.get("tol")
    if kind == "number":
        return _num_eq(_parse_number(text), value, tol)
    if kind == "string":
        return text.strip() == value
    if kind == "bool":
        return text.strip() == str(bool(value))
    if kind == "list":
        got = _literal(text)
        if not ref.get("ordered", True):
            return sorted(map(repr, got)) == sorted(map(repr, value))
        return _num_eq(got, value, 1e-6)
    if kind == "symbolic":
        import sympy as sp

        x = sp.symbols("x")
        got, want = sp.sympify(text.strip(), locals={"x": x}), sp.sympify(value, locals={"x": x})
        return str(got) == str(want) or sp.simplify(got - want) == 0
    if kind == "set_of_numbers":
        import sympy as sp

        got = sorted(float(sp.N(v)) for v in sp.sympify(text.strip()))
        return len(got) == len(value) and all(abs(a - b) <= 1e-6 for a, b in zip(got, sorted(value)))
    raise ValueError(f"unknown reference type {kind!r}")


def agrees(ref: dict, stdout: str, lines: bool = False) -> bool:
    """Does the sandbox's stdout state the reference? `lines`: a list reference, one item per printed line."""
    try:
        if lines:
            got = [line for line in stdout.strip().splitlines()]
            if len(got) != len(ref["value"]):
                return False
            return all(_value_agrees(_line_ref(v, ref.get("tol")), t) for v, t in zip(ref["value"], got))
        return _value_agrees(ref, stdout)
    except Exception:   # unparsable output: no agreement
        return False


def _line_ref(v, tol=None) -> dict:
    if isinstance(v, bool):
        return {"type": "bool", "value": v}
    if isinstance(v, (int, float)):
        return _rnum(v, tol if tol is not None else (6e-3 if isinstance(v, float) else None))
    if isinstance(v, str):
        return _rstr(v)
    return _rlist(v)



# ---------------------------------------------------------------------------------------------------
# generators: each returns (params, code, questions[lang], answers[lang]) for one sub-kind
# ---------------------------------------------------------------------------------------------------
Gen = Callable[[random.Random, str], tuple[dict, str, list[str], list[str]]]


def g_arith(rng, lang):
    ops = ["+", "-", "*", "/", "//", "%", "**"]
    n = rng.choice([1, 1, 1, 2, 2, 3])   # "15 * 23" is the most common question: one operator half the time

    def operand() -> int:                 # small operands as often as 3-digit ones
        return rng.randint(1, 99) if rng.random() < 0.5 else rng.randint(1, 999)

    expr = str(operand())
    for _ in range(n):
        op = rng.choice(ops[:4] if rng.random() < 0.8 or "**" in expr else ops)
        y = rng.randint(2, 12) if op == "**" else operand()
        if op == "**" and rng.random() < 0.7:
            expr = f"{rng.randint(2, 20)}"
        expr = f"{expr} {op} {y}" if rng.random() < 0.7 or op == "**" else f"({expr}) {op} {y}"
    shown = expr.replace("**", "^") if rng.random() < 0.3 else expr
    shown_fr = shown.replace("*", "×") if rng.random() < 0.3 and "**" not in shown else shown
    p = {"e": shown_fr if lang == "fr" else shown}
    v = _eval_shown(p["e"])
    p["_ref"] = _rnum(round(float(v), 4), 1e-4) if isinstance(v, Fraction) and v.denominator != 1 else _rnum(int(v))
    q = {"fr": ["Combien font {e} ?", "Calcule {e}.", "Peux-tu calculer {e} ?", "Quel est le résultat de {e} ?",
                "{e} = ?", "Ça fait combien {e} ?", "J'ai besoin du résultat de {e}.", "Donne-moi la valeur de {e}."],
         "en": ["What is {e}?", "Calculate {e}.", "Can you compute {e}?", "What's the result of {e}?", "{e} = ?",
                "How much is {e}?", "I need the value of {e}.", "Evaluate {e}."]}
    a = {"fr": ["{e} = {out}.", "Le résultat est {out}.", "Ça fait {out}.", "Résultat : {out}."],
         "en": ["{e} = {out}.", "The result is {out}.", "It's {out}.", "Result: {out}."]}
    # a true division prints a float: round it as a person would read it (and as the answer restates it)
    code = f"print(round({expr}, 4))" if re.search(r"(?<!/)/(?!/)", expr) else f"print({expr})"
    return p, code, q[lang], a[lang]


def g_percent(rng, lang):
    pct = rng.choice([5, 10, 12, 15, 17.5, 20, 25, 30, 33, 40, 50, 60, 75, 80, 90, 110, 150])
    x = rng.choice([rng.randint(10, 2000), round(rng.uniform(5, 500), 2)])
    p = {"p": _num(lang, pct), "x": _num(lang, x)}
    q = {"fr": ["Combien font {p} % de {x} ?", "Calcule {p}% de {x}.", "Quel est {p} pour cent de {x} ?",
                "Je veux {p} % de {x}.", "{p} % de {x}, ça fait combien ?"],
         "en": ["What is {p}% of {x}?", "Calculate {p} percent of {x}.", "How much is {p}% of {x}?",
                "Find {p}% of {x}.", "{p}% of {x} is how much?"]}
    a = {"fr": ["{p} % de {x} font {out}.", "Le résultat est {out}.", "Ça donne {out}."],
         "en": ["{p}% of {x} is {out}.", "The result is {out}.", "That gives {out}."]}
    p["_ref"] = _rnum(float(Fraction(str(x)) * Fraction(str(pct)) / 100), 0.006)
    return p, f"print(round({x} * {pct} / 100, 2))", q[lang], a[lang]


def g_discount(rng, lang):
    price = rng.choice([rng.randint(10, 900), round(rng.uniform(5, 300), 2)])
    pct = rng.choice([10, 15, 20, 25, 30, 40, 50, 70])
    p = {"price": _num(lang, price), "p": pct}
    q = {"fr": ["Un article coûte {price} € et il est soldé à -{p} %. Quel est le nouveau prix ?",
                "Prix de départ {price} euros, remise de {p} %. Combien je paie ?",
                "Si je paie {price} € avec une réduction de {p} %, ça fait combien ?"],
         "en": ["An item costs ${price} and is {p}% off. What is the new price?",
                "Original price {price} dollars, {p}% discount. How much do I pay?",
                "What do I pay for a {price} item with a {p}% discount?"]}
    a = {"fr": ["Le nouveau prix est de {out} €.", "Vous payez {out} €.", "Après la remise : {out} €."],
         "en": ["The new price is {out}.", "You pay {out}.", "After the discount: {out}."]}
    p["_ref"] = _rnum(float(Fraction(str(price)) * (1 - Fraction(pct, 100))), 0.006)
    return p, f"price = {price}\ndiscount = {pct}\nprint(round(price * (1 - discount / 100), 2))", q[lang], a[lang]


def g_sqrt_pow(rng, lang):
    if rng.random() < 0.5:
        n = rng.choice([rng.randint(2, 400) ** 2, rng.randint(2, 5000)])
        p = {"n": n}
        q = {"fr": ["Quelle est la racine carrée de {n} ?", "Calcule la racine de {n}.", "Racine carrée de {n} ?",
                    "Donne-moi √{n}."],
             "en": ["What is the square root of {n}?", "Compute the square root of {n}.", "sqrt of {n}?", "Give me √{n}."]}
        a = {"fr": ["La racine carrée de {n} est {out}.", "√{n} = {out}."],
             "en": ["The square root of {n} is {out}.", "√{n} = {out}."]}
        r = math.isqrt(n)
        p["_ref"] = _rnum(r) if r * r == n else _rnum(n ** 0.5, 1e-4)
        return p, f"import math\nprint(round(math.sqrt({n}), 4))", q[lang], a[lang]
    b = rng.randint(2, 30)
    e = rng.randint(2, max(2, int(15 / math.log10(b))))   # at most ~15 digits: a number a reader can use
    p = {"b": b, "e": e}
    q = {"fr": ["Combien vaut {b} puissance {e} ?", "Calcule {b}^{e}.", "{b} à la puissance {e}, ça fait combien ?",
                "Quelle est la valeur de {b} exposant {e} ?"],
         "en": ["What is {b} to the power of {e}?", "Calculate {b}^{e}.", "How much is {b} raised to {e}?",
                "Compute {b} ** {e}."]}
    a = {"fr": ["{b}^{e} = {out}.", "{b} puissance {e} vaut {out}."], "en": ["{b}^{e} = {out}.", "{b} to the power {e} is {out}."]}
    p["_ref"] = _rnum(pow(b, e))
    return p, f"print({b} ** {e})", q[lang], a[lang]


def g_linear(rng, lang):
    a_, b_, c_ = rng.choice([i for i in range(-12, 13) if i]), rng.randint(-50, 50), rng.randint(-50, 50)
    eq = f"{a_}x {'+' if b_ >= 0 else '-'} {abs(b_)} = {c_}"
    p = {"eq": eq}
    q = {"fr": ["Résous {eq}.", "Trouve x tel que {eq}.", "Résoudre l'équation {eq}", "Quelle est la solution de {eq} ?",
                "Aide-moi à résoudre {eq}."],
         "en": ["Solve {eq}.", "Find x such that {eq}.", "Solve the equation {eq}", "What is the solution of {eq}?",
                "Help me solve {eq}."]}
    a = {"fr": ["La solution est x = {out}.", "x = {out}.", "On trouve x = {out}."],
         "en": ["The solution is x = {out}.", "x = {out}.", "We get x = {out}."]}
    p["_ref"] = _rnum(float(Fraction(c_ - b_, a_)), 1e-9)
    code = f"import sympy as sp\nx = sp.symbols('x')\nprint(sp.solve(sp.Eq({a_}*x + {b_}, {c_}), x)[0])"
    return p, code, q[lang], a[lang]


def g_quadratic(rng, lang):
    r1, r2 = rng.randint(-9, 9), rng.randint(-9, 9)
    k = rng.choice([1, 1, 1, 2, -1, 3])
    b_, c_ = -k * (r1 + r2), k * r1 * r2
    if rng.random() < 0.3 and b_ * b_ - 4 * k * (c_ + 5) >= 0:
        c_ += rng.randint(1, 5)   # not always integer roots (but real ones)
    disc = b_ * b_ - 4 * k * c_
    roots = sorted({(-b_ - disc ** 0.5) / (2 * k), (-b_ + disc ** 0.5) / (2 * k)})
    lead = "" if k == 1 else "-" if k == -1 else str(k)
    poly = f"{lead}x² {'+' if b_ >= 0 else '-'} {abs(b_)}x {'+' if c_ >= 0 else '-'} {abs(c_)}"
    p = {"eq": f"{poly} = 0"}
    q = {"fr": ["Résous {eq}.", "Quelles sont les solutions de {eq} ?", "Trouve les racines de {eq}.",
                "Résoudre l'équation du second degré {eq}"],
         "en": ["Solve {eq}.", "What are the solutions of {eq}?", "Find the roots of {eq}.", "Solve the quadratic {eq}"]}
    a = {"fr": ["Les solutions sont : {out}.", "Solutions : {out}."], "en": ["The solutions are: {out}.", "Solutions: {out}."]}
    p["_ref"] = {"type": "set_of_numbers", "value": [round(r, 9) for r in roots]}
    code = f"import sympy as sp\nx = sp.symbols('x')\nprint(sp.solve({k}*x**2 + {b_}*x + {c_}, x))"
    return p, code, q[lang], a[lang]


def g_derivative(rng, lang):
    f = _func(rng)
    p = {"f": f}
    q = {"fr": ["Quelle est la dérivée de {f} ?", "Dérive {f}.", "Calcule la dérivée de f(x) = {f}.",
                "Donne-moi f'(x) pour f(x) = {f}.", "Dériver {f} par rapport à x"],
         "en": ["What is the derivative of {f}?", "Differentiate {f}.", "Compute the derivative of f(x) = {f}.",
                "Give me f'(x) for f(x) = {f}.", "Find d/dx of {f}"]}
    a = {"fr": ["La dérivée de {f} est {out}.", "f'(x) = {out}."], "en": ["The derivative of {f} is {out}.", "f'(x) = {out}."]}
    p["_ref"] = {"type": "symbolic", "value": _sym_ref("diff", f)}
    code = f"import sympy as sp\nx = sp.symbols('x')\nprint(sp.diff({_sympy(f)}, x))"
    return p, code, q[lang], a[lang]


def _sympy(expr: str) -> str:
    return re.sub(r"\b(sin|cos|tan|exp|log|sqrt)\(", r"sp.\1(", expr)


def g_integral(rng, lang):
    f = _func(rng) if rng.random() < 0.5 else _poly(rng, 3)
    if rng.random() < 0.5:
        p = {"f": f}
        q = {"fr": ["Calcule la primitive de {f}.", "Intègre {f}.", "Quelle est l'intégrale de {f} ?",
                    "Trouve une primitive de f(x) = {f}."],
             "en": ["Find the antiderivative of {f}.", "Integrate {f}.", "What is the integral of {f}?",
                    "Compute the indefinite integral of f(x) = {f}."]}
        a = {"fr": ["Une primitive de {f} est {out}.", "∫ {f} dx = {out} + C."],
             "en": ["An antiderivative of {f} is {out}.", "∫ {f} dx = {out} + C."]}
        p["_ref"] = {"type": "symbolic", "value": _sym_ref("integrate", f)}
        code = f"import sympy as sp\nx = sp.symbols('x')\nprint(sp.integrate({_sympy(f)}, x))"
        return p, code, q[lang], a[lang]
    f = _poly(rng, 3)
    lo, hi = sorted(rng.sample(range(-3, 8), 2))
    p = {"f": f, "a": lo, "b": hi}
    q = {"fr": ["Calcule l'intégrale de {f} entre {a} et {b}.", "Intègre {f} de {a} à {b}.",
                "Que vaut l'intégrale de {a} à {b} de {f} ?"],
         "en": ["Compute the integral of {f} from {a} to {b}.", "Integrate {f} between {a} and {b}.",
                "What is the definite integral of {f} from {a} to {b}?"]}
    a = {"fr": ["L'intégrale vaut {out}.", "Résultat : {out}."], "en": ["The integral equals {out}.", "Result: {out}."]}
    p["_ref"] = _rnum(float(_poly_integral(f, lo, hi)), 1e-9)
    code = f"import sympy as sp\nx = sp.symbols('x')\nprint(sp.integrate({f}, (x, {lo}, {hi})))"
    return p, code, q[lang], a[lang]


def _rand_list(rng, n_lo=4, n_hi=10, lo=-20, hi=100):
    return [rng.randint(lo, hi) for _ in range(rng.randint(n_lo, n_hi))]


def g_stats(rng, lang):
    data = _rand_list(rng, 5, 12, 0, 100)
    stat = rng.choice(["mean", "median", "stdev", "all"])
    p = {"d": ", ".join(map(str, data))}
    names = {"fr": {"mean": "la moyenne", "median": "la médiane", "stdev": "l'écart-type"},
             "en": {"mean": "the mean", "median": "the median", "stdev": "the standard deviation"}}
    if stat == "all":
        q = {"fr": ["Donne la moyenne, la médiane et l'écart-type de {d}.", "Statistiques de la série {d} ?",
                    "Calcule moyenne, médiane et écart-type pour : {d}."],
             "en": ["Give me the mean, median and standard deviation of {d}.", "Statistics of the series {d}?",
                    "Compute mean, median and stdev for: {d}."]}
        a = {"fr": ["Moyenne : {l[0]}, médiane : {l[1]}, écart-type : {l[2]}."],
             "en": ["Mean: {l[0]}, median: {l[1]}, standard deviation: {l[2]}."]}
        p["_ref"], p["_lines"] = _rlist([round(_mean(data), 2), _median(data), round(_stdev(data), 3)]), True
        code = (f"import statistics\ndata = [{p['d']}]\nprint(round(statistics.mean(data), 2))\nprint(statistics.median(data))\n"
                f"print(round(statistics.stdev(data), 3))")
        return p, code, q[lang], a[lang]
    p["s"] = names[lang][stat]
    q = {"fr": ["Quelle est {s} de {d} ?", "Calcule {s} de ces nombres : {d}.", "J'ai les notes {d}, quelle est {s} ?",
                "Donne-moi {s} de la liste [{d}]."],
         "en": ["What is {s} of {d}?", "Compute {s} of these numbers: {d}.", "My scores are {d}, what is {s}?",
                "Give me {s} of the list [{d}]."]}
    a = {"fr": ["{S} est {out}.", "On obtient {out}."], "en": ["{S} is {out}.", "We get {out}."]}
    p["S"] = p["s"][0].upper() + p["s"][1:]
    expr = {"stdev": "round(statistics.stdev(data), 3)", "mean": "round(statistics.mean(data), 2)"}.get(
        stat, f"statistics.{stat}(data)")
    p["_ref"] = _rnum({"mean": _mean(data), "median": _median(data), "stdev": _stdev(data)}[stat],
                      {"mean": 0.006, "median": 1e-9, "stdev": 6e-4}[stat])
    return p, f"import statistics\ndata = [{p['d']}]\nprint({expr})", q[lang], a[lang]


FR_NAMES = ["Marie", "Lucas", "Emma", "Hugo", "Léa", "Nathan", "Chloé", "Louis", "Inès", "Jules", "Camille", "Yanis",
            "Manon", "Théo", "Zoé", "Gabriel", "Jade", "Raphaël", "Sarah", "Adam", "Lina", "Arthur", "Louise", "Paul",
            "Alice", "Mathis", "Clara", "Noé", "Julie", "Sacha", "Anaïs", "Karim", "Amira", "Bastien", "Élodie", "Mehdi"]
EN_NAMES = ["Alice", "Bob", "Emma", "Liam", "Olivia", "Noah", "Ava", "Ethan", "Mia", "Jack", "Sophia", "Leo",
            "Grace", "Henry", "Chloe", "Oscar", "Lily", "Samuel", "Ella", "James", "Ruby", "Daniel", "Zoe", "Max",
            "Isla", "Lucas", "Hannah", "Ryan", "Amelia", "Owen", "Nora", "Dylan", "Maya", "Caleb", "Ivy", "Adrian"]


def g_word_problem(rng, lang):
    name = rng.choice(FR_NAMES if lang == "fr" else EN_NAMES)
    kind = rng.randrange(5)
    if kind == 0:
        n1, p1, n2, p2 = rng.randint(2, 9), round(rng.uniform(0.5, 9), 2), rng.randint(1, 6), round(rng.uniform(1, 20), 2)
        p = {"name": name, "n1": n1, "p1": _num(lang, p1), "n2": n2, "p2": _num(lang, p2)}
        q = {"fr": ["{name} achète {n1} cahiers à {p1} € et {n2} livres à {p2} €. Combien paie-t-il en tout ?",
                    "J'ai acheté {n1} stylos à {p1} euros pièce et {n2} classeurs à {p2} euros. Total ?"],
             "en": ["{name} buys {n1} notebooks at ${p1} and {n2} books at ${p2}. How much in total?",
                    "I bought {n1} pens at {p1} each and {n2} binders at {p2} each. What's the total?"]}
        a = {"fr": ["Le total est de {out} €.", "Cela fait {out} euros en tout."], "en": ["The total is {out}.", "That's {out} in total."]}
        p["_ref"] = _rnum(n1 * p1 + n2 * p2, 0.006)
        return p, f"total = {n1} * {p1} + {n2} * {p2}\nprint(round(total, 2))", q[lang], a[lang]
    if kind == 1:
        d, t = rng.randint(20, 900), rng.choice([0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6])
        p = {"name": name, "d": d, "t": _num(lang, t)}
        q = {"fr": ["{name} parcourt {d} km en {t} heures. Quelle est sa vitesse moyenne ?",
                    "Un train fait {d} km en {t} h. Vitesse moyenne en km/h ?"],
             "en": ["{name} drives {d} km in {t} hours. What is the average speed?",
                    "A train covers {d} km in {t} h. Average speed in km/h?"]}
        a = {"fr": ["La vitesse moyenne est de {out} km/h.", "Environ {out} km/h."], "en": ["The average speed is {out} km/h.", "About {out} km/h."]}
        p["_ref"] = _rnum(d / t, 0.006)
        return p, f"distance = {d}\ntime = {t}\nprint(round(distance / time, 2))", q[lang], a[lang]
    if kind == 2:
        L, W = rng.randint(2, 80), rng.randint(2, 60)
        p = {"L": L, "W": W}
        q = {"fr": ["Quelle est l'aire d'un rectangle de {L} m sur {W} m ?", "Un jardin mesure {L} m par {W} m. Quelle surface ?",
                    "Calcule la surface d'une pièce de {L} × {W} mètres."],
             "en": ["What is the area of a {L} m by {W} m rectangle?", "A garden is {L} m by {W} m. What is its area?",
                    "Compute the area of a {L} x {W} meter room."]}
        a = {"fr": ["L'aire est de {out} m².", "La surface vaut {out} m²."], "en": ["The area is {out} m².", "It covers {out} m²."]}
        p["_ref"] = _rnum(L * W)
        return p, f"length = {L}\nwidth = {W}\nprint(length * width)", q[lang], a[lang]
    if kind == 3:
        r = rng.randint(1, 50)
        p = {"r": r}
        q = {"fr": ["Quelle est l'aire d'un cercle de rayon {r} cm ?", "Surface d'un disque de rayon {r} ?"],
             "en": ["What is the area of a circle with radius {r} cm?", "Area of a disk of radius {r}?"]}
        a = {"fr": ["L'aire est d'environ {out} cm².", "Elle vaut environ {out}."], "en": ["The area is about {out} cm².", "It is about {out}."]}
        p["_ref"] = _rnum(3.141592653589793 * r * r, 0.006)
        return p, f"import math\nr = {r}\nprint(round(math.pi * r ** 2, 2))", q[lang], a[lang]
    c, rate, years = rng.choice([500, 1000, 1500, 2000, 5000, 10000]), rng.choice([1, 1.5, 2, 2.5, 3, 4, 5]), rng.randint(2, 20)
    p = {"c": c, "r": _num(lang, rate), "y": years}
    q = {"fr": ["J'ai placé {c} € à {r} % par an pendant {y} ans (intérêts composés). Combien j'aurai ?",
                "Capital de {c} euros, taux de {r} %, {y} ans. Valeur finale ?"],
         "en": ["I invest ${c} at {r}% per year for {y} years, compounded. How much will I have?",
                "Capital {c}, rate {r}%, {y} years of compound interest. Final value?"]}
    a = {"fr": ["Vous aurez {out} €.", "La valeur finale est {out} €."], "en": ["You will have {out}.", "The final value is {out}."]}
    p["_ref"] = _rnum(c * (1 + rate / 100) ** years, 0.006)
    return p, f"capital = {c}\nrate = {rate}\nyears = {years}\nprint(round(capital * (1 + rate / 100) ** years, 2))", q[lang], a[lang]


def g_gcd(rng, lang):
    a_, b_ = rng.randint(2, 500), rng.randint(2, 500)
    op = rng.choice(["gcd", "lcm"])
    p = {"a": a_, "b": b_}
    q = {"gcd": {"fr": ["Quel est le PGCD de {a} et {b} ?", "Calcule le plus grand diviseur commun de {a} et {b}."],
                 "en": ["What is the GCD of {a} and {b}?", "Compute the greatest common divisor of {a} and {b}."]},
         "lcm": {"fr": ["Quel est le PPCM de {a} et {b} ?", "Calcule le plus petit multiple commun de {a} et {b}."],
                 "en": ["What is the LCM of {a} and {b}?", "Compute the least common multiple of {a} and {b}."]}}[op]
    a = {"fr": [f"Le {'PGCD' if op == 'gcd' else 'PPCM'} de {{a}} et {{b}} est {{out}}."],
         "en": [f"The {'GCD' if op == 'gcd' else 'LCM'} of {{a}} and {{b}} is {{out}}."]}
    g = _gcd(a_, b_)
    p["_ref"] = _rnum(g if op == "gcd" else a_ * b_ // g)
    return p, f"import math\nprint(math.{op}({a_}, {b_}))", q[lang], a[lang]


# --- composed phrasings (hessgpt.data.routing_phrasing): framing + core + operands as words or digits ---------
# These generators draw their own question (framing, core, story frame: each list partitioned on its own) and
# return it as a one-item list: python_candidate takes it as it is.

def _says(rng, lang: str, n: int) -> str:
    """An operand as a user types it: digits, or words for a small one now and then ("dix-sept", "twenty-three")."""
    return P.spell(lang, n) if 0 <= n <= 99 and rng.random() < 0.25 else str(n)


def _exact(v: Fraction, nd: int = 4) -> dict:
    return _rnum(int(v)) if v.denominator == 1 else _rnum(round(float(v), nd), 10 ** -nd)


def _print_exact(expr: str, nd: int = 4) -> str:
    """Code that prints an exact quotient as an integer, else rounded."""
    return f"value = {expr}\nprint(int(value) if value == int(value) else round(value, {nd}))"


def _digits_in(answers: list[str], **names) -> list[str]:
    """Answers restate the operands in digits: {a} -> {a_d}."""
    out = []
    for a in answers:
        for k in names:
            a = a.replace("{" + k + "}", "{" + k + "_d}")
        out.append(a)
    return out


def g_arith_words(rng, lang):
    op = rng.choice(["*", "+", "-", "/"])
    if op == "/":
        b = rng.randint(2, 25)
        a = b * rng.randint(2, 60) if rng.random() < 0.8 else rng.randint(20, 999)
    elif op == "*":
        a, b = rng.randint(2, 99) if rng.random() < 0.7 else rng.randint(100, 999), rng.randint(2, 99)
    else:
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        if op == "-" and a < b and rng.random() < 0.7:
            a, b = b, a
    if rng.random() < 0.3:
        template = rng.choice(P.FRAMES_NOUN[lang]).replace("{x}", rng.choice(P.NOUN_CORES[op][lang]))
    else:
        template = rng.choice(P.FRAMES_EXPR[lang]).replace("{x}", rng.choice(P.CORES[op][lang]))
    sym = {"*": "×", "+": "+", "-": "-", "/": "/"}[op]
    p = {"a": _says(rng, lang, a), "b": _says(rng, lang, b), "e": f"{a} {sym} {b}"}
    v = _eval_shown(f"{a} {op} {b}")
    p["_ref"] = _exact(v)
    if op == "/":
        code = _print_exact(f"{a} / {b}")
    elif rng.random() < 0.3:
        code = f"a = {a}\nb = {b}\nprint(a {op} b)"
    else:
        code = f"print({a} {op} {b})"
    return p, code, [template], P.ARITH_ANSWERS[lang]


def g_convert(rng, lang):
    fu, fv, eu, ev, f, div = rng.choice(P.UNITS)
    u, v = (fu, fv) if lang == "fr" else (eu, ev)
    if div:
        n = f * rng.randint(2, 60) if rng.random() < 0.7 else rng.randint(2, 999)
    else:
        n = rng.randint(2, 99) if rng.random() < 0.7 else rng.randint(100, 500)
    p = {"n": _says(rng, lang, n), "n_d": n, "u": u, "v": v}
    value = Fraction(n, f) if div else Fraction(n * f)
    p["_ref"] = _exact(value, 3)
    if div:
        code = _print_exact(f"{n} / {f}", 3)
    else:
        code = rng.choice([f"print({n} * {f})", f"{_var(u)} = {n}\nprint({_var(u)} * {f})"])
    return p, code, [rng.choice(P.CONVERT_Q[lang])], _digits_in(P.CONVERT_A[lang], n=1)


def _var(unit: str) -> str:
    """A Python name for a quantity in this unit ('semaines' -> 'semaines', 'kilomètres' -> 'kilometres')."""
    return re.sub(r"[^a-z]", "_", unit.lower().replace("è", "e").replace("é", "e").replace("é", "e"))


def g_tip(rng, lang):
    bill = rng.choice([rng.randint(10, 300), round(rng.uniform(8, 250), 2)])
    pct = rng.choice([5, 10, 12, 15, 18, 20])
    p = {"b": _num(lang, bill), "p": pct}
    p["_ref"] = _rnum(float(Fraction(str(bill)) * pct / 100), 0.006)
    code = f"bill = {bill}\ntip = bill * {pct} / 100\nprint(round(tip, 2))"
    return p, code, [rng.choice(P.TIP_Q[lang])], P.TIP_A[lang]


def g_divmod(rng, lang):
    a, b = rng.randint(20, 999), rng.randint(2, 30)
    sub = ("both", "rem", "quo")[rng.randrange(3)]
    p = {"a": _says(rng, lang, a), "b": _says(rng, lang, b), "a_d": a, "b_d": b}
    if sub == "both":
        p["_ref"], p["_lines"] = _rlist([a // b, a % b]), True
        code = f"a, b = {a}, {b}\nprint(a // b)\nprint(a % b)"
    else:
        p["_ref"] = _rnum(a % b if sub == "rem" else a // b)
        code = f"print({a} {'%' if sub == 'rem' else '//'} {b})"
    return p, code, [rng.choice(P.DIVMOD_Q[sub][lang])], _digits_in(P.DIVMOD_A[sub][lang], a=1, b=1)


def _price(rng, lo: int, hi: int) -> float:
    return rng.randint(lo, hi) if rng.random() < 0.4 else round(rng.uniform(lo, hi + 0.99), 2)


def g_story(rng, lang):
    """Word problems of 2-3 sentences whose numbers must be copied into the code."""
    name = rng.choice(FR_NAMES if lang == "fr" else EN_NAMES)
    L = 0 if lang == "fr" else 1
    de_name = ("d'" if name[0] in "AEIOUÉÈH" else "de ") + name   # French elision: d'Alice, de Marie
    kind = rng.randrange(8)
    if kind in (0, 1):                                   # shopping, 2 or 3 items
        k = 2 + kind
        items = [rng.choice(P.SHOP_ITEMS[j::3]) for j in range(k)]   # one slot list each: distinct in every split
        ns = [rng.randint(1, 9) for _ in items]
        prices = [_price(rng, it[2], it[3]) for it in items]
        p = {"name": name}
        for j, (it, n, pr) in enumerate(zip(items, ns, prices), 1):
            p[f"n{j}"], p[f"i{j}"], p[f"p{j}"] = n, it[L], _num(lang, pr)
        p["de_name"] = de_name
        total = sum(n * Fraction(str(pr)) for n, pr in zip(ns, prices))
        p["_ref"] = _rnum(float(total), 0.006)
        code = "total = " + " + ".join(f"{n} * {pr}" for n, pr in zip(ns, prices)) + "\nprint(round(total, 2))"
        return p, code, [rng.choice((P.SHOP_Q if k == 2 else P.SHOP3_Q)[lang])], P.SHOP_A[lang]
    if kind == 2:                                        # sharing equally
        b, each = rng.randint(2, 12), rng.randint(2, 40)
        thing = rng.choice(P.SHARE_THINGS)[L]
        p = {"name": name, "a": b * each, "b": b, "t": thing, "_ref": _rnum(each)}
        code = f"total = {b * each}\npeople = {b}\nprint(total // people)"
        return p, code, [rng.choice(P.SHARE_Q[lang])], P.SHARE_A[lang]
    if kind == 3:                                        # travel time = distance / speed
        s = rng.choice([40, 50, 60, 70, 80, 90, 100, 120, 130])
        d = s * rng.randint(1, 12) // 2
        p = {"name": name, "d": d, "s": s, "_ref": _rnum(d / s, 1e-9)}
        code = f"distance = {d}\nspeed = {s}\nprint(distance / speed)"
        return p, code, [rng.choice(P.TRAVEL_Q[lang])], P.TRAVEL_A[lang]
    if kind == 4:                                        # monthly savings
        m, k = rng.randint(10, 500), rng.randint(2, 36)
        p = {"name": name, "m": m, "k": k, "_ref": _rnum(m * k)}
        code = f"monthly = {m}\nmonths = {k}\nprint(monthly * months)"
        return p, code, [rng.choice(P.SAVE_Q[lang])], P.SAVE_A[lang]
    if kind == 5:                                        # scaling a recipe
        ing = rng.choice(P.RECIPE_INGREDIENTS)
        base = rng.choice([2, 4, 6, 8])
        want = rng.choice([x for x in (2, 3, 4, 5, 6, 8, 10, 12) if x != base])
        qty = rng.randint(2, 6) if "œufs" in ing[0] else 25 * rng.randint(2, 20)
        p = {"name": name, "p": base, "r": want, "q": qty, "ing": ing[L]}
        p["_ref"] = _rnum(round(qty * want / base, 1), 0.051)
        code = f"quantity = {qty}\npeople = {base}\nguests = {want}\nprint(round(quantity * guests / people, 1))"
        return p, code, [rng.choice(P.RECIPE_Q[lang])], P.RECIPE_A[lang]
    if kind == 6:                                        # age differences
        a = rng.randint(5, 40)
        b = a + rng.randint(20, 60)
        y1 = rng.randint(1950, 2015)
        y2 = y1 + rng.randint(2, 15)
        template = rng.choice(P.AGE_Q[lang])
        p = {"name": name, "a": a, "b": b, "y1": y1, "y2": y2}
        if "{y1}" in template:
            p["_ref"], code = _rnum(y2 - y1), f"print({y2} - {y1})"
        else:
            p["_ref"], code = _rnum(b - a), f"age_old = {b}\nage_young = {a}\nprint(age_old - age_young)"
        return p, code, [template], P.AGE_A[lang]
    room = rng.choice(P.ROOM_NAMES)[L]                   # area of a room
    Lm = rng.randint(2, 15) if rng.random() < 0.5 else rng.randint(25, 150) / 10
    Wm = rng.randint(2, 12) if rng.random() < 0.5 else rng.randint(20, 100) / 10
    p = {"name": name, "de_name": de_name, "room": room, "Room": room[0].upper() + room[1:], "L": _num(lang, Lm), "W": _num(lang, Wm)}
    p["_ref"] = _rnum(float(Fraction(str(Lm)) * Fraction(str(Wm))), 0.006)
    code = f"length = {Lm}\nwidth = {Wm}\nprint(round(length * width, 2))"
    return p, code, [rng.choice(P.ROOM_Q[lang])], P.ROOM_A[lang]


# --- Python algorithms ------------------------------------------------------------------------------

def g_sort(rng, lang):
    data = _rand_list(rng)
    desc = rng.random() < 0.3
    manual = rng.random() < 0.4
    p = {"d": ", ".join(map(str, data)), "L": str(data)}
    order = {"fr": "décroissant" if desc else "croissant", "en": "descending" if desc else "ascending"}[lang]
    p["o"] = order
    q = {"fr": ["Trie la liste {L} dans l'ordre {o}.", "Peux-tu trier {d} par ordre {o} ?", "Range ces nombres : {d} (ordre {o}).",
                "Écris un tri à bulles et trie {L} en ordre {o}." if manual else "Trie {L}, ordre {o}."],
         "en": ["Sort the list {L} in {o} order.", "Can you sort {d} in {o} order?", "Order these numbers ({o}): {d}.",
                "Write a bubble sort and sort {L} in {o} order." if manual else "Sort {L}, {o}."]}
    a = {"fr": ["Liste triée : {out}.", "Voici la liste triée : {out}."], "en": ["Sorted list: {out}.", "Here is the sorted list: {out}."]}
    p["_ref"] = _rlist(_insertion_sort(data, desc))
    if manual:
        cmp = "<" if desc else ">"
        code = (f"def bubble_sort(items):\n    items = list(items)\n    for i in range(len(items)):\n"
                f"        for j in range(len(items) - 1 - i):\n            if items[j] {cmp} items[j + 1]:\n"
                f"                items[j], items[j + 1] = items[j + 1], items[j]\n    return items\n\nprint(bubble_sort({data}))")
    else:
        code = f"print(sorted({data}{', reverse=True' if desc else ''}))"
    return p, code, q[lang], a[lang]


def g_search(rng, lang):
    data = sorted(set(_rand_list(rng, 6, 14, 0, 99)))
    target = rng.choice(data) if rng.random() < 0.8 else rng.randint(0, 99)
    p = {"L": str(data), "t": target}
    q = {"fr": ["Recherche dichotomique de {t} dans {L} : à quel indice est-il ?", "Trouve l'indice de {t} dans la liste triée {L}.",
                "Implémente une recherche binaire et cherche {t} dans {L}."],
         "en": ["Binary search for {t} in {L}: at which index is it?", "Find the index of {t} in the sorted list {L}.",
                "Implement a binary search and look for {t} in {L}."]}
    a = {"fr": ["Résultat de la recherche : {out} (-1 signifie absent).", "Indice trouvé : {out} (-1 = absent)."],
         "en": ["Search result: {out} (-1 means not found).", "Index found: {out} (-1 = not found)."]}
    code = ("def binary_search(items, target):\n    lo, hi = 0, len(items) - 1\n    while lo <= hi:\n"
            "        mid = (lo + hi) // 2\n        if items[mid] == target:\n            return mid\n"
            "        if items[mid] < target:\n            lo = mid + 1\n        else:\n            hi = mid - 1\n    return -1\n\n"
            f"print(binary_search({data}, {target}))")
    p["_ref"] = _rnum(data.index(target) if target in data else -1)
    return p, code, q[lang], a[lang]


def g_fibonacci(rng, lang):
    n = rng.randint(5, 90)
    if rng.random() < 0.5:
        p = {"n": n}
        q = {"fr": ["Quel est le {n}e nombre de Fibonacci ?", "Calcule F({n}) (suite de Fibonacci).", "Donne le terme {n} de la suite de Fibonacci."],
             "en": ["What is the {n}th Fibonacci number?", "Compute F({n}) in the Fibonacci sequence.", "Give me Fibonacci number {n}."]}
        a = {"fr": ["F({n}) = {out}.", "Le {n}e nombre de Fibonacci est {out}."], "en": ["F({n}) = {out}.", "Fibonacci number {n} is {out}."]}
        p["_ref"] = _rnum(_fib(n))
        code = f"def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\nprint(fib({n}))"
        return p, code, q[lang], a[lang]
    n = rng.randint(5, 25)
    p = {"n": n}
    q = {"fr": ["Affiche les {n} premiers termes de Fibonacci.", "Génère la suite de Fibonacci jusqu'au {n}e terme."],
         "en": ["Print the first {n} Fibonacci numbers.", "Generate the Fibonacci sequence up to term {n}."]}
    a = {"fr": ["Les {n} premiers termes : {out}."], "en": ["The first {n} terms: {out}."]}
    p["_ref"] = _rlist([_fib(i) for i in range(n)])
    code = f"seq = [0, 1]\nwhile len(seq) < {n}:\n    seq.append(seq[-1] + seq[-2])\nprint(seq[:{n}])"
    return p, code, q[lang], a[lang]


def g_factorial(rng, lang):
    n = rng.randint(3, 40)
    p = {"n": n}
    q = {"fr": ["Combien vaut {n}! ?", "Calcule la factorielle de {n}.", "Écris une fonction factorielle et calcule {n}!.",
                "Factorielle de {n} ?"],
         "en": ["What is {n}!?", "Compute the factorial of {n}.", "Write a factorial function and compute {n}!.", "Factorial of {n}?"]}
    p["_ref"] = _rnum(_factorial(n))
    a = {"fr": ["{n}! = {out}.", "La factorielle de {n} est {out}."], "en": ["{n}! = {out}.", "The factorial of {n} is {out}."]}
    if rng.random() < 0.5:
        code = f"def factorial(n):\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result\n\nprint(factorial({n}))"
    else:
        code = f"import math\nprint(math.factorial({n}))"
    return p, code, q[lang], a[lang]


def g_primes(rng, lang):
    if rng.random() < 0.5:
        n = rng.randint(2, 100000)
        p = {"n": n}
        q = {"fr": ["Est-ce que {n} est un nombre premier ?", "{n} est-il premier ?", "Vérifie si {n} est premier."],
             "en": ["Is {n} a prime number?", "Is {n} prime?", "Check whether {n} is prime."]}
        a = {"fr": ["Le test de primalité pour {n} donne : {out}."], "en": ["The primality test for {n} returns: {out}."]}
        code = ("def is_prime(n):\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n"
                "        if n % i == 0:\n            return False\n        i += 1\n    return True\n\n"
                f"print(is_prime({n}))")
        p["_ref"] = {"type": "bool", "value": _is_prime(n)}
        return p, code, q[lang], a[lang]
    n = rng.randint(10, 200)
    p = {"n": n}
    # (template, n itself included?): "inférieurs à n" / "below n" exclude n, "jusqu'à n" / "up to n" include it
    q = {"fr": [("Liste les nombres premiers inférieurs à {n}.", False), ("Quels sont les nombres premiers jusqu'à {n} ?", True),
                ("Crible d'Ératosthène jusqu'à {n}.", True), ("Donne les nombres premiers inférieurs ou égaux à {n}.", True)],
         "en": [("List the prime numbers below {n}.", False), ("Which numbers up to {n} are prime?", True),
                ("Sieve of Eratosthenes up to {n}.", True), ("List the primes less than {n}.", False)]}
    template, inclusive = rng.choice(q[lang])
    a = {"fr": ["Nombres premiers : {out}."], "en": ["Primes: {out}."]}
    stop = "n + 1" if inclusive else "n"
    code = (f"n = {n}\nis_p = [True] * (n + 1)\nis_p[0] = is_p[1] = False\nfor i in range(2, int(n ** 0.5) + 1):\n"
            "    if is_p[i]:\n        for j in range(i * i, n + 1, i):\n            is_p[j] = False\n"
            f"print([i for i in range({stop}) if is_p[i]])")
    p["_ref"] = _rlist([k for k in range(2, n + (1 if inclusive else 0)) if _is_prime(k)])
    return p, code, [template], a[lang]


WORDS_FR = ["bonjour", "ordinateur", "radar", "kayak", "python", "algorithme", "été", "château", "forêt", "élève",
            "ressasser", "programmation", "données", "liste", "université", "niveau", "chien", "maison", "soleil", "été"]
WORDS_EN = ["hello", "computer", "radar", "level", "python", "algorithm", "racecar", "listen", "silent", "keyboard",
            "rotor", "programming", "banana", "window", "noon", "coffee", "library", "stats", "garden", "madam"]
SENTENCES = {
    "fr": ["Le chat dort sur le canapé", "J'aime apprendre la programmation", "Python est un langage très utilisé",
           "Il fait beau aujourd'hui à Paris", "Les données sont partout", "La suite de Fibonacci est célèbre",
           "Un tiens vaut mieux que deux tu l'auras", "Elle lit un livre au jardin"],
    "en": ["The quick brown fox jumps over the lazy dog", "I love learning to code", "Python is a widely used language",
           "It is sunny today in London", "Data is everywhere", "The Fibonacci sequence is famous",
           "A bird in the hand is worth two in the bush", "She reads a book in the garden"],
}


def g_strings(rng, lang):
    words = WORDS_FR if lang == "fr" else WORDS_EN
    kind = rng.randrange(6)
    w = rng.choice(words)
    s = rng.choice(SENTENCES[lang])
    if kind == 0:
        p = {"w": w}
        q = {"fr": ["Inverse la chaîne '{w}'.", "Écris '{w}' à l'envers.", "Comment inverser le mot {w} en Python ?"],
             "en": ["Reverse the string '{w}'.", "Write '{w}' backwards.", "How do I reverse the word {w} in Python?"]}
        a = {"fr": ["'{w}' à l'envers donne : {out}"], "en": ["'{w}' reversed is: {out}"]}
        p["_ref"] = _rstr("".join(reversed(w)))
        return p, f"print('{w}'[::-1])", q[lang], a[lang]
    if kind == 1:
        p = {"w": w}
        q = {"fr": ["Est-ce que '{w}' est un palindrome ?", "Vérifie si {w} est un palindrome."],
             "en": ["Is '{w}' a palindrome?", "Check whether {w} is a palindrome."]}
        a = {"fr": ["Palindrome ? {out}."], "en": ["Palindrome? {out}."]}
        p["_ref"] = {"type": "bool", "value": all(w[i] == w[-1 - i] for i in range(len(w)))}
        return p, f"word = '{w}'\nprint(word == word[::-1])", q[lang], a[lang]
    if kind == 2:
        p = {"s": s}
        q = {"fr": ["Combien de voyelles dans « {s} » ?", "Compte les voyelles de la phrase : {s}"],
             "en": ["How many vowels are in \"{s}\"?", "Count the vowels in the sentence: {s}"]}
        a = {"fr": ["La phrase contient {out} voyelles."], "en": ["The sentence has {out} vowels."]}
        vowels = "aeiouyàâéèêëîïôùûü" if lang == "fr" else "aeiou"
        p["_ref"] = _rnum(len([c for c in s.lower() if c in vowels]))
        return p, f"text = {s!r}\nprint(sum(1 for c in text.lower() if c in '{vowels}'))", q[lang], a[lang]
    if kind == 3:
        p = {"s": s}
        q = {"fr": ["Combien de mots dans « {s} » ?", "Compte les mots de : {s}"], "en": ["How many words are in \"{s}\"?", "Count the words in: {s}"]}
        a = {"fr": ["Il y a {out} mots."], "en": ["There are {out} words."]}
        p["_ref"] = _rnum(len([t for t in s.split(" ") if t]))
        return p, f"text = {s!r}\nprint(len(text.split()))", q[lang], a[lang]
    if kind == 4:
        p = {"s": s}
        q = {"fr": ["Mets une majuscule à chaque mot de « {s} ».", "Transforme en majuscules : {s}"],
             "en": ["Capitalize every word of \"{s}\".", "Convert to upper case: {s}"]}
        a = {"fr": ["Résultat : {out}"], "en": ["Result: {out}"]}
        qi = rng.randrange(2)
        method = "title" if qi == 0 else "upper"
        p["_ref"] = _rstr(s.title() if qi == 0 else s.upper())
        return p, f"text = {s!r}\nprint(text.{method}())", [q[lang][qi]], a[lang]
    w2 = rng.choice(words)
    p = {"a": w, "b": w2}
    q = {"fr": ["Est-ce que '{a}' et '{b}' sont des anagrammes ?", "Vérifie si {a} et {b} sont anagrammes."],
         "en": ["Are '{a}' and '{b}' anagrams?", "Check whether {a} and {b} are anagrams."]}
    a = {"fr": ["Anagrammes ? {out}."], "en": ["Anagrams? {out}."]}
    p["_ref"] = {"type": "bool", "value": Counter(w) == Counter(w2)}
    return p, f"print(sorted('{w}') == sorted('{w2}'))", q[lang], a[lang]


def g_structures(rng, lang):
    kind = rng.randrange(4)
    if kind == 0:
        pushes = _rand_list(rng, 3, 7, 1, 50)
        pops = rng.randint(1, len(pushes) - 1)
        p = {"L": ", ".join(map(str, pushes)), "k": pops}
        q = {"fr": ["J'empile {L} puis je dépile {k} fois. Que reste-t-il dans la pile ?", "Simule une pile : push {L}, puis {k} pop."],
             "en": ["I push {L} onto a stack and pop {k} times. What is left?", "Simulate a stack: push {L}, then pop {k} times."]}
        a = {"fr": ["Éléments dépilés puis pile restante :\n{out}"], "en": ["Popped items, then the remaining stack:\n{out}"]}
        p["_ref"], p["_lines"] = _rlist([pushes[::-1][:pops], pushes[: len(pushes) - pops]]), True
        code = f"stack = []\nfor x in [{p['L']}]:\n    stack.append(x)\npopped = [stack.pop() for _ in range({pops})]\nprint(popped)\nprint(stack)"
        return p, code, q[lang], a[lang]
    if kind == 1:
        items = _rand_list(rng, 3, 7, 1, 50)
        k = rng.randint(1, len(items) - 1)
        p = {"L": ", ".join(map(str, items)), "k": k}
        q = {"fr": ["Dans une file (FIFO), j'ajoute {L} puis je retire {k} éléments. Que reste-t-il ?"],
             "en": ["In a FIFO queue I enqueue {L} and dequeue {k} items. What remains?"]}
        a = {"fr": ["Retirés puis restants :\n{out}"], "en": ["Dequeued, then remaining:\n{out}"]}
        p["_ref"], p["_lines"] = _rlist([items[:k], items[k:]]), True
        code = f"from collections import deque\nq = deque([{p['L']}])\nout = [q.popleft() for _ in range({k})]\nprint(out)\nprint(list(q))"
        return p, code, q[lang], a[lang]
    if kind == 2:
        n = rng.randint(2, 10 ** rng.randint(2, 9))
        p = {"n": n}
        q = {"fr": ["Convertis {n} en binaire.", "Quelle est l'écriture binaire de {n} ?"], "en": ["Convert {n} to binary.", "What is {n} in binary?"]}
        a = {"fr": ["{n} en binaire : {out}."], "en": ["{n} in binary: {out}."]}
        p["_ref"] = _rstr(_binary(n))
        return p, f"print(bin({n})[2:])", q[lang], a[lang]
    n = rng.randint(10, 10 ** rng.randint(3, 12))
    p = {"n": n}
    q = {"fr": ["Quelle est la somme des chiffres de {n} ?", "Additionne les chiffres du nombre {n}."],
         "en": ["What is the sum of the digits of {n}?", "Add up the digits of {n}."]}
    a = {"fr": ["La somme des chiffres de {n} est {out}."], "en": ["The digit sum of {n} is {out}."]}
    p["_ref"] = _rnum(_digit_sum(n))
    return p, f"print(sum(int(d) for d in str({n})))", q[lang], a[lang]


def g_minmax(rng, lang):
    data = _rand_list(rng, 5, 12)
    p = {"L": str(data)}
    q = {"fr": ["Trouve le maximum et le minimum de {L} sans utiliser max() ni min().", "Plus grand et plus petit élément de {L} ?"],
         "en": ["Find the maximum and minimum of {L} without max() or min().", "Largest and smallest element of {L}?"]}
    a = {"fr": ["Maximum : {l[0]}, minimum : {l[1]}."], "en": ["Maximum: {l[0]}, minimum: {l[1]}."]}
    p["_ref"], p["_lines"] = _rlist([sorted(data)[-1], sorted(data)[0]]), True
    code = f"data = {data}\nbig = small = data[0]\nfor x in data:\n    if x > big:\n        big = x\n    if x < small:\n        small = x\nprint(big)\nprint(small)"
    return p, code, q[lang], a[lang]


# --- data processing --------------------------------------------------------------------------------

def g_list_ops(rng, lang):
    data = _rand_list(rng, 5, 12)
    op = rng.randrange(5)
    p = {"L": str(data)}
    q, a, code = [
        ({"fr": ["Garde seulement les nombres pairs de {L}.", "Filtre les pairs dans {L}."], "en": ["Keep only the even numbers of {L}.", "Filter the evens from {L}."]},
         {"fr": ["Nombres pairs : {out}."], "en": ["Even numbers: {out}."]}, f"data = {data}\nprint([x for x in data if x % 2 == 0])"),
        ({"fr": ["Mets au carré chaque élément de {L}.", "Carrés des éléments de {L} ?"], "en": ["Square every element of {L}.", "Squares of the items in {L}?"]},
         {"fr": ["Les carrés : {out}."], "en": ["The squares: {out}."]}, f"data = {data}\nprint([x ** 2 for x in data])"),
        ({"fr": ["Somme et moyenne de {L} ?", "Calcule la somme puis la moyenne de la liste {L}."], "en": ["Sum and average of {L}?", "Compute the sum and then the mean of {L}."]},
         {"fr": ["Somme : {l[0]}, moyenne : {l[1]}."], "en": ["Sum: {l[0]}, average: {l[1]}."]}, f"data = {data}\nprint(sum(data))\nprint(sum(data) / len(data))"),
        ({"fr": ["Supprime les doublons de {L} en gardant l'ordre.", "Enlève les doublons : {L}"], "en": ["Remove duplicates from {L}, keeping the order.", "Deduplicate {L}."]},
         {"fr": ["Sans doublons : {out}."], "en": ["Without duplicates: {out}."]}, f"data = {data + data[:3]}\nprint(list(dict.fromkeys(data)))"),
        ({"fr": ["Quels éléments de {L} sont supérieurs à 50 ?", "Filtre les valeurs > 50 de {L}."], "en": ["Which elements of {L} are greater than 50?", "Filter the values > 50 in {L}."]},
         {"fr": ["Valeurs > 50 : {out}."], "en": ["Values > 50: {out}."]}, f"data = {data}\nprint([x for x in data if x > 50])"),
    ][op]
    if op == 3:
        p["L"] = str(data + data[:3])
    dedup = []
    for x in data + data[:3]:
        if x not in dedup:
            dedup.append(x)
    p["_ref"] = _rlist([[x for x in data if x % 2 == 0], [x * x for x in data], [sum(data), sum(data) / len(data)], dedup,
                        [x for x in data if x > 50]][op])
    p["_lines"] = op == 2
    return p, code, q[lang], a[lang]


FRUITS = {"fr": ["pomme", "poire", "banane", "kiwi", "orange", "fraise", "cerise", "mangue", "prune", "raisin",
                 "ananas", "citron", "abricot", "pêche", "melon", "pastèque", "figue", "myrtille", "framboise", "datte",
                 "noix", "carotte", "tomate", "courgette", "oignon", "poivron", "radis", "navet", "salade", "chou"],
          "en": ["apple", "pear", "banana", "kiwi", "orange", "strawberry", "cherry", "mango", "plum", "grape",
                 "pineapple", "lemon", "apricot", "peach", "melon", "watermelon", "fig", "blueberry", "raspberry", "date",
                 "walnut", "carrot", "tomato", "zucchini", "onion", "pepper", "radish", "turnip", "lettuce", "cabbage"]}


def g_dicts(rng, lang):
    keys = rng.sample(FRUITS[lang], rng.randint(3, 6))
    d = {k: rng.randint(1, 99) for k in keys}
    op = rng.randrange(4)
    p = {"D": json.dumps(d, ensure_ascii=False)}
    p["_ref"] = [_rlist(sorted(d.items(), key=lambda kv: -kv[1])), _rstr(_argmax(d)), _rlist(_invert(d)), None][op]
    if op == 0:
        q = {"fr": ["Trie ce dictionnaire par valeur : {D}", "Ordonne {D} selon les valeurs décroissantes."],
             "en": ["Sort this dictionary by value: {D}", "Order {D} by decreasing values."]}
        a = {"fr": ["Dictionnaire trié : {out}"], "en": ["Sorted dictionary: {out}"]}
        return p, f"stock = {d!r}\nprint(dict(sorted(stock.items(), key=lambda kv: kv[1], reverse=True)))", q[lang], a[lang]
    if op == 1:
        q = {"fr": ["Quelle clé a la plus grande valeur dans {D} ?", "Quel fruit a le plus gros stock : {D} ?"],
             "en": ["Which key has the largest value in {D}?", "Which fruit has the biggest stock: {D}?"]}
        a = {"fr": ["C'est {out}."], "en": ["It's {out}."]}
        return p, f"stock = {d!r}\nprint(max(stock, key=stock.get))", q[lang], a[lang]
    if op == 2:
        q = {"fr": ["Inverse clés et valeurs de {D}.", "Échange les clés et les valeurs du dictionnaire {D}."],
             "en": ["Swap keys and values of {D}.", "Invert the dictionary {D}."]}
        a = {"fr": ["Dictionnaire inversé : {out}"], "en": ["Inverted dictionary: {out}"]}
        return p, f"stock = {d!r}\nprint({{v: k for k, v in stock.items()}})", q[lang], a[lang]
    s = rng.choice(SENTENCES[lang]).lower()
    p = {"s": s, "_ref": _rlist(_top_letters(s, 3))}
    q = {"fr": ["Compte la fréquence de chaque lettre dans « {s} » (les 3 plus fréquentes).", "Quelles sont les 3 lettres les plus fréquentes de : {s} ?"],
         "en": ["Count letter frequencies in \"{s}\" (top 3).", "What are the 3 most common letters in: {s}?"]}
    a = {"fr": ["Les 3 lettres les plus fréquentes : {out}"], "en": ["The 3 most common letters: {out}"]}
    return p, f"from collections import Counter\ntext = {s!r}\nprint(Counter(c for c in text if c.isalpha()).most_common(3))", q[lang], a[lang]


def g_json(rng, lang):
    items = [{"name": n, "price": round(rng.uniform(0.5, 30), 2), "qty": rng.randint(1, 9)}
             for n in rng.sample(FRUITS[lang], rng.randint(2, 5))]
    js = json.dumps(items, ensure_ascii=False)
    op = rng.randrange(3)
    p = {"J": js}
    if op == 0:
        q = {"fr": ["Voici un JSON de commande : {J}. Quel est le total (prix × quantité) ?", "Parse ce JSON et calcule le montant total : {J}"],
             "en": ["Here is an order as JSON: {J}. What is the total (price × qty)?", "Parse this JSON and compute the total amount: {J}"]}
        a = {"fr": ["Le total de la commande est {out}."], "en": ["The order total is {out}."]}
        p["_ref"] = _rnum(sum(i["price"] * i["qty"] for i in items), 0.006)
        code = f"import json\norder = json.loads({js!r})\nprint(round(sum(i['price'] * i['qty'] for i in order), 2))"
    elif op == 1:
        q = {"fr": ["Extrais les noms de ce JSON : {J}", "Quels produits contient ce JSON ? {J}"],
             "en": ["Extract the names from this JSON: {J}", "Which products are in this JSON? {J}"]}
        a = {"fr": ["Produits : {out}"], "en": ["Products: {out}"]}
        p["_ref"] = _rlist([i["name"] for i in items])
        code = f"import json\norder = json.loads({js!r})\nprint([i['name'] for i in order])"
    else:
        q = {"fr": ["Dans ce JSON, quel est l'article le plus cher ? {J}", "Trouve le produit au prix le plus élevé : {J}"],
             "en": ["In this JSON, which item is the most expensive? {J}", "Find the product with the highest price: {J}"]}
        a = {"fr": ["L'article le plus cher : {out}"], "en": ["The most expensive item: {out}"]}
        best = items[[i["price"] for i in items].index(sorted(i["price"] for i in items)[-1])]
        p["_ref"] = _rstr(f"{best['name']} {best['price']}")
        code = f"import json\norder = json.loads({js!r})\nbest = max(order, key=lambda i: i['price'])\nprint(best['name'], best['price'])"
    return p, code, q[lang], a[lang]


def g_arrays(rng, lang):
    r, c = rng.randint(2, 4), rng.randint(2, 4)
    m = [[rng.randint(-9, 20) for _ in range(c)] for _ in range(r)]
    op = rng.randrange(4)
    p = {"M": str(m)}
    p["_ref"] = _rlist([[[row[j] for row in m] for j in range(c)], [x for row in m for x in row],
                        [sum(row[j] for row in m) for j in range(c)], [round(sum(row) / c, 3) for row in m]][op])
    if op == 0:
        q = {"fr": ["Transpose la matrice {M}.", "Quelle est la transposée de {M} ?"], "en": ["Transpose the matrix {M}.", "What is the transpose of {M}?"]}
        a = {"fr": ["Transposée : {out}"], "en": ["Transpose: {out}"]}
        return p, f"m = {m}\nprint([list(row) for row in zip(*m)])", q[lang], a[lang]
    if op == 1:
        q = {"fr": ["Aplatis la liste imbriquée {M}.", "Mets {M} à plat en une seule liste."], "en": ["Flatten the nested list {M}.", "Turn {M} into one flat list."]}
        a = {"fr": ["Liste aplatie : {out}"], "en": ["Flattened: {out}"]}
        return p, f"m = {m}\nprint([x for row in m for x in row])", q[lang], a[lang]
    if op == 2:
        q = {"fr": ["Avec numpy, somme de chaque colonne de {M} ?", "Calcule les sommes par colonne du tableau {M}."],
             "en": ["With numpy, the sum of each column of {M}?", "Compute the column sums of the array {M}."]}
        a = {"fr": ["Sommes par colonne : {out}"], "en": ["Column sums: {out}"]}
        return p, f"import numpy as np\na = np.array({m})\nprint(a.sum(axis=0).tolist())", q[lang], a[lang]
    q = {"fr": ["Quelle est la moyenne de chaque ligne de {M} ?", "Moyenne par ligne du tableau {M} ?"],
         "en": ["What is the mean of each row of {M}?", "Row means of the array {M}?"]}
    a = {"fr": ["Moyennes par ligne : {out}"], "en": ["Row means: {out}"]}
    return p, f"import numpy as np\na = np.array({m})\nprint(a.mean(axis=1).round(3).tolist())", q[lang], a[lang]


def g_csv(rng, lang):
    names = rng.sample(FR_NAMES if lang == "fr" else EN_NAMES, rng.randint(3, 6))
    ages = [rng.randint(15, 80) for _ in names]
    header = "nom,age" if lang == "fr" else "name,age"
    text = header + "\\n" + "\\n".join(f"{n},{a}" for n, a in zip(names, ages))
    p = {"C": text.replace("\\n", " / ")}
    q = {"fr": ["Voici un CSV : {C}. Quelle est la moyenne d'âge et qui est le plus âgé ?", "Analyse ce CSV ({C}) : âge moyen et personne la plus âgée ?"],
         "en": ["Here is a CSV: {C}. What is the average age and who is the oldest?", "Analyse this CSV ({C}): mean age and oldest person?"]}
    a = {"fr": ["Âge moyen : {l[0]}, la personne la plus âgée : {l[1]}."], "en": ["Average age: {l[0]}, oldest person: {l[1]}."]}
    oldest = names[ages.index(sorted(ages)[-1])]
    p["_ref"], p["_lines"] = _rlist([round(sum(ages) / len(ages), 2), oldest]), True
    code = (f"text = \"{text}\"\nrows = [line.split(',') for line in text.splitlines()[1:]]\n"
            "ages = [int(age) for _, age in rows]\nprint(round(sum(ages) / len(ages), 2))\nprint(max(rows, key=lambda r: int(r[1]))[0])")
    return p, code, q[lang], a[lang]


def g_zip_group(rng, lang):
    keys = rng.sample(FRUITS[lang], rng.randint(3, 6))
    vals = [rng.randint(1, 99) for _ in keys]
    if rng.random() < 0.5:
        p = {"K": str(keys), "V": str(vals)}
        q = {"fr": ["Crée un dictionnaire à partir des listes {K} et {V}.", "Associe {K} à {V} dans un dict."],
             "en": ["Build a dictionary from the lists {K} and {V}.", "Zip {K} with {V} into a dict."]}
        a = {"fr": ["Dictionnaire : {out}"], "en": ["Dictionary: {out}"]}
        p["_ref"] = _rlist([[k, v] for k, v in zip(keys, vals)])
        return p, f"keys = {keys!r}\nvalues = {vals}\nprint(dict(zip(keys, values)))", q[lang], a[lang]
    words = [rng.choice(WORDS_FR if lang == "fr" else WORDS_EN) for _ in range(rng.randint(5, 9))]
    groups = {}
    for w in words:
        groups[w[0]] = groups.get(w[0], []) + [w]
    p = {"W": str(words), "_ref": _rlist([[k, v] for k, v in groups.items()])}
    q = {"fr": ["Regroupe les mots {W} par leur première lettre.", "Groupe {W} selon l'initiale."],
         "en": ["Group the words {W} by first letter.", "Group {W} by their initial."]}
    a = {"fr": ["Groupes : {out}"], "en": ["Groups: {out}"]}
    code = f"groups = {{}}\nfor w in {words!r}:\n    groups.setdefault(w[0], []).append(w)\nprint(groups)"
    return p, code, q[lang], a[lang]


PYTHON_GENS: dict[str, list[tuple[str, Gen, int]]] = {   # category -> [(kind, generator, weight)]
    "maths": [("arithmetic", g_arith, 4), ("percent", g_percent, 2), ("discount", g_discount, 1), ("sqrt_pow", g_sqrt_pow, 2),
              ("linear_equation", g_linear, 2), ("quadratic", g_quadratic, 2), ("derivative", g_derivative, 3),
              ("integral", g_integral, 3), ("statistics", g_stats, 2), ("word_problem", g_word_problem, 3), ("gcd_lcm", g_gcd, 1),
              ("arithmetic_words", g_arith_words, 3), ("conversion", g_convert, 2), ("divmod", g_divmod, 1),
              ("story", g_story, 4), ("tip", g_tip, 1)],
    "algo": [("sort", g_sort, 3), ("binary_search", g_search, 2), ("fibonacci", g_fibonacci, 2), ("factorial", g_factorial, 2),
             ("primes", g_primes, 2), ("strings", g_strings, 4), ("structures", g_structures, 3), ("min_max", g_minmax, 1)],
    "data": [("lists", g_list_ops, 4), ("dicts", g_dicts, 3), ("json", g_json, 3), ("arrays", g_arrays, 3), ("csv", g_csv, 1),
             ("zip_group", g_zip_group, 2)],
}


# ---------------------------------------------------------------------------------------------------
# web artifacts (never executed)
# ---------------------------------------------------------------------------------------------------
COLORS = {"fr": {"bleu": "#2563eb", "rouge": "#dc2626", "vert": "#16a34a", "violet": "#7c3aed", "orange": "#ea580c",
                 "noir": "#111827", "rose": "#db2777", "gris": "#6b7280"},
          "en": {"blue": "#2563eb", "red": "#dc2626", "green": "#16a34a", "purple": "#7c3aed", "orange": "#ea580c",
                 "black": "#111827", "pink": "#db2777", "gray": "#6b7280"}}


def web_candidate(rng: random.Random, lang: str) -> Candidate:
    cname, chex = rng.choice(sorted(COLORS[lang].items()))
    kind = rng.randrange(9)
    text = rng.choice(["Envoyer", "Valider", "Clique ici", "Commencer", "S'inscrire"] if lang == "fr"
                      else ["Send", "Submit", "Click me", "Get started", "Sign up"])
    px = rng.choice([8, 10, 12, 16, 20, 24])
    if kind == 0:
        q = {"fr": [f"Fais-moi un bouton HTML {cname} avec le texte « {text} ».", f"Crée un bouton {cname} « {text} » en HTML/CSS.",
                    f"Code HTML d'un bouton {cname} arrondi qui affiche {text}"],
             "en": [f"Make me a {cname} HTML button that says \"{text}\".", f"Create a {cname} \"{text}\" button in HTML/CSS.",
                    f"HTML code for a rounded {cname} button showing {text}"]}
        code = (f"<button style=\"background: {chex}; color: white; border: none; border-radius: {px}px; "
                f"padding: 10px 20px; cursor: pointer;\">{text}</button>")
        ans = {"fr": f"Le bouton est {cname} ({chex}) avec des coins arrondis de {px} px.",
               "en": f"The button is {cname} ({chex}) with {px}px rounded corners."}
        lang_ = "html"
    elif kind == 1:
        fields = rng.sample(["nom", "email", "mot de passe", "téléphone", "message"] if lang == "fr" else ["name", "email", "password", "phone", "message"], rng.randint(2, 4))
        q = {"fr": [f"Crée un formulaire HTML avec les champs : {', '.join(fields)}.", f"Je veux un formulaire de contact ({', '.join(fields)})."],
             "en": [f"Create an HTML form with the fields: {', '.join(fields)}.", f"I want a contact form ({', '.join(fields)})."]}
        types = {"email": "email", "mot de passe": "password", "password": "password", "téléphone": "tel", "phone": "tel"}
        rows = "\n".join(f"  <label>{f.capitalize()} <input type=\"{types.get(f, 'text')}\" name=\"{f.replace(' ', '_')}\" required></label>"
                         for f in fields)
        code = f"<form method=\"post\">\n{rows}\n  <button type=\"submit\">{text}</button>\n</form>"
        ans = {"fr": f"Le formulaire a {len(fields)} champs obligatoires et un bouton « {text} ».",
               "en": f"The form has {len(fields)} required fields and a \"{text}\" button."}
        lang_ = "html"
    elif kind == 2:
        n = rng.randint(2, 5)
        q = {"fr": [f"Fais un tableau HTML de {n} lignes avec les colonnes Nom et Âge.", f"Génère un tableau HTML ({n} lignes, colonnes Nom/Âge)."],
             "en": [f"Make an HTML table with {n} rows and the columns Name and Age.", f"Generate an HTML table ({n} rows, Name/Age columns)."]}
        names = rng.sample(FR_NAMES if lang == "fr" else EN_NAMES, n)
        h1, h2 = ("Nom", "Âge") if lang == "fr" else ("Name", "Age")
        body = "\n".join(f"    <tr><td>{nm}</td><td>{rng.randint(18, 70)}</td></tr>" for nm in names)
        code = f"<table>\n  <thead><tr><th>{h1}</th><th>{h2}</th></tr></thead>\n  <tbody>\n{body}\n  </tbody>\n</table>"
        ans = {"fr": f"Le tableau contient un en-tête et {n} lignes.", "en": f"The table has a header and {n} rows."}
        lang_ = "html"
    elif kind == 3:
        q = {"fr": ["Comment centrer une div horizontalement et verticalement en CSS ?", "Centre un élément au milieu de la page en CSS.",
                    f"CSS pour centrer une boîte {cname} dans la page"],
             "en": ["How do I center a div horizontally and vertically in CSS?", "Center an element in the middle of the page with CSS.",
                    f"CSS to center a {cname} box on the page"]}
        code = f".container {{\n  display: flex;\n  justify-content: center;\n  align-items: center;\n  min-height: 100vh;\n}}\n.box {{\n  background: {chex};\n  padding: {px}px;\n}}"
        ans = {"fr": "Flexbox sur le parent : justify-content centre horizontalement, align-items verticalement.",
               "en": "Flexbox on the parent: justify-content centers horizontally, align-items vertically."}
        lang_ = "css"
    elif kind == 4:
        c2name, c2hex = rng.choice(sorted(COLORS[lang].items()))
        q = {"fr": [f"Un dégradé CSS du {cname} au {c2name} en fond de page.", f"Fond en dégradé {cname} → {c2name} en CSS ?"],
             "en": [f"A CSS background gradient from {cname} to {c2name}.", f"Gradient background {cname} → {c2name} in CSS?"]}
        deg = rng.choice([45, 90, 135, 180])
        code = f"body {{\n  min-height: 100vh;\n  margin: 0;\n  background: linear-gradient({deg}deg, {chex}, {c2hex});\n}}"
        ans = {"fr": f"Le dégradé va du {cname} au {c2name} selon un angle de {deg} degrés.",
               "en": f"The gradient goes from {cname} to {c2name} at a {deg}-degree angle."}
        lang_ = "css"
    elif kind == 5:
        cols = rng.randint(2, 5)
        q = {"fr": [f"Une grille CSS de {cols} colonnes égales avec un espace de {px} px.", f"CSS grid : {cols} colonnes, gap {px}px"],
             "en": [f"A CSS grid with {cols} equal columns and a {px}px gap.", f"CSS grid: {cols} columns, gap {px}px"]}
        code = f".grid {{\n  display: grid;\n  grid-template-columns: repeat({cols}, 1fr);\n  gap: {px}px;\n}}"
        ans = {"fr": f"La grille a {cols} colonnes de même largeur séparées de {px} px.", "en": f"The grid has {cols} equal columns {px}px apart."}
        lang_ = "css"
    elif kind == 6:
        q = {"fr": [f"Écris un compteur en JavaScript : un bouton « {text} » qui incrémente un nombre.", "Un compteur de clics en JS ?"],
             "en": [f"Write a JavaScript counter: a \"{text}\" button that increments a number.", "A click counter in JS?"]}
        code = (f"const button = document.createElement('button');\nbutton.textContent = '{text}';\nlet count = 0;\n"
                "const label = document.createElement('span');\nlabel.textContent = ' 0';\n"
                "button.addEventListener('click', () => {\n  count += 1;\n  label.textContent = ' ' + count;\n});\n"
                "document.body.append(button, label);")
        ans = {"fr": "Chaque clic ajoute 1 au compteur affiché à côté du bouton.", "en": "Each click adds 1 to the counter shown next to the button."}
        lang_ = "js"
    elif kind == 7:
        q = {"fr": ["Ajoute un bouton mode sombre en JavaScript.", "Comment basculer entre thème clair et sombre en JS ?"],
             "en": ["Add a dark mode toggle button in JavaScript.", "How do I switch between light and dark theme in JS?"]}
        code = ("const toggle = document.createElement('button');\ntoggle.textContent = '🌙';\n"
                "toggle.addEventListener('click', () => {\n  document.body.classList.toggle('dark');\n"
                "  toggle.textContent = document.body.classList.contains('dark') ? '☀️' : '🌙';\n});\n"
                f"document.body.append(toggle);\nconst style = document.createElement('style');\n"
                f"style.textContent = 'body.dark {{ background: #111827; color: #f9fafb; }}';\ndocument.head.append(style);")
        ans = {"fr": "Le bouton ajoute ou retire la classe « dark » du body, qui change les couleurs.",
               "en": "The button adds or removes the \"dark\" class on the body, which changes the colors."}
        lang_ = "js"
    else:
        title = rng.choice(["Mon portfolio", "Ma recette préférée", "Club de lecture", "Mon blog"] if lang == "fr"
                           else ["My portfolio", "My favourite recipe", "Book club", "My blog"])
        q = {"fr": [f"Crée une page HTML simple intitulée « {title} » avec un titre {cname}.", f"Une page web minimale « {title} » ?"],
             "en": [f"Create a simple HTML page titled \"{title}\" with a {cname} heading.", f"A minimal web page \"{title}\"?"]}
        code = (f"<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head>\n  <meta charset=\"utf-8\">\n  <title>{title}</title>\n"
                f"  <style>h1 {{ color: {chex}; font-family: sans-serif; }}</style>\n</head>\n<body>\n  <h1>{title}</h1>\n"
                f"  <p>{'Bienvenue !' if lang == 'fr' else 'Welcome!'}</p>\n</body>\n</html>")
        ans = {"fr": f"La page affiche le titre « {title} » en {cname}.", "en": f"The page shows the heading \"{title}\" in {cname}."}
        lang_ = "html"
    user = _wrap(rng, lang, rng.choice(q[lang]))
    return Candidate("web", f"web_{lang_}", lang, user, rng.choice(WEB_LEADS[lang]), code, lang_, ans[lang])


# ---------------------------------------------------------------------------------------------------
# negatives: answered directly, no code
# ---------------------------------------------------------------------------------------------------
CAPITALS = [("France", "Paris", "la France"), ("Germany", "Berlin", "l'Allemagne"), ("Italy", "Rome", "l'Italie"),
            ("Spain", "Madrid", "l'Espagne"), ("Portugal", "Lisbon|Lisbonne", "le Portugal"), ("Japan", "Tokyo", "le Japon"),
            ("Canada", "Ottawa", "le Canada"), ("Belgium", "Brussels|Bruxelles", "la Belgique"), ("Switzerland", "Bern|Berne", "la Suisse"),
            ("Morocco", "Rabat", "le Maroc"), ("Senegal", "Dakar", "le Sénégal"), ("Egypt", "Cairo|Le Caire", "l'Égypte"),
            ("Brazil", "Brasília", "le Brésil"), ("Australia", "Canberra", "l'Australie"), ("Norway", "Oslo", "la Norvège"),
            ("Poland", "Warsaw|Varsovie", "la Pologne"), ("Greece", "Athens|Athènes", "la Grèce"), ("Mexico", "Mexico City|Mexico", "le Mexique"),
            ("Ireland", "Dublin", "l'Irlande"), ("Austria", "Vienna|Vienne", "l'Autriche"), ("Sweden", "Stockholm", "la Suède"),
            ("Algeria", "Algiers|Alger", "l'Algérie"), ("Tunisia", "Tunis", "la Tunisie"), ("India", "New Delhi|New Delhi", "l'Inde"),
            ("China", "Beijing|Pékin", "la Chine"), ("Argentina", "Buenos Aires", "l'Argentine"), ("Kenya", "Nairobi", "le Kenya"),
            ("Netherlands", "Amsterdam", "les Pays-Bas"), ("Denmark", "Copenhagen|Copenhague", "le Danemark"),
            ("Finland", "Helsinki", "la Finlande"), ("Ivory Coast", "Yamoussoukro", "la Côte d'Ivoire"), ("Peru", "Lima", "le Pérou")]
FACTS = [
    ("Qui a écrit Les Misérables ?", "Les Misérables a été écrit par Victor Hugo, publié en 1862.",
     "Who wrote Les Misérables?", "Les Misérables was written by Victor Hugo and published in 1862."),
    ("Quelle est la plus grande planète du système solaire ?", "C'est Jupiter, la plus grande planète du système solaire.",
     "What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("En quelle année a eu lieu la Révolution française ?", "La Révolution française commence en 1789.",
     "When did the French Revolution start?", "The French Revolution began in 1789."),
    ("Qui a peint la Joconde ?", "La Joconde a été peinte par Léonard de Vinci.", "Who painted the Mona Lisa?", "The Mona Lisa was painted by Leonardo da Vinci."),
    ("Quel est le plus long fleuve de France ?", "La Loire est le plus long fleuve de France.",
     "What is the longest river in France?", "The Loire is the longest river in France."),
    ("Qui a créé le langage Python ?", "Python a été créé par Guido van Rossum, première version publiée en 1991.",
     "Who created the Python language?", "Python was created by Guido van Rossum; the first version came out in 1991."),
    ("Quelle est la formule chimique de l'eau ?", "La formule de l'eau est H2O : deux atomes d'hydrogène et un d'oxygène.",
     "What is the chemical formula of water?", "Water is H2O: two hydrogen atoms and one oxygen atom."),
    ("Combien de continents y a-t-il ?", "On compte généralement 7 continents (parfois 5 ou 6 selon les conventions).",
     "How many continents are there?", "There are usually said to be 7 continents (5 or 6 in some conventions)."),
    ("Quelle langue parle-t-on au Brésil ?", "Au Brésil, on parle portugais.", "What language is spoken in Brazil?", "Portuguese is spoken in Brazil."),
    ("Qui a écrit Roméo et Juliette ?", "Roméo et Juliette est une pièce de William Shakespeare.",
     "Who wrote Romeo and Juliet?", "Romeo and Juliet is a play by William Shakespeare."),
    ("Quelle est la planète la plus proche du Soleil ?", "Mercure est la planète la plus proche du Soleil.",
     "Which planet is closest to the Sun?", "Mercury is the closest planet to the Sun."),
    ("Quel est le symbole chimique de l'or ?", "Le symbole de l'or est Au.", "What is the chemical symbol for gold?", "Gold's symbol is Au."),
    ("Qui a découvert la pénicilline ?", "Alexander Fleming a découvert la pénicilline en 1928.",
     "Who discovered penicillin?", "Alexander Fleming discovered penicillin in 1928."),
    ("Quel est le plus haut sommet d'Europe occidentale ?", "C'est le mont Blanc, dans les Alpes.",
     "What is the highest peak in Western Europe?", "Mont Blanc, in the Alps."),
    ("Combien de côtés a un hexagone ?", "Un hexagone a 6 côtés.", "How many sides does a hexagon have?", "A hexagon has 6 sides."),
    ("Quel océan borde la côte ouest de la France ?", "L'océan Atlantique borde la côte ouest de la France.",
     "Which ocean borders the west coast of France?", "The Atlantic Ocean borders the west coast of France."),
]
CONCEPTS = [
    ("une fonction récursive", "Une fonction récursive est une fonction qui s'appelle elle-même, avec un cas de base qui arrête les appels.",
     "a recursive function", "A recursive function is a function that calls itself, with a base case that stops the calls."),
    ("une liste en Python", "Une liste Python est une séquence ordonnée et modifiable, écrite entre crochets, par exemple [1, 2, 3].",
     "a list in Python", "A Python list is an ordered, mutable sequence written in square brackets, like [1, 2, 3]."),
    ("un nombre premier", "Un nombre premier est un entier supérieur à 1 qui n'a que deux diviseurs : 1 et lui-même.",
     "a prime number", "A prime number is an integer greater than 1 whose only divisors are 1 and itself."),
    ("une dérivée", "La dérivée mesure la vitesse de variation d'une fonction : c'est la pente de sa tangente en un point.",
     "a derivative", "A derivative measures how fast a function changes: it is the slope of its tangent at a point."),
    ("le HTML", "Le HTML est le langage de balisage qui décrit la structure des pages web.",
     "HTML", "HTML is the markup language that describes the structure of web pages."),
    ("un algorithme", "Un algorithme est une suite finie d'instructions précises pour résoudre un problème.",
     "an algorithm", "An algorithm is a finite sequence of precise instructions that solves a problem."),
    ("un dictionnaire en Python", "Un dictionnaire associe des clés à des valeurs, par exemple {'a': 1}.",
     "a dictionary in Python", "A dictionary maps keys to values, for example {'a': 1}."),
    ("la moyenne", "La moyenne est la somme des valeurs divisée par leur nombre.", "the mean", "The mean is the sum of the values divided by how many there are."),
    ("le JSON", "Le JSON est un format texte pour échanger des données structurées (objets, listes, nombres, chaînes).",
     "JSON", "JSON is a text format for exchanging structured data (objects, arrays, numbers, strings)."),
    ("une boucle for", "Une boucle for répète un bloc d'instructions pour chaque élément d'une séquence.",
     "a for loop", "A for loop repeats a block of code for each element of a sequence."),
    ("l'apprentissage automatique", "L'apprentissage automatique permet à un programme d'apprendre des régularités à partir de données.",
     "machine learning", "Machine learning lets a program learn patterns from data instead of being explicitly programmed."),
    ("une variable", "Une variable est un nom qui désigne une valeur stockée en mémoire.", "a variable", "A variable is a name that refers to a value stored in memory."),
]
GREETINGS = {
    "fr": [("Bonjour !", "Bonjour ! Comment puis-je vous aider aujourd'hui ?"), ("Salut", "Salut ! Qu'est-ce que je peux faire pour toi ?"),
           ("Coucou !", "Coucou ! Que puis-je faire pour toi ?"), ("Bonsoir", "Bonsoir ! En quoi puis-je vous aider ?"),
           ("Comment ça va ?", "Je vais bien, merci ! Et toi ? Dis-moi si je peux t'aider."),
           ("Merci beaucoup !", "Avec plaisir ! N'hésite pas si tu as d'autres questions."),
           ("Qui es-tu ?", "Je suis HessGPT, un assistant qui parle français et anglais et qui peut écrire du code pour calculer."),
           ("Au revoir", "Au revoir ! Bonne journée."), ("Tu peux m'aider ?", "Bien sûr ! Quelle est ta question ?"),
           ("Ça roule ?", "Oui, tout roule ! Que puis-je faire pour toi ?"), ("Bonne nuit", "Bonne nuit ! À bientôt."),
           ("Tu parles français ?", "Oui, je parle français et anglais.")],
    "en": [("Hello!", "Hello! How can I help you today?"), ("Hi", "Hi! What can I do for you?"), ("Hey there", "Hey! What can I help with?"),
           ("Good evening", "Good evening! How can I help?"), ("How are you?", "I'm doing well, thanks! How can I help you?"),
           ("Thanks a lot!", "You're welcome! Feel free to ask anything else."),
           ("Who are you?", "I'm HessGPT, an assistant that speaks English and French and can write code to compute things."),
           ("Goodbye", "Goodbye! Have a nice day."), ("Can you help me?", "Of course! What is your question?"),
           ("What's up?", "Not much, ready to help! What do you need?"), ("Good night", "Good night! See you soon."),
           ("Do you speak English?", "Yes, I speak English and French.")],
}
OPINIONS = {
    "fr": [("Quel est ton langage de programmation préféré ?", "Je n'ai pas de préférence personnelle, mais Python est un excellent choix pour débuter : lisible et très polyvalent."),
           ("Tu préfères les chats ou les chiens ?", "Je n'ai pas d'avis personnel, mais les deux sont de très bons compagnons selon ton mode de vie."),
           ("Est-ce que les maths sont utiles ?", "Oui : elles servent partout, de l'informatique à la physique en passant par la finance."),
           ("Quel livre me conseilles-tu pour apprendre à coder ?", "Pour Python, « Automate the Boring Stuff with Python » est un bon point de départ, gratuit en ligne."),
           ("C'est difficile d'apprendre Python ?", "Non, Python est réputé pour être l'un des langages les plus faciles à apprendre."),
           ("Tu aimes la musique ?", "Je ne peux pas écouter de musique, mais je peux t'aider à en parler ou à trouver des idées."),
           ("Donne-moi un conseil pour réviser.", "Révise par petites séances régulières et teste-toi avec des exercices plutôt que de relire."),
           ("Raconte-moi une blague.", "Pourquoi les développeurs confondent Halloween et Noël ? Parce que OCT 31 = DEC 25 !")],
    "en": [("What is your favourite programming language?", "I don't have personal preferences, but Python is a great choice to start: readable and versatile."),
           ("Do you prefer cats or dogs?", "I don't have opinions of my own, but both make great companions depending on your lifestyle."),
           ("Is math useful?", "Yes: it is used everywhere, from computing to physics to finance."),
           ("Which book would you recommend to learn coding?", "For Python, \"Automate the Boring Stuff with Python\" is a good start, and it is free online."),
           ("Is Python hard to learn?", "No, Python is known as one of the easiest languages to learn."),
           ("Do you like music?", "I can't listen to music, but I'm happy to talk about it or suggest ideas."),
           ("Give me a study tip.", "Study in short, regular sessions and test yourself with exercises instead of rereading."),
           ("Tell me a joke.", "Why do programmers mix up Halloween and Christmas? Because OCT 31 = DEC 25!")],
}


# requests that contain digits or code words yet need no code: answered directly
DIGIT_NEGATIVES = {
    "fr": [("J'ai 3 chats, des idées de noms ?", "Pour trois chats : Pixel, Moka et Caramel, ou un trio à thème comme Athos, Porthos et Aramis."),
           ("Mon code plante à la ligne 12, c'est quoi une exception ?", "Une exception est une erreur signalée pendant l'exécution ; le message et la ligne indiquée aident à trouver la cause."),
           ("J'ai 25 ans, est-ce trop tard pour apprendre le piano ?", "Pas du tout : on peut apprendre le piano à tout âge avec une pratique régulière."),
           ("Explique-moi ce qu'est une boucle while.", "Une boucle while répète un bloc tant qu'une condition reste vraie."),
           ("Que s'est-il passé en 1969 ?", "En 1969, Apollo 11 s'est posé sur la Lune : Neil Armstrong y a marché le premier."),
           ("Je dors 6 heures par nuit, c'est suffisant ?", "Pour la plupart des adultes, on recommande plutôt 7 à 9 heures de sommeil."),
           ("J'ai un entretien à 14 h, des conseils ?", "Arrive un peu en avance, prépare deux ou trois exemples concrets de ton parcours et des questions à poser."),
           ("Python 3 ou Python 2 pour débuter ?", "Python 3 : Python 2 n'est plus maintenu depuis 2020."),
           ("C'est quoi une variable en Python ?", "Une variable est un nom qui référence une valeur, par exemple age = 30."),
           ("Mon fils a 8 ans, quel livre lui offrir ?", "À 8 ans, une série comme « Le Petit Nicolas » ou des bandes dessinées comme « Astérix » plaît souvent."),
           ("Que veut dire l'erreur 404 ?", "L'erreur 404 signifie que la page demandée est introuvable sur le serveur."),
           ("On est 4 ce soir, quel jeu de société choisir ?", "À quatre, Code Names, Dixit ou Les Aventuriers du Rail fonctionnent très bien.")],
    "en": [("I have 3 cats, any name ideas?", "For three cats: Pixel, Mocha and Biscuit, or a themed trio like Huey, Dewey and Louie."),
           ("What happened in 1969?", "In 1969 Apollo 11 landed on the Moon and Neil Armstrong became the first person to walk on it."),
           ("I'm 25, is it too late to learn piano?", "Not at all: you can learn the piano at any age with regular practice."),
           ("Explain what a for loop is.", "A for loop repeats a block of code once for each item of a sequence."),
           ("My code crashes on line 12, what is an exception?", "An exception is an error raised while the program runs; its message and line number point to the cause."),
           ("I sleep 6 hours a night, is that enough?", "Most adults are advised to get 7 to 9 hours of sleep."),
           ("What does error 404 mean?", "Error 404 means the server could not find the requested page."),
           ("Should I learn Python 2 or Python 3?", "Python 3: Python 2 has not been maintained since 2020."),
           ("We are 4 tonight, which board game should we play?", "For four players, Codenames, Ticket to Ride or Dixit work very well."),
           ("My daughter turns 10, gift ideas?", "At 10, a science kit, a good book series or a craft set are popular choices."),
           ("What is a variable in programming?", "A variable is a name that refers to a value, for example age = 30."),
           ("I have a meeting at 3 pm, any tips to stay focused?", "Write down the three points you want to cover and silence notifications before it starts.")],
}


def _de(noun: str) -> str:
    """French 'de' + article: le Maroc -> du Maroc, les Pays-Bas -> des Pays-Bas, la France -> de la France."""
    if noun.startswith("le "):
        return "du " + noun[3:]
    if noun.startswith("les "):
        return "des " + noun[4:]
    return "de " + noun


def negative_candidate(rng: random.Random, lang: str) -> Candidate:
    kind = rng.randrange(10)
    if kind == 6:      # "explain what a for loop is": answered in prose, without code
        fc, fa, ec, ea = rng.choice(P.EXPLAIN)
        core = rng.choice(P.EXPLAIN_Q[lang]).format(c=fc if lang == "fr" else ec)
        core = re.sub(r"\bque (une?)\b", r"qu'\1", core)
        return Candidate("negative", "explain_no_code", lang, _wrap(rng, lang, core), answer=fa if lang == "fr" else ea)
    if kind == 7:      # history with years
        fq, fa, eq, ea = rng.choice(P.HISTORY)
        return Candidate("negative", "history", lang, _wrap(rng, lang, fq if lang == "fr" else eq), answer=fa if lang == "fr" else ea)
    if kind == 8:      # advice that mentions numbers
        core, ans = rng.choice(P.ADVICE[lang])
        return Candidate("negative", "advice", lang, _wrap(rng, lang, core), answer=ans)
    if kind == 9:      # thanks, small talk
        core, ans = rng.choice(P.SMALLTALK[lang])
        return Candidate("negative", "smalltalk", lang, core if rng.random() < 0.5 else _wrap(rng, lang, core), answer=ans)
    if kind == 5:
        core, ans = rng.choice(DIGIT_NEGATIVES[lang])
        return Candidate("negative", "digits_no_code", lang, _wrap(rng, lang, core), answer=ans)
    if kind == 0:
        en_country, cap, fr_country = rng.choice(CAPITALS)
        cap_en, cap_fr = (cap.split("|") + [cap])[:2] if "|" in cap else (cap, cap)
        if lang == "fr":
            core = rng.choice(["Quelle est la capitale de {c} ?", "C'est quoi la capitale de {c} ?", "Capitale de {c} ?",
                               "Tu connais la capitale de {c} ?", "Quelle ville est la capitale de {c} ?"]).replace("de {c}", "{c}").format(c=_de(fr_country))
            ans = f"La capitale {_de(fr_country)} est {cap_fr}."
        else:
            core = rng.choice(["What is the capital of {c}?", "What's the capital city of {c}?", "Capital of {c}?",
                               "Do you know the capital of {c}?", "Which city is the capital of {c}?"]).format(c=en_country)
            ans = f"The capital of {en_country} is {cap_en}."
        sub = "fact"
    elif kind == 1:
        fq, fa, eq, ea = rng.choice(FACTS)
        core, ans, sub = (fq, fa, "fact") if lang == "fr" else (eq, ea, "fact")
    elif kind == 2:
        fc, fa, ec, ea = rng.choice(CONCEPTS)
        if lang == "fr":
            core = rng.choice(P.CONCEPT_Q["fr"]).format(c=fc)
        else:
            core = rng.choice(P.CONCEPT_Q["en"]).format(c=ec)
        core = re.sub(r"\bque (une?)\b", r"qu'\1", core)
        ans, sub = (fa if lang == "fr" else ea), "definition"
    elif kind == 3:
        core, ans = rng.choice(GREETINGS[lang])
        sub = "greeting"
        user = core if rng.random() < 0.5 else _wrap(rng, lang, core)
        return Candidate("negative", sub, lang, user, answer=ans)
    else:
        core, ans = rng.choice(OPINIONS[lang])
        sub = "opinion"
    return Candidate("negative", sub, lang, _wrap(rng, lang, core), answer=ans)


def python_candidate(rng: random.Random, category: str, lang: str) -> Candidate:
    gens = PYTHON_GENS[category]
    kind, gen, _ = rng.choices(gens, weights=[w for *_, w in gens])[0]
    params, code, questions, answers = gen(rng, lang)
    if 1 < len(set(questions)) < MIN_PARTITIONED:   # too few phrasings to partition: compose with task prefixes
        questions = list(questions) + [pre + (q[0].lower() + q[1:] if q[1:2].islower() else q)
                                       for pre in P.TASK_PREFIX[lang] for q in questions]
    template = questions[0] if len(questions) == 1 else rng.choice(questions)   # one: drawn by the generator
    user = _wrap(rng, lang, template.format(**params))
    ref, lines = params.pop("_ref", None), params.pop("_lines", False)
    if ref is None:
        raise AssertionError(f"generator {kind} gave no reference")
    return Candidate(category, kind, lang, user, rng.choice(LEADS[lang]), code, "python", rng.choice(answers), params,
                     reference=ref, ref_lines=lines, template=template)


# ---------------------------------------------------------------------------------------------------
# execution and records
# ---------------------------------------------------------------------------------------------------
def final_text(c: Candidate, stdout: str) -> str:
    out = stdout.strip()
    lines = [line.strip() for line in out.splitlines()] or [""]
    return c.answer.format(**c.params, out=out, l=lines)


def to_record(c: Candidate, stdout: str | None = None) -> dict:
    if c.category == "negative":
        messages = [{"role": "user", "content": c.user}, {"role": "assistant", "content": c.answer}]
    elif c.code_lang != "python":
        messages = [{"role": "user", "content": c.user},
                    {"role": "assistant", "content": c.lead, "code": c.code, "code_lang": c.code_lang},
                    {"role": "assistant", "content": c.answer}]
    else:
        messages = [{"role": "user", "content": c.user},
                    {"role": "assistant", "content": c.lead, "code": c.code},
                    {"role": "tool", "name": "python", "content": stdout},
                    {"role": "assistant", "content": final_text(c, stdout)}]
    digest = hashlib.sha1(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()[:12]
    return {"id": f"routing:{c.category}-{digest}", "source": "routing", "lang": c.lang, "category": c.category,
            "kind": c.kind, "split": c.split, "reference": c.reference, "messages": messages}


MAX_OUTPUT_CHARS = 600   # a tool result longer than this teaches nothing useful


@dataclass
class Stats:
    generated: Counter = field(default_factory=Counter)
    duplicates: int = 0
    failed: Counter = field(default_factory=Counter)       # status -> count
    failed_kinds: Counter = field(default_factory=Counter) # category/kind -> count of dropped runs
    kept: Counter = field(default_factory=Counter)         # category -> count
    kinds: Counter = field(default_factory=Counter)        # category/kind -> count
    langs: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    sandbox_runs: int = 0
    retried: int = 0                                       # failed runs tried a second time
    disagreements: Counter = field(default_factory=Counter)  # category/kind -> sandbox stdout != reference
    disagreement_examples: list = field(default_factory=list)
    templates: dict = field(default_factory=dict)   # category/lang -> question templates used
    shared_lists: int = 0          # phrasing lists too short to partition (fewer than 3 items): shared by the splits

    def to_dict(self) -> dict:
        return {"generated": dict(self.generated), "duplicates": self.duplicates, "failed": dict(self.failed),
                "failed_kinds": dict(self.failed_kinds),
                "kept": dict(self.kept), "kinds": dict(sorted(self.kinds.items())), "langs": dict(self.langs),
                "sandbox_runs": self.sandbox_runs, "retried": self.retried, "seconds": round(self.seconds, 1),
                "verification_disagreements": dict(sorted(self.disagreements.items())),
                "verification_disagreement_examples": self.disagreement_examples[:10],
                "shared_short_lists": self.shared_lists,
                "distinct_templates": {k: len(v) for k, v in sorted(self.templates.items())}}


# Share of each category among the samples that need a code block: computation (maths) is what model 1
# most often hands to the sandbox, and the hardest to get right (it copies operands into code and the
# printed result into the answer), so it gets the largest share.
CATEGORY_SHARES = {"maths": 0.4, "algo": 0.2, "web": 0.2, "data": 0.2}


def _quotas(n: int, negative_fraction: float) -> dict[str, int]:
    n_neg = round(n * negative_fraction)
    n_pos = n - n_neg
    q = {c: int(n_pos * CATEGORY_SHARES[c]) for c in CATEGORIES}
    for c in CATEGORIES[: n_pos - sum(q.values())]:
        q[c] += 1
    q["negative"] = n_neg
    return q


def _infra_failure(r) -> bool:
    """The sandbox lost its worker (killed, restarted): not the code's fault, worth another try."""
    return r.status == "error" and "worker stopped answering" in (r.stderr or "")


def _run_with_retry(sb, codes: list[str], stats: "Stats | None" = None, tries: int = 3) -> list:
    """run_many, then up to `tries` more tries, one at a time, for runs whose worker was lost: a worker
    restarted under load must not change which samples are kept (that would break determinism).
    A real error (a traceback, a timeout) is final."""
    results = sb.run_many(codes)
    retried = 0
    for i, r in enumerate(results):
        for _ in range(tries):
            if not _infra_failure(results[i]):
                break
            results[i] = sb.run(codes[i])
            retried += 1
    if stats is not None:
        stats.sandbox_runs += len(codes) + retried
        stats.retried += retried
    return results


def generate(n: int, langs=LANGS, seed: int = 0, negative_fraction: float = 0.25, sandbox=None,
             workers: int = 2, progress: bool = True, split: str = "train",
             seen: set | None = None) -> tuple[list[dict], Stats]:
    """n verified records (shuffled) of one split, and the statistics. `sandbox` is an open Sandbox, or one
    is opened. The split's phrasings, entities and operands come from its own partition (SplitRandom), with
    its own seed (seed + SPLIT_SEED_OFFSET[split]); `seen` (prompt keys) is shared across splits to dedupe."""
    from hessgpt.tools.sandbox import Sandbox

    if not langs or any(l not in LANGS for l in langs):
        raise HessGPTError(f"--langs must be a subset of {','.join(LANGS)}, got {','.join(langs) or 'nothing'}")
    if not 0 <= negative_fraction < 1:
        raise HessGPTError(f"--negative-fraction must be in [0, 1), got {negative_fraction}")
    t0 = time.time()
    if split not in SPLITS:
        raise HessGPTError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    rng = SplitRandom(seed + SPLIT_SEED_OFFSET[split], split)
    quotas = _quotas(n, negative_fraction)
    stats = Stats()
    seen = set() if seen is None else seen
    records: list[dict] = []

    def fresh(make: Callable[[str], Candidate], count: int, i0: int) -> list[Candidate]:
        """`count` new (not yet seen) candidates, languages alternating; gives up after many duplicates."""
        out, tries = [], 0
        while len(out) < count and tries < count * 20 + 100:
            c = make(langs[(i0 + tries) % len(langs)])
            c.split = split
            tries += 1
            stats.generated[c.category] += 1
            if c.key() in seen:
                stats.duplicates += 1
                continue
            seen.add(c.key())
            out.append(c)
        return out

    def keep(c: Candidate, stdout: str | None = None):
        records.append(to_record(c, stdout))
        if c.template:
            stats.templates.setdefault(f"{c.category}/{c.lang}", set()).add(c.template)
        stats.kept[c.category] += 1
        stats.kinds[f"{c.category}/{c.kind}"] += 1
        stats.langs[c.lang] += 1

    for cat, make in (("negative", lambda l: negative_candidate(rng, l)), ("web", lambda l: web_candidate(rng, l))):
        for c in fresh(make, quotas[cat], 0):
            keep(c)

    own = sandbox is None
    sb = Sandbox(workers=workers) if own else sandbox
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(quotas[c] for c in PYTHON_GENS), desc="routing (sandbox)", unit="sample")
    try:
        for cat in PYTHON_GENS:
            need, offset = quotas[cat], 0
            for _round in range(6):
                if need <= 0:
                    break
                batch = fresh(lambda l: python_candidate(rng, cat, l), int(need * 1.05) + 4, offset)
                offset += len(batch)
                if not batch:
                    break
                for start in range(0, len(batch), 256):   # chunks, so the progress bar moves
                    chunk = batch[start : start + 256]
                    results = _run_with_retry(sb, [c.code for c in chunk], stats)
                    for c, r in zip(chunk, results):
                        if need <= 0:
                            break
                        if r.status != "ok":
                            stats.failed[r.status] += 1
                            stats.failed_kinds[f"{c.category}/{c.kind}"] += 1
                        elif not r.stdout.strip() or len(r.stdout) > MAX_OUTPUT_CHARS:
                            stats.failed["empty_or_long_output"] += 1
                            stats.failed_kinds[f"{c.category}/{c.kind}"] += 1
                        elif not agrees(c.reference, r.stdout, c.ref_lines):
                            stats.disagreements[f"{c.category}/{c.kind}"] += 1
                            if len(stats.disagreement_examples) < 10:
                                stats.disagreement_examples.append(
                                    {"kind": f"{c.category}/{c.kind}", "user": c.user, "stdout": r.stdout[:200],
                                     "reference": c.reference})
                        else:
                            try:
                                keep(c, r.stdout)
                            except (IndexError, KeyError):   # output has fewer lines than the answer uses
                                stats.failed["answer_mismatch"] += 1
                                stats.failed_kinds[f"{c.category}/{c.kind}"] += 1
                                continue
                            need -= 1
                            if bar:
                                bar.update(1)
    finally:
        if bar:
            bar.close()
        if own:
            sb.close()
    random.Random(seed + 1 + SPLIT_SEED_OFFSET[split]).shuffle(records)
    stats.seconds = time.time() - t0
    stats.shared_lists = len(rng.shared_lists)
    return records, stats


def generate_splits(n: int, test_n: int = 600, val_fraction: float = 0.05, langs=LANGS, seed: int = 0,
                    negative_fraction: float = 0.25, workers: int = 2, progress: bool = True,
                    sandbox=None, multiturn_share: float = N_SHARE) -> tuple[dict[str, list[dict]], dict]:
    """{"train", "dev", "test"} -> records, and the stats JSON. n = train + dev (dev = round(n * val_fraction));
    the three splits share no template, entity or operand integer (see partition / int_split), each with its
    own seed; prompts are deduplicated across splits. Train and dev also get multiturn_share x their size of
    2-3 turn conversations composed from their own singles (hessgpt.data.routing_multiturn)."""
    from hessgpt.tools.sandbox import Sandbox

    n_dev = round(n * val_fraction)
    sizes = {"train": n - n_dev, "dev": n_dev, "test": test_n}
    own = sandbox is None
    sb = Sandbox(workers=workers) if own else sandbox
    seen: set[str] = set()
    out, per = {}, {}
    multi: dict[str, Counter] = {split: Counter() for split in SPLITS}
    try:
        for split in SPLITS:
            if sizes[split] <= 0:
                out[split], per[split] = [], None
                continue
            out[split], st = generate(sizes[split], langs, seed, negative_fraction, sandbox=sb, workers=workers,
                                      progress=progress, split=split, seen=seen)
            per[split] = st
            if split != "test" and multiturn_share > 0:
                # 2-3 turn conversations composed from this split's own singles (the follow-up phrasings are
                # shared by the splits, so the test split stays single-turn: the OOD set measures multi-turn)
                t0 = time.time()
                extra = compose_conversations(out[split], round(multiturn_share * len(out[split])),
                                              random.Random(seed + SPLIT_SEED_OFFSET[split] + 7919), run_code=sandbox_runner(sb),
                                              stats=multi[split])
                for r in extra:
                    r["split"] = split
                out[split] = out[split] + extra
                random.Random(seed + SPLIT_SEED_OFFSET[split]).shuffle(out[split])
                multi[split]["seconds"] = round(time.time() - t0, 1)
    finally:
        if own:
            sb.close()
    stats = {"seed": seed, "langs_requested": list(langs), "train": len(out["train"]), "val": len(out["dev"]),
             "dev": len(out["dev"]), "test": len(out["test"]),
             "splits": {k: (v.to_dict() if v else None) for k, v in per.items()},
             "distinct_prompts": {k: len({" ".join(r["messages"][0]["content"].lower().split()) for r in v})
                                  for k, v in out.items()},
             "verification_disagreements": sum(sum(v.disagreements.values()) for v in per.values() if v),
             "multiturn": {k: dict(v) for k, v in multi.items() if v},
             "partition": {"rule": "sha1 bucket of the item: <10 test, <20 dev, else train (each list keeps one item "
                                   "per split); integers of ranges >= 20 values by the bucket of the integer",
                           "min_partitioned_list": MIN_PARTITIONED, "min_int_range": MIN_INT_RANGE}}
    tot = Stats()
    for v in per.values():
        if v:
            for a in ("generated", "failed", "failed_kinds", "kept", "kinds", "langs", "disagreements"):
                getattr(tot, a).update(getattr(v, a))
            tot.duplicates += v.duplicates
            tot.sandbox_runs += v.sandbox_runs
            tot.retried += v.retried
            tot.seconds += v.seconds
    d = tot.to_dict()
    d.update(stats)
    return out, d


def split_paths(out: str) -> tuple[Path, Path, Path]:
    """out.jsonl -> (out.jsonl, out.val.jsonl, out.stats.json)."""
    p = Path(out)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p, p.with_name(stem + ".val.jsonl"), p.with_name(stem + ".stats.json")


def test_path(out: str) -> Path:
    p = Path(out)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(stem + ".test.jsonl")


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


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
    from hessgpt.data.conversation import Skip, from_dict
    from hessgpt.tools.sandbox import Sandbox

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
    sb = Sandbox(workers=workers) if own else sandbox
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
        _write_jsonl(Path(out), kept)
    return {"records": len(records) + unreadable, "kept": len(kept), "dropped": len(problems), "code_runs": len(jobs), "problems": problems}


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------
def build_parser(prog: str = "hessgpt data routing") -> argparse.ArgumentParser:
    """The routing CLI's arguments (hessgpt.data.routing_mix adds --search-share to the same parser)."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="number of samples (train + val)")
    ap.add_argument("--out", help="output JSONL (train); the validation split goes to OUT.val.jsonl, stats to OUT.stats.json")
    ap.add_argument("--langs", default="fr,en", help="comma-separated languages (fr, en)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.05, help="dev (tuning) split, a share of --n")
    ap.add_argument("--test-n", type=int, default=600, help="size of the test split (own seed, disjoint phrasings, "
                                                           "entities and operands; never used to choose anything)")
    ap.add_argument("--negative-fraction", type=float, default=0.25, help="share of direct answers without code")
    ap.add_argument("--multiturn-share", type=float, default=N_SHARE,
                    help=f"2-3 turn conversations added to train and dev, as a share of their size (default {N_SHARE})")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="sandbox workers")
    ap.add_argument("--validate", metavar="FILE", help="check an externally generated file instead of generating")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def run_validate(args) -> int:
    """--validate FILE: run every code block of an externally generated file, drop the wrong samples."""
    out = args.out or str(Path(args.validate).with_suffix("")) + ".valid.jsonl"
    rep = validate_file(args.validate, out, workers=args.workers)
    for lineno, problem in rep["problems"]:
        print(f"{args.validate}:{lineno}: dropped: {problem}")
    print(f"checked {rep['records']} records ({rep['code_runs']} code blocks run in the sandbox): "
          f"kept {rep['kept']}, dropped {rep['dropped']} -> {out}")
    return 0


def check_args(args) -> tuple[str, ...]:
    """Refuse bad sizes with a one-line error; the requested languages."""
    if not args.out:
        raise HessGPTError("--out FILE is required (or --validate FILE)")
    if args.n <= 0:
        raise HessGPTError(f"--n must be positive, got {args.n}")
    if not 0 <= args.val_fraction < 1:
        raise HessGPTError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if not 0 <= args.multiturn_share <= 1:
        raise HessGPTError(f"--multiturn-share must be in [0, 1], got {args.multiturn_share}")
    if args.test_n < 0:
        raise HessGPTError(f"--test-n must be >= 0, got {args.test_n}")
    return tuple(l.strip() for l in args.langs.split(",") if l.strip())


def write_and_report(args, splits: dict[str, list[dict]], d: dict) -> None:
    """Write the three splits and the stats beside --out, print the summary and any short split."""
    train_p, val_p, stats_p = split_paths(args.out)
    test_p = test_path(args.out)
    _write_jsonl(train_p, splits["train"])
    _write_jsonl(val_p, splits["dev"])
    _write_jsonl(test_p, splits["test"])
    stats_p.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    fails = ", ".join(f"{k}={v}" for k, v in d["failed"].items()) or "none"
    total = sum(len(v) for v in splits.values())
    print(f"routing: {total} samples in {d['seconds']:.1f} s ({d['sandbox_runs']} sandbox runs, failed runs dropped: "
          f"{fails}, disagreeing with the reference: {d['verification_disagreements']}, duplicates skipped: {d['duplicates']})")
    print("  " + "  ".join(f"{k}={v}" for k, v in d["kept"].items()) + "  |  " + "  ".join(f"{k}={v}" for k, v in d["langs"].items()))
    print(f"  wrote {train_p} ({d['train']}), {val_p} (dev, {d['dev']}), {test_p} (test, {d['test']}), {stats_p}")
    mt = {k: sum(v.get(kind, 0) for kind in ("multiturn-unrelated", "multiturn-followup", "multiturn-thanks",
                                               "multiturn-correction")) for k, v in d.get("multiturn", {}).items()}
    if mt:
        print("  multi-turn conversations: " + ", ".join(f"{k} {v}" for k, v in mt.items()))
    want = {"train": args.n - round(args.n * args.val_fraction), "dev": round(args.n * args.val_fraction), "test": args.test_n}
    want = {k: v + mt.get(k, 0) + d.get("search", {}).get("sizes", {}).get(k, 0)
            - d.get("search", {}).get("dropped_conflicts", {}).get(k, 0) for k, v in want.items()}
    for k, v in want.items():
        if len(splits[k]) < v:
            print(f"  warning: {k}: only {len(splits[k])} of {v} requested samples (not enough distinct prompts)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.validate:
        return run_validate(args)
    langs = check_args(args)
    splits, d = generate_splits(args.n, args.test_n, args.val_fraction, langs, args.seed, args.negative_fraction,
                                workers=args.workers, progress=not args.no_progress and sys.stderr.isatty(),
                                multiturn_share=args.multiturn_share)
    write_and_report(args, splits, d)
    return 0
