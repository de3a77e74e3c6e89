"""Phrasing tables for the routing generator (hessgpt.data.routing), composed from independent parts.

A question is built from a framing ("Combien font {x} ?", "could you work out {x}?"), a core ("17 fois 23",
"the product of 17 and 23"), operands (digits, or number words for small ones: "dix-sept", "twenty-three"),
units, story frames, politeness and typos. Every list here has at least MIN_PARTITIONED (3) items, so
SplitRandom draws each split's part of each list independently: a test prompt's framing, core and story
frame never occur in train. Casual spellings ("cb font", "whats", "pls") and a little fr/en code-switching are
items of the lists, like any other phrasing.
"""

# ---------------------------------------------------------------------------------------------------
# number words, 0-99
# ---------------------------------------------------------------------------------------------------
_FR_UNITS = ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix", "onze", "douze",
             "treize", "quatorze", "quinze", "seize", "dix-sept", "dix-huit", "dix-neuf"]
_FR_TENS = {2: "vingt", 3: "trente", 4: "quarante", 5: "cinquante", 6: "soixante", 8: "quatre-vingt"}
_EN_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
             "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def spell_fr(n: int) -> str:
    """0-99 in French words (traditional spelling): 17 dix-sept, 21 vingt et un, 71 soixante et onze, 80 quatre-vingts."""
    if not 0 <= n <= 99:
        raise ValueError(f"spell_fr: 0-99 only, got {n}")
    if n < 20:
        return _FR_UNITS[n]
    t, u = divmod(n, 10)
    if t in (7, 9):                     # soixante-dix.., quatre-vingt-dix..
        base, rest = _FR_TENS[t - 1], 10 + u
        if t == 7 and u == 1:
            return "soixante et onze"
        return f"{base}-{_FR_UNITS[rest]}"
    if u == 0:
        return "quatre-vingts" if t == 8 else _FR_TENS[t]
    if u == 1 and t != 8:
        return f"{_FR_TENS[t]} et un"
    return f"{_FR_TENS[t]}-{_FR_UNITS[u]}"


def spell_en(n: int) -> str:
    """0-99 in English words: 23 twenty-three."""
    if not 0 <= n <= 99:
        raise ValueError(f"spell_en: 0-99 only, got {n}")
    if n < 20:
        return _EN_UNITS[n]
    t, u = divmod(n, 10)
    return _EN_TENS[t] + (f"-{_EN_UNITS[u]}" if u else "")


def spell(lang: str, n: int) -> str:
    return spell_fr(n) if lang == "fr" else spell_en(n)


# ---------------------------------------------------------------------------------------------------
# arithmetic in words: a framing around a core; {x} is the core
# ---------------------------------------------------------------------------------------------------
# framings around an operation written as words ("17 fois 23")
FRAMES_EXPR = {
    "fr": ["Combien font {x} ?", "Peux-tu calculer {x} ?", "J'ai besoin de savoir combien font {x}.", "Calcule-moi {x}.",
           "Dis-moi combien font {x}.", "Ça fait combien, {x} ?", "cb font {x} ?", "combien fon {x}", "Tu peux me dire combien font {x} ?",
           "Je voudrais savoir ce que donne {x}.", "Vite fait : {x} ?", "Combien ça fait {x} ?", "Tu sais combien font {x} ?",
           "Calcule {x} please.", "Question rapide : {x}, ça donne quoi ?", "{x}, ça fait combien ?"],
    "en": ["What is {x}?", "what's {x}?", "Could you work out {x}?", "Tell me what {x} is.", "I need {x}.", "Quick one: {x}?",
           "whats {x}", "How much is {x}?", "Can you tell me what {x} comes to?", "{x} = ? pls", "Work out {x} for me.",
           "Do you know what {x} is?", "What do you get for {x}?", "Calcule {x} in English please.", "{x} makes how much?"],
}
# the operation as words, per operator; {a} and {b} are the operands as the user writes them
CORES = {
    "*": {"fr": ["{a} fois {b}", "{a} multiplié par {b}", "{a} x {b}", "{a} × {b}", "{a} fois {b} exactement"],
          "en": ["{a} times {b}", "{a} multiplied by {b}", "{a} x {b}", "{a} × {b}"]},
    "+": {"fr": ["{a} plus {b}", "{a} + {b}", "{a} et {b} additionnés", "{a} ajouté à {b}"],
          "en": ["{a} plus {b}", "{a} + {b}", "{a} and {b} added together", "{a} added to {b}"]},
    "-": {"fr": ["{a} moins {b}", "{a} - {b}", "{a} auquel on retire {b}", "{a} auquel on enlève {b}"],
          "en": ["{a} minus {b}", "{a} - {b}", "{b} taken away from {a}", "{b} subtracted from {a}"]},
    "/": {"fr": ["{a} divisé par {b}", "{a} / {b}", "{a} sur {b}", "{a} partagé en {b}"],
          "en": ["{a} divided by {b}", "{a} / {b}", "{a} over {b}", "{a} split into {b} equal parts"]},
}
# framings around a noun phrase ("le produit de 17 et 23")
FRAMES_NOUN = {
    "fr": ["Quel est {x} ?", "Calcule {x}.", "Donne-moi {x}.", "J'ai besoin de {x}.", "Tu peux trouver {x} ?",
           "C'est quoi {x} ?", "Dis-moi {x} stp.", "Peux-tu me donner {x} ?"],
    "en": ["What is {x}?", "Calculate {x}.", "Give me {x}.", "I need {x}.", "Can you find {x}?", "Tell me {x}.",
           "what's {x} pls", "Could you give me {x}?"],
}
NOUN_CORES = {
    "*": {"fr": ["le produit de {a} et {b}", "le produit de {a} par {b}", "la multiplication de {a} par {b}"],
          "en": ["the product of {a} and {b}", "the product of {a} times {b}", "the result of multiplying {a} by {b}"]},
    "+": {"fr": ["la somme de {a} et {b}", "le total de {a} et {b}", "l'addition de {a} et {b}"],
          "en": ["the sum of {a} and {b}", "the total of {a} and {b}", "the result of adding {a} and {b}"]},
    "-": {"fr": ["la différence entre {a} et {b}", "le résultat de {a} moins {b}", "ce qui reste de {a} si on enlève {b}"],
          "en": ["the difference between {a} and {b}", "the result of {a} minus {b}", "the amount left from {a} after taking away {b}"]},
    "/": {"fr": ["le quotient de {a} par {b}", "le résultat de {a} divisé par {b}", "la division de {a} par {b}"],
          "en": ["the quotient of {a} by {b}", "the result of {a} divided by {b}", "the division of {a} by {b}"]},
}
ARITH_ANSWERS = {
    "fr": ["{e} = {out}.", "Cela fait {out}.", "Ça fait {out}.", "Le résultat est {out}.", "{e} donne {out}.", "Réponse : {out}."],
    "en": ["{e} = {out}.", "That's {out}.", "It's {out}.", "The answer is {out}.", "{e} gives {out}.", "Answer: {out}."],
}

# ---------------------------------------------------------------------------------------------------
# conversions: (key, factor, divide?) with unit names per language; {n} the quantity, {u} from-unit, {v} to-unit
# ---------------------------------------------------------------------------------------------------
UNITS = [  # (from fr, to fr, from en, to en, factor, divide)
    ("semaines", "jours", "weeks", "days", 7, False),
    ("heures", "minutes", "hours", "minutes", 60, False),
    ("heures", "secondes", "hours", "seconds", 3600, False),
    ("minutes", "secondes", "minutes", "seconds", 60, False),
    ("jours", "heures", "days", "hours", 24, False),
    ("kilomètres", "mètres", "kilometres", "metres", 1000, False),
    ("mètres", "centimètres", "metres", "centimetres", 100, False),
    ("centimètres", "mètres", "centimetres", "metres", 100, True),
    ("kilogrammes", "grammes", "kilograms", "grams", 1000, False),
    ("grammes", "kilogrammes", "grams", "kilograms", 1000, True),
    ("litres", "millilitres", "litres", "millilitres", 1000, False),
    ("ans", "mois", "years", "months", 12, False),
    ("minutes", "heures", "minutes", "hours", 60, True),
    ("millimètres", "centimètres", "millimetres", "centimetres", 10, True),
    ("jours", "minutes", "days", "minutes", 1440, False),
    ("années", "semaines", "years", "weeks", 52, False),
]
CONVERT_Q = {
    "fr": ["Combien de {v} y a-t-il dans {n} {u} ?", "{n} {u}, ça fait combien de {v} ?", "Convertis {n} {u} en {v}.",
           "Combien de {v} dans {n} {u} ?", "Ça fait combien de {v}, {n} {u} ?", "Je voudrais convertir {n} {u} en {v}.",
           "cb de {v} dans {n} {u}", "Peux-tu convertir {n} {u} en {v} ?", "J'ai besoin de savoir combien font {n} {u} en {v}.",
           "{n} {u} en {v} stp", "Dis-moi combien de {v} il y a dans {n} {u}.", "Tu peux me convertir {n} {u} en {v} ?"],
    "en": ["How many {v} are there in {n} {u}?", "Convert {n} {u} to {v}.", "{n} {u} is how many {v}?", "How many {v} in {n} {u}?",
           "whats {n} {u} in {v}", "Could you convert {n} {u} into {v}?", "I need {n} {u} in {v}.",
           "Quick one: how many {v} in {n} {u}?", "Tell me how many {v} make {n} {u}.", "{n} {u} to {v} pls",
           "Can you work out how many {v} there are in {n} {u}?", "Combien de {v} in {n} {u}? (answer in English)"],
}
CONVERT_A = {
    "fr": ["Il y a {out} {v} dans {n} {u}.", "{n} {u} = {out} {v}.", "Cela fait {out} {v}.", "Ça fait {out} {v}.",
           "{n} {u} font {out} {v}."],
    "en": ["There are {out} {v} in {n} {u}.", "{n} {u} = {out} {v}.", "That's {out} {v}.", "It comes to {out} {v}.",
           "{n} {u} make {out} {v}."],
}

# money: tip / percentage of a price; {b} the bill or price, {p} the percentage
TIP_Q = {
    "fr": ["L'addition est de {b} € et je veux laisser {p} % de pourboire. Combien je laisse ?",
           "On a payé {b} € au restaurant. Un pourboire de {p} %, ça fait combien ?",
           "Quel pourboire pour une note de {b} € à {p} % ?", "{p} % de pourboire sur {b} €, ça fait combien ?",
           "Je dois laisser {p} % sur une addition de {b} euros, combien ça fait ?"],
    "en": ["The bill is ${b} and I want to leave a {p}% tip. How much is the tip?", "We paid {b} dollars for dinner. What is a {p}% tip?",
           "What tip should I leave on a ${b} bill at {p}%?", "{p}% tip on ${b}, how much is that?",
           "I need to tip {p}% on a {b} dollar bill, how much?"],
}
TIP_A = {"fr": ["Le pourboire est de {out} €.", "Cela fait {out} € de pourboire.", "Vous laissez {out} €."],
         "en": ["The tip is ${out}.", "That's a ${out} tip.", "You leave ${out}."]}

# integer division and remainder; {a} dividend, {b} divisor
DIVMOD_Q = {
    "both": {"fr": ["Quel est le quotient et le reste de la division de {a} par {b} ?", "{a} divisé par {b} : quotient et reste ?",
                    "Division euclidienne de {a} par {b} ?", "Fais la division entière de {a} par {b}, avec le reste.",
                    "Donne-moi le quotient et le reste de {a} ÷ {b}."],
             "en": ["What are the quotient and remainder of {a} divided by {b}?", "{a} divided by {b}: quotient and remainder?",
                    "Integer division of {a} by {b}, with the remainder?", "Do the long division {a} ÷ {b} and give the remainder.",
                    "Give me {a} // {b} and {a} % {b}."]},
    "rem": {"fr": ["Quel est le reste de {a} divisé par {b} ?", "Combien reste-t-il quand on divise {a} par {b} ?",
                   "{a} modulo {b} ?", "Calcule {a} mod {b}.", "Le reste de la division de {a} par {b}, c'est combien ?"],
            "en": ["What is the remainder of {a} divided by {b}?", "What is left over when you divide {a} by {b}?",
                   "{a} modulo {b}?", "Compute {a} mod {b}.", "whats the remainder of {a} / {b}"]},
    "quo": {"fr": ["Combien de fois {b} entre dans {a} ?", "Combien de fois y a-t-il {b} dans {a} (en entier) ?",
                   "Quel est le quotient entier de {a} par {b} ?", "Division entière : {a} par {b} ?"],
            "en": ["How many times does {b} go into {a}?", "How many whole times does {b} fit in {a}?",
                   "What is the integer quotient of {a} by {b}?", "Floor division: {a} by {b}?"]},
}
DIVMOD_A = {
    "both": {"fr": ["Quotient : {l[0]}, reste : {l[1]}.", "{a} = {b} × {l[0]} + {l[1]} : le quotient est {l[0]} et le reste {l[1]}.",
                    "On obtient un quotient de {l[0]} et un reste de {l[1]}."],
             "en": ["Quotient: {l[0]}, remainder: {l[1]}.", "{a} = {b} × {l[0]} + {l[1]}: quotient {l[0]}, remainder {l[1]}.",
                    "The quotient is {l[0]} and the remainder is {l[1]}."]},
    "rem": {"fr": ["Le reste est {out}.", "{a} mod {b} = {out}.", "Il reste {out}."],
            "en": ["The remainder is {out}.", "{a} mod {b} = {out}.", "That leaves {out}."]},
    "quo": {"fr": ["{b} entre {out} fois dans {a}.", "Le quotient entier est {out}.", "Ça fait {out} fois."],
            "en": ["{b} goes into {a} {out} times.", "The integer quotient is {out}.", "That's {out} times."]},
}

# ---------------------------------------------------------------------------------------------------
# story word problems: 2-3 sentences; a story frame per kind, objects with a price range
# ---------------------------------------------------------------------------------------------------
SHOP_ITEMS = [  # (fr plural, en plural, price low, price high)
    ("cahiers", "notebooks", 1, 6), ("stylos", "pens", 1, 4), ("baguettes", "baguettes", 1, 2), ("croissants", "croissants", 1, 3),
    ("livres", "books", 6, 25), ("tee-shirts", "T-shirts", 8, 30), ("places de cinéma", "cinema tickets", 7, 14),
    ("kilos de pommes", "kilos of apples", 2, 5), ("bouteilles d'eau", "bottles of water", 1, 3), ("pizzas", "pizzas", 8, 16),
    ("cafés", "coffees", 2, 5), ("paquets de pâtes", "packs of pasta", 1, 3), ("billets de train", "train tickets", 15, 90),
    ("ballons", "balls", 5, 25), ("plantes", "plants", 4, 20), ("jeux vidéo", "video games", 20, 70),
    ("gâteaux", "cakes", 3, 18), ("bougies", "candles", 2, 9), ("crayons", "pencils", 1, 3), ("tasses", "mugs", 4, 12),
]
SHOP_Q = {
    "fr": ["{name} va au marché et achète {n1} {i1} à {p1} € l'unité et {n2} {i2} à {p2} € l'unité. Combien dépense {name} en tout ?",
           "Pour la rentrée, {name} prend {n1} {i1} à {p1} € pièce et {n2} {i2} à {p2} € pièce. Quel est le montant total ?",
           "{name} fait des courses : {n1} {i1} ({p1} € chacun) et {n2} {i2} ({p2} € chacun). Quel est le total à payer ?",
           "J'achète {n1} {i1} à {p1} € et {n2} {i2} à {p2} €. Ça me coûte combien au total ?",
           "Au magasin, {name} choisit {n1} {i1} à {p1} euros et {n2} {i2} à {p2} euros. Quelle est la facture ?"],
    "en": ["{name} goes to the market and buys {n1} {i1} at ${p1} each and {n2} {i2} at ${p2} each. How much does {name} spend in total?",
           "For school, {name} gets {n1} {i1} for ${p1} apiece and {n2} {i2} for ${p2} apiece. What is the total?",
           "{name} is shopping: {n1} {i1} (${p1} each) and {n2} {i2} (${p2} each). How much does it cost altogether?",
           "I buy {n1} {i1} at {p1} dollars and {n2} {i2} at {p2} dollars. What do I pay in total?",
           "At the shop, {name} picks {n1} {i1} at ${p1} and {n2} {i2} at ${p2}. What's the bill?"],
}
SHOP3_Q = {
    "fr": ["{name} achète {n1} {i1} à {p1} €, {n2} {i2} à {p2} € et {n3} {i3} à {p3} €. Combien ça coûte en tout ?",
           "Liste de courses {de_name} : {n1} {i1} à {p1} € pièce, {n2} {i2} à {p2} € et {n3} {i3} à {p3} €. Total ?",
           "Dans mon panier : {n1} {i1} ({p1} €), {n2} {i2} ({p2} €) et {n3} {i3} ({p3} €), prix à l'unité. Combien ça fait ?"],
    "en": ["{name} buys {n1} {i1} at ${p1}, {n2} {i2} at ${p2} and {n3} {i3} at ${p3}. How much is that?",
           "{name}'s shopping list: {n1} {i1} at ${p1} each, {n2} {i2} at ${p2} and {n3} {i3} at ${p3}. Total?",
           "In my basket: {n1} {i1} (${p1}), {n2} {i2} (${p2}) and {n3} {i3} (${p3}), unit prices. What does it come to?"],
}
SHOP_A = {"fr": ["Cela fait {out} € en tout.", "Le total est de {out} €.", "Il faut payer {out} €.", "Total : {out} €."],
          "en": ["That's ${out} in total.", "The total is ${out}.", "It comes to ${out}.", "Total: ${out}."]}

SHARE_THINGS = [("bonbons", "sweets"), ("billes", "marbles"), ("cartes", "cards"), ("euros", "euros"), ("biscuits", "cookies"),
                ("autocollants", "stickers"), ("pommes", "apples"), ("timbres", "stamps"), ("crêpes", "pancakes")]
SHARE_Q = {
    "fr": ["{name} a {a} {t} et veut les partager équitablement entre {b} amis. Combien chacun en reçoit-il ?",
           "On a {a} {t} à répartir entre {b} enfants, de façon égale. Combien par enfant ?",
           "{name} partage {a} {t} en {b} parts égales. Combien y en a-t-il dans chaque part ?",
           "Il y a {a} {t} pour {b} personnes. Si chacun a la même quantité, ça fait combien par personne ?"],
    "en": ["{name} has {a} {t} and wants to share them equally among {b} friends. How many does each get?",
           "We have {a} {t} to split evenly between {b} kids. How many per kid?",
           "{name} divides {a} {t} into {b} equal groups. How many are in each group?",
           "There are {a} {t} for {b} people. If everyone gets the same amount, how many each?"],
}
SHARE_A = {"fr": ["Chacun reçoit {out} {t}.", "Ça fait {out} {t} par personne.", "{out} {t} chacun."],
           "en": ["Each gets {out} {t}.", "That's {out} {t} each.", "{out} {t} per person."]}

TRAVEL_Q = {
    "fr": ["{name} doit parcourir {d} km à {s} km/h. Combien d'heures dure le trajet ?",
           "Un train roule à {s} km/h. Combien de temps lui faut-il pour faire {d} km ?",
           "{name} part en vélo électrique pour {d} km, à une vitesse moyenne de {s} km/h. Durée du trajet en heures ?",
           "Distance : {d} km. Vitesse : {s} km/h. Combien d'heures de route ?"],
    "en": ["{name} has to drive {d} km at {s} km/h. How many hours does the trip take?",
           "A train travels at {s} km/h. How long does it take to cover {d} km?",
           "{name} rides {d} km at an average speed of {s} km/h. How many hours is the ride?",
           "Distance: {d} km. Speed: {s} km/h. How many hours on the road?"],
}
TRAVEL_A = {"fr": ["Le trajet dure {out} heures.", "Il faut {out} h.", "Cela prend {out} heures."],
            "en": ["The trip takes {out} hours.", "It takes {out} h.", "That's {out} hours."]}

SAVE_Q = {
    "fr": ["{name} met {m} € de côté chaque mois. Quelle somme aura été économisée au bout de {k} mois ?",
           "J'économise {m} euros par mois pendant {k} mois. Combien j'aurai en tout ?",
           "{name} veut s'acheter un vélo. {name} épargne {m} € par mois. Combien sera de côté après {k} mois ?",
           "Chaque mois, {name} verse {m} € sur son livret. Quel montant au bout de {k} mois (sans intérêts) ?"],
    "en": ["{name} saves ${m} every month. How much will {name} have saved after {k} months?",
           "I put aside {m} dollars a month for {k} months. How much do I end up with?",
           "{name} wants a new bike and saves ${m} per month. How much after {k} months?",
           "Every month {name} deposits ${m} into a savings account. Total after {k} months (no interest)?"],
}
SAVE_A = {"fr": ["Au bout de {k} mois : {out} €.", "Cela fait {out} € économisés.", "Le total est de {out} €."],
          "en": ["After {k} months: ${out}.", "That's ${out} saved.", "The total is ${out}."]}

RECIPE_INGREDIENTS = [("grammes de farine", "grams of flour"), ("grammes de sucre", "grams of sugar"), ("œufs", "eggs"),
                      ("grammes de beurre", "grams of butter"), ("millilitres de lait", "millilitres of milk"),
                      ("grammes de chocolat", "grams of chocolate"), ("grammes de riz", "grams of rice")]
RECIPE_Q = {
    "fr": ["Une recette pour {p} personnes demande {q} {ing}. Combien en faut-il pour {r} personnes ?",
           "Pour {p} personnes, il faut {q} {ing}. Je reçois {r} personnes : quelle quantité prévoir ?",
           "Ma recette de gâteau utilise {q} {ing} pour {p} parts. Combien pour {r} parts ?",
           "{name} adapte une recette de {p} à {r} personnes. La recette originale contenait {q} {ing}. Combien en faut-il maintenant ?"],
    "en": ["A recipe for {p} people needs {q} {ing}. How much is needed for {r} people?",
           "For {p} people you need {q} {ing}. I'm hosting {r} people: how much should I use?",
           "My cake recipe uses {q} {ing} for {p} servings. How much for {r} servings?",
           "{name} scales a recipe from {p} to {r} people. It had {q} {ing}. How much now?"],
}
RECIPE_A = {"fr": ["Il faut {out} {ing}.", "Prévoyez {out} {ing}.", "Cela fait {out} {ing}."],
            "en": ["You need {out} {ing}.", "Use {out} {ing}.", "That's {out} {ing}."]}

AGE_Q = {
    "fr": ["{name} a {a} ans et son grand-père a {b} ans. Quelle est leur différence d'âge ?",
           "{name} est né en {y1} et sa sœur en {y2}. Combien d'années les séparent ?",
           "Ma mère a {b} ans et j'ai {a} ans. Combien d'années d'écart entre nous ?",
           "{name} a {a} ans. Dans combien d'années {name} aura {b} ans ?"],
    "en": ["{name} is {a} and their grandfather is {b}. What is the age difference?",
           "{name} was born in {y1} and their sister in {y2}. How many years apart are they?",
           "My mum is {b} and I'm {a}. How many years between us?",
           "{name} is {a} years old. In how many years will {name} be {b}?"],
}
AGE_A = {"fr": ["Il y a {out} ans d'écart.", "La différence est de {out} ans.", "Cela fait {out} ans."],
         "en": ["They are {out} years apart.", "The difference is {out} years.", "That's {out} years."]}

ROOM_NAMES = [("le salon", "living room"), ("la chambre", "bedroom"), ("la cuisine", "kitchen"), ("le bureau", "office"),
              ("le garage", "garage"), ("la salle de bain", "bathroom"), ("la terrasse", "patio"), ("le grenier", "attic")]
ROOM_Q = {
    "fr": ["{Room} {de_name} mesure {L} m de long et {W} m de large. Quelle est sa surface ?",
           "Je veux poser du parquet dans {room}, qui fait {L} m sur {W} m. Combien de m² faut-il ?",
           "{name} repeint le sol : {room} est un rectangle de {L} m par {W} m. Quelle aire couvrir ?",
           "Chez moi, {room} fait {L} m × {W} m. Ça fait combien de mètres carrés ?"],
    "en": ["{name}'s {room} is {L} m long and {W} m wide. What is its area?",
           "I want to lay flooring in a {L} m by {W} m {room}. How many square metres do I need?",
           "{name} is painting the floor of a rectangular {room}, {L} m by {W} m. What area is that?",
           "My {room} is {L} m × {W} m. How many square metres is that?"],
}
ROOM_A = {"fr": ["La surface est de {out} m².", "Il faut {out} m².", "Cela fait {out} m²."],
          "en": ["The area is {out} m².", "You need {out} m².", "That's {out} m²."]}

# ---------------------------------------------------------------------------------------------------
# negatives: answered in prose, no code
# ---------------------------------------------------------------------------------------------------
# (fr concept, fr explanation, en concept, en explanation): asked "explain what X is", answered WITHOUT code
EXPLAIN = [
    ("une boucle for", "Une boucle for répète les mêmes instructions pour chaque élément d'une séquence, par exemple chaque nombre d'une liste, puis s'arrête quand il n'y en a plus.",
     "a for loop", "A for loop repeats the same instructions once for each item of a sequence, such as every number in a list, and stops when the items run out."),
    ("une variable", "Une variable est une étiquette qui donne un nom à une valeur gardée en mémoire, pour pouvoir la réutiliser ou la modifier plus tard.",
     "a variable", "A variable is a label that gives a name to a value kept in memory, so the program can reuse or change it later."),
    ("la récursivité", "La récursivité, c'est quand une fonction s'appelle elle-même sur un problème plus petit, jusqu'à un cas simple qu'elle sait résoudre directement.",
     "recursion", "Recursion is when a function calls itself on a smaller version of the problem, until it reaches a simple case it can answer directly."),
    ("une fonction", "Une fonction est un bloc d'instructions qui porte un nom, reçoit des paramètres et renvoie un résultat ; on l'écrit une fois et on l'appelle autant qu'on veut.",
     "a function", "A function is a named block of instructions that takes parameters and returns a result; you write it once and call it as often as you like."),
    ("une condition if", "Une condition if exécute un bloc seulement si un test est vrai ; avec else, on prévoit ce qui se passe sinon.",
     "an if statement", "An if statement runs a block only when a test is true; with else you say what happens otherwise."),
    ("une classe", "Une classe est un modèle qui décrit des objets : leurs données (attributs) et ce qu'ils savent faire (méthodes).",
     "a class", "A class is a blueprint for objects: the data they hold (attributes) and what they can do (methods)."),
    ("une API", "Une API est une interface qui permet à deux programmes de communiquer selon des règles fixées, sans connaître le fonctionnement interne de l'autre.",
     "an API", "An API is an interface that lets two programs talk to each other under agreed rules, without knowing how the other works inside."),
    ("un bug", "Un bug est une erreur dans un programme qui le fait se comporter autrement que prévu.",
     "a bug", "A bug is a mistake in a program that makes it behave differently from what was intended."),
    ("un compilateur", "Un compilateur traduit un programme écrit dans un langage lisible par l'humain en code que la machine peut exécuter.",
     "a compiler", "A compiler translates a program written in a human-readable language into code the machine can run."),
    ("un booléen", "Un booléen est une valeur qui ne peut être que vraie ou fausse ; on s'en sert pour les conditions.",
     "a boolean", "A boolean is a value that can only be true or false; it is what conditions are made of."),
    ("une chaîne de caractères", "Une chaîne de caractères est un texte pour l'ordinateur : une suite de lettres, chiffres ou symboles, entre guillemets.",
     "a string", "A string is text for the computer: a sequence of letters, digits or symbols, written between quotes."),
    ("une boucle while", "Une boucle while répète un bloc tant qu'une condition reste vraie ; il faut que quelque chose finisse par la rendre fausse.",
     "a while loop", "A while loop repeats a block as long as a condition stays true; something inside must eventually make it false."),
    ("un index", "Un index est la position d'un élément dans une liste ; en Python on commence à compter à zéro.",
     "an index", "An index is the position of an item in a list; in Python counting starts at zero."),
    ("la complexité d'un algorithme", "La complexité mesure comment le temps ou la mémoire d'un algorithme augmente quand la taille des données grandit.",
     "the complexity of an algorithm", "Complexity describes how an algorithm's time or memory grows as the input gets larger."),
    ("une base de données", "Une base de données est un ensemble organisé d'informations qu'un logiciel sait stocker, chercher et mettre à jour.",
     "a database", "A database is an organised collection of information that software can store, search and update."),
    ("le cloud", "Le cloud, c'est utiliser des serveurs distants, via Internet, pour stocker des fichiers ou faire tourner des programmes.",
     "the cloud", "The cloud means using remote servers over the internet to store files or run programs."),
]
EXPLAIN_Q = {
    "fr": ["Explique-moi ce qu'est {c}.", "C'est quoi {c} ? Explique sans code.", "Je débute : {c}, ça veut dire quoi ?",
           "En une ou deux phrases, qu'est-ce que {c} ?", "Tu peux m'expliquer {c} simplement ?", "Qu'est-ce qu'on appelle {c} en informatique ?",
           "Explique {c} à un enfant de 10 ans.", "J'ai pas compris ce qu'est {c}, tu m'expliques ?"],
    "en": ["Explain what {c} is.", "What is {c}? No code, just explain.", "I'm a beginner: what does {c} mean?",
           "In a sentence or two, what is {c}?", "Can you explain {c} simply?", "What do people mean by {c} in programming?",
           "Explain {c} to a 10-year-old.", "i dont get what {c} is, can u explain"],
}
HISTORY = [  # (fr q, fr a, en q, en a)
    ("Quand est tombé le mur de Berlin ?", "Le mur de Berlin est tombé le 9 novembre 1989.", "When did the Berlin Wall fall?", "The Berlin Wall fell on 9 November 1989."),
    ("Quand a commencé la Première Guerre mondiale ?", "La Première Guerre mondiale a commencé en 1914 et s'est terminée en 1918.",
     "When did the First World War start?", "The First World War started in 1914 and ended in 1918."),
    ("Quand s'est terminée la Seconde Guerre mondiale ?", "Elle s'est terminée en 1945 : le 8 mai en Europe, le 2 septembre en Asie.",
     "When did the Second World War end?", "It ended in 1945: on 8 May in Europe and on 2 September in Asia."),
    ("En quelle année Christophe Colomb a-t-il atteint l'Amérique ?", "Christophe Colomb a atteint les Amériques en 1492.",
     "What year did Columbus reach America?", "Columbus reached the Americas in 1492."),
    ("Quand l'euro est-il arrivé dans les portefeuilles ?", "Les pièces et billets en euros circulent depuis le 1er janvier 2002.",
     "When did euro notes and coins come into use?", "Euro notes and coins have been in circulation since 1 January 2002."),
    ("Qui était Napoléon Bonaparte ?", "Napoléon Bonaparte fut empereur des Français de 1804 à 1815, après avoir été général pendant la Révolution.",
     "Who was Napoleon Bonaparte?", "Napoleon Bonaparte was Emperor of the French from 1804 to 1815, after rising as a general during the Revolution."),
    ("Quand a été inventée l'imprimerie de Gutenberg ?", "Gutenberg a mis au point l'imprimerie à caractères mobiles vers 1450.",
     "When did Gutenberg invent the printing press?", "Gutenberg developed movable-type printing around 1450."),
    ("Quand le Web a-t-il été inventé ?", "Tim Berners-Lee a inventé le World Wide Web en 1989 au CERN.",
     "When was the Web invented?", "Tim Berners-Lee invented the World Wide Web in 1989 at CERN."),
    ("En quelle année a eu lieu la prise de la Bastille ?", "La prise de la Bastille a eu lieu le 14 juillet 1789.",
     "When was the storming of the Bastille?", "The Bastille was stormed on 14 July 1789."),
]
ADVICE = {
    "fr": [("J'ai 30 minutes pour réviser, comment m'organiser ?", "Fais 25 minutes de travail concentré sur un seul sujet, puis 5 minutes pour te tester sur ce que tu viens de voir."),
           ("Combien d'eau faut-il boire par jour ?", "On conseille en général autour de 1,5 à 2 litres par jour pour un adulte, plus s'il fait chaud ou si tu fais du sport."),
           ("Je veux courir 5 km, par où commencer ?", "Alterne marche et course 3 fois par semaine, en allongeant un peu la course chaque semaine ; en 6 à 8 semaines, 5 km deviennent accessibles."),
           ("J'ai 2 heures de libre ce soir, une idée ?", "Un bon film, une balade, ou avancer un projet perso qui te tient à cœur : choisis ce qui te repose vraiment."),
           ("Comment retenir 10 mots de vocabulaire par jour ?", "Utilise des fiches et revois-les à intervalles croissants : le lendemain, trois jours après, puis une semaine après."),
           ("Je commence un nouveau travail lundi à 9 h, des conseils ?", "Arrive un peu en avance, note les prénoms, pose des questions et n'hésite pas à demander de l'aide la première semaine."),
           ("Combien d'heures de sommeil pour un ado de 15 ans ?", "On recommande 8 à 10 heures par nuit à cet âge."),
           ("J'ai 100 € à offrir en cadeau, tu as des idées ?", "Une expérience (un concert, un atelier), un beau livre avec un petit mot, ou un objet lié à sa passion.")],
    "en": [("I have 30 minutes to study, how should I use them?", "Do 25 minutes of focused work on one topic, then 5 minutes testing yourself on what you just covered."),
           ("How much water should I drink a day?", "Around 1.5 to 2 litres a day is usual advice for an adult, more when it's hot or you exercise."),
           ("I want to run 5 km, where do I start?", "Alternate walking and running 3 times a week, running a bit longer each week; in 6 to 8 weeks 5 km becomes doable."),
           ("I have 2 free hours tonight, any ideas?", "A good film, a walk, or some time on a personal project you care about: pick what actually relaxes you."),
           ("How can I learn 10 new words a day?", "Use flashcards and review them at growing intervals: the next day, three days later, then a week later."),
           ("I start a new job on Monday at 9, any tips?", "Arrive a little early, write down names, ask questions and don't hesitate to ask for help in the first week."),
           ("How much sleep does a 15-year-old need?", "Teenagers are advised to get 8 to 10 hours a night."),
           ("I have $100 for a gift, any ideas?", "An experience (a concert, a workshop), a nice book with a note, or something linked to their hobby.")],
}
SMALLTALK = {
    "fr": [("Merci pour ton aide !", "Avec plaisir ! Reviens quand tu veux."), ("Super, merci !", "De rien, content d'avoir pu aider !"),
           ("Tu es génial", "Merci, c'est gentil ! Je suis là si tu as d'autres questions."), ("Je m'ennuie", "On peut discuter, ou je peux te proposer une énigme ou une idée d'activité !"),
           ("Quel temps fait-il chez toi ?", "Je n'ai pas de fenêtre, mais j'espère qu'il fait beau chez toi !"), ("Bon week-end !", "Merci, bon week-end à toi aussi !"),
           ("Parfait, c'est tout pour aujourd'hui", "Très bien, bonne fin de journée !"), ("Ok merci", "Je t'en prie !"),
           ("Tu dors parfois ?", "Non, je suis un programme : je ne dors pas, mais je ne me fatigue pas non plus !"),
           ("Salut, ça va bien ?", "Ça va très bien, merci ! Et toi, qu'est-ce que je peux faire pour toi ?")],
    "en": [("Thanks for your help!", "My pleasure! Come back any time."), ("Great, thanks!", "You're welcome, glad I could help!"),
           ("You're awesome", "Thank you, that's kind! I'm here if you have more questions."), ("I'm bored", "We could chat, or I can suggest a riddle or something to do!"),
           ("What's the weather like where you are?", "I don't have a window, but I hope it's nice where you are!"), ("Have a nice weekend!", "Thanks, you too!"),
           ("Perfect, that's all for today", "Great, have a good rest of your day!"), ("ok thx", "You're welcome!"),
           ("Do you ever sleep?", "No, I'm a program: I don't sleep, but I don't get tired either!"),
           ("Hey, how's it going?", "Going well, thanks! What can I do for you?")],
}
CONCEPT_Q = {   # framings for the short definitions of routing.CONCEPTS
    "fr": ["Qu'est-ce que {c} ?", "C'est quoi {c} ?", "Explique-moi ce qu'est {c}.", "Peux-tu définir {c} ?", "Définis {c} en une phrase.",
           "Que veut dire {c} ?", "Tu peux me dire ce qu'est {c} ?", "c quoi {c}"],
    "en": ["What is {c}?", "Can you explain what {c} is?", "Define {c}.", "What does {c} mean?", "Give me a one-line definition of {c}.",
           "whats {c}", "Could you tell me what {c} is?", "Quick one: what is {c}?"],
}

# prefixes that compose with any request sentence: a generator's question list shorter than 3 phrasings is
# extended with them (build.python_candidate), so that no question template is shared by the splits
TASK_PREFIX = {
    "fr": ["En Python : ", "Petit exercice : ", "Aide-moi : ", "Pour mon projet, ", "Avec un petit script : ", "Exercice de code : ",
           "J'ai besoin d'aide, ", "Pour un devoir : "],
    "en": ["In Python: ", "Little exercise: ", "Help me out: ", "For my project, ", "With a small script: ", "Coding exercise: ",
           "I need a hand, ", "For homework: "],
}
