"""`maths` generators: arithmetic, percentages, equations, derivatives and integrals (sympy), statistics, word
problems, unit conversions, stories. Each returns (params, code, questions[lang], answers[lang])."""

import math
import random
import re
from fractions import Fraction

from hessgpt.data.routing import phrasing as P
from hessgpt.data.routing.candidate import Gen
from hessgpt.data.routing.words import EN_NAMES, FR_NAMES, _num
from hessgpt.data.routing.reference import (
    _eval_shown, _gcd, _mean, _median, _poly_integral, _rlist, _rnum, _stdev, _sym_ref,
)
from hessgpt.data.routing.splits import str_split


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
# generators: each returns (params, code, questions[lang], answers[lang]) for one sub-kind
# ---------------------------------------------------------------------------------------------------


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


# --- composed phrasings (hessgpt.data.routing.phrasing): framing + core + operands as words or digits ---------
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


GENS: list[tuple[str, Gen, int]] = [   # (kind, generator, weight): build.PYTHON_GENS["maths"]
    ("arithmetic", g_arith, 4), ("percent", g_percent, 2), ("discount", g_discount, 1), ("sqrt_pow", g_sqrt_pow, 2),
    ("linear_equation", g_linear, 2), ("quadratic", g_quadratic, 2), ("derivative", g_derivative, 3),
    ("integral", g_integral, 3), ("statistics", g_stats, 2), ("word_problem", g_word_problem, 3), ("gcd_lcm", g_gcd, 1),
    ("arithmetic_words", g_arith_words, 3), ("conversion", g_convert, 2), ("divmod", g_divmod, 1),
    ("story", g_story, 4), ("tip", g_tip, 1)]
