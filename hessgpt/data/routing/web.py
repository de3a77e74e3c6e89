"""`web` samples: HTML/CSS/JS artifacts (code_lang html/css/js), never executed, no tool message."""

import random

from hessgpt.data.routing.candidate import Candidate
from hessgpt.data.routing.words import EN_NAMES, FR_NAMES, WEB_LEADS, _wrap


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
