"""The wording every routing sample shares: the wrapping of a request (`_wrap`: greeting, politeness, thanks;
each list padded with "" so that most requests have none), the lead-ins before a code block, numbers written
the French way (`_num`), and the words the generators draw from (people, words, sentences, fruits)."""

import random
import re


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



# words the generators draw from (people, words, sentences, fruits)
FR_NAMES = ["Marie", "Lucas", "Emma", "Hugo", "Léa", "Nathan", "Chloé", "Louis", "Inès", "Jules", "Camille", "Yanis",
            "Manon", "Théo", "Zoé", "Gabriel", "Jade", "Raphaël", "Sarah", "Adam", "Lina", "Arthur", "Louise", "Paul",
            "Alice", "Mathis", "Clara", "Noé", "Julie", "Sacha", "Anaïs", "Karim", "Amira", "Bastien", "Élodie", "Mehdi"]
EN_NAMES = ["Alice", "Bob", "Emma", "Liam", "Olivia", "Noah", "Ava", "Ethan", "Mia", "Jack", "Sophia", "Leo",
            "Grace", "Henry", "Chloe", "Oscar", "Lily", "Samuel", "Ella", "James", "Ruby", "Daniel", "Zoe", "Max",
            "Isla", "Lucas", "Hannah", "Ryan", "Amelia", "Owen", "Nora", "Dylan", "Maya", "Caleb", "Ivy", "Adrian"]
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
FRUITS = {"fr": ["pomme", "poire", "banane", "kiwi", "orange", "fraise", "cerise", "mangue", "prune", "raisin",
                 "ananas", "citron", "abricot", "pêche", "melon", "pastèque", "figue", "myrtille", "framboise", "datte",
                 "noix", "carotte", "tomate", "courgette", "oignon", "poivron", "radis", "navet", "salade", "chou"],
          "en": ["apple", "pear", "banana", "kiwi", "orange", "strawberry", "cherry", "mango", "plum", "grape",
                 "pineapple", "lemon", "apricot", "peach", "melon", "watermelon", "fig", "blueberry", "raspberry", "date",
                 "walnut", "carrot", "tomato", "zucchini", "onion", "pepper", "radish", "turnip", "lettuce", "cabbage"]}
