"""`data` generators: lists, dicts, JSON parsing, arrays, CSV, zip/group."""

import json

from hessgpt.data.routing.candidate import Gen
from hessgpt.data.routing.maths import _rand_list
from hessgpt.data.routing.words import EN_NAMES, FRUITS, FR_NAMES, SENTENCES, WORDS_EN, WORDS_FR
from hessgpt.data.routing.reference import _argmax, _invert, _rlist, _rnum, _rstr, _top_letters


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


GENS: list[tuple[str, Gen, int]] = [   # (kind, generator, weight): build.PYTHON_GENS["data"]
    ("lists", g_list_ops, 4), ("dicts", g_dicts, 3), ("json", g_json, 3), ("arrays", g_arrays, 3), ("csv", g_csv, 1),
    ("zip_group", g_zip_group, 2)]
