"""`negative` samples, answered directly without code: greetings, facts, capitals, definitions, opinions, and
requests that contain digits or code words yet need no code."""

import random
import re

from hessgpt.data.routing import phrasing as P
from hessgpt.data.routing.candidate import Candidate
from hessgpt.data.routing.words import _wrap


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
