"""`algo` generators: sorting, binary search, Fibonacci, factorial, primes, strings, stacks/queues, min/max."""

from collections import Counter

from hessgpt.data.routing.candidate import Gen
from hessgpt.data.routing.maths import _rand_list
from hessgpt.data.routing.words import SENTENCES, WORDS_EN, WORDS_FR
from hessgpt.data.routing.reference import (
    _binary, _digit_sum, _factorial, _fib, _insertion_sort, _is_prime, _rlist, _rnum, _rstr,
)


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


GENS: list[tuple[str, Gen, int]] = [   # (kind, generator, weight): build.PYTHON_GENS["algo"]
    ("sort", g_sort, 3), ("binary_search", g_search, 2), ("fibonacci", g_fibonacci, 2), ("factorial", g_factorial, 2),
    ("primes", g_primes, 2), ("strings", g_strings, 4), ("structures", g_structures, 3), ("min_max", g_minmax, 1)]
