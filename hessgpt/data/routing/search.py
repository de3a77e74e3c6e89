"""Search conversations over a local corpus: when to `<search>`, what to write in the query, how to answer.

    python -m hessgpt.data.routing.search --n 4000 --out data/routing_search.jsonl [--langs fr,en] [--seed 0]
                                          [--test-n 400] [--val-fraction 0.05] [--k 3]
        -> OUT (train) + OUT.val.jsonl (dev) + OUT.test.jsonl (test) + OUT.stats.json

Three kinds, French and English, records in the format of hessgpt.data.routing (`category: "search"`):

- `answerable`: a question whose answer is in the corpus -> an assistant message with `search` (a query
  *rewritten* from the question: keywords, another word order, sometimes without accents; never the
  question itself) -> the tool message `search` holding `format_hits` of the index's real top-k hits (what
  the router's run_search injects; mask 0 when rendered) -> an answer built from the hit that states the
  fact, citing it as `[n] (title)`. A sample whose hits do not contain the answer is dropped and counted.
- `unanswerable`: a question about a country no page mentions, or a fact no page states (population,
  national anthem) -> a search -> its real hits -> "not found" (no invented fact). A sample whose hits do
  mention the entity (absent country) or the relation is dropped and counted.
- `no_search`: small talk and writing requests answered directly, no search.

The injected hits are those the router gives: above the index's relevance floor (SearchIndex.min_coverage),
so most absent-country questions read "No results."; which samples exist is decided on the hits with the
floor off, so every split, the frozen test split above all, holds the same prompts whatever the floor.

The facts come from the table `facts.json` next to the corpus pages (hessgpt/data/search_corpus: the pages
of `docs/` state them); retrieval is the real SearchIndex (snowball-fr-en analyzer) over `docs/`.
Splits follow hessgpt.data.routing: train / dev / test never share an entity (country), a question
template, a query template or an answer template (the `partition` of each list by its sha1 bucket), and a
user prompt appears in one split only. The record keeps `entity`, `relation`, `template` and the cited
`passage` for audits, and `route`: {"search": bool, "answerable": bool | None}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hessgpt.data.routing.output import split_paths, test_path, write_jsonl
# _wrap: the routing data's greeting/politeness/casing variations, drawn from the split's part of each list
from hessgpt.data.routing.words import _wrap
from hessgpt.data.routing.splits import SPLIT_SEED_OFFSET, SPLITS, SplitRandom, partition
from hessgpt.errors import HessGPTError
from hessgpt.tools.search import DEFAULT_MIN_COVERAGE, Hit, SearchIndex, fold, format_hits

CORPUS = Path(__file__).resolve().parents[1] / "search_corpus"   # hessgpt/data/search_corpus (package data)
LANGS = ("fr", "en")
RELATIONS = ("capital", "currency", "continent")          # stated by every country page
ABSENT_RELATIONS = ("population", "anthem")               # stated by no page
# words whose presence in a hit would mean the corpus may talk about an "absent" relation
ABSENT_WORDS = {"population": ("population", "habitant", "inhabitant", "peupl", "populous"),
                "anthem": ("hymne", "anthem")}
KINDS = {"answerable": 0.6, "unanswerable": 0.25, "no_search": 0.15}
K = 3   # hits per search: the router's run_search uses k=3
MAX_IDLE = 3000   # draws in a row without a new prompt before a split is declared exhausted

# ---------------------------------------------------------------------------------------------------
# phrasings. {name}: the country; French also {de} ("du Canada"), {au} ("au Canada"), {le} ("le Canada")
# ---------------------------------------------------------------------------------------------------
QUESTIONS = {
    "fr": {
        "capital": ["Quelle est la capitale {de} ?", "Tu peux me dire quelle est la capitale {de} ?",
                    "C'est quoi la capitale {de} ?", "Quelle ville est la capitale {de} ?",
                    "J'ai oublié la capitale {de}, tu me la rappelles ?", "Dans mes documents, quelle est la capitale {de} ?",
                    "Capitale {de} ?", "Je voudrais connaître la capitale {de}."],
        "currency": ["Quelle est la monnaie {de} ?", "Quelle monnaie utilise-t-on {au} ?", "Avec quelle monnaie paie-t-on {au} ?",
                     "C'est quoi la devise {de} ?", "Je pars {au}, quelle est la monnaie là-bas ?",
                     "Tu sais quelle monnaie a cours {au} ?"],
        "continent": ["Sur quel continent se trouve {le} ?", "{le}, c'est sur quel continent ?", "Sur quel continent est {le} ?",
                      "À quel continent appartient {le} ?", "Dans quel continent se situe {le} ?"],
        "population": ["Combien d'habitants compte {le} ?", "Quelle est la population {de} ?", "{le} a combien d'habitants ?",
                       "Tu connais la population {de} ?"],
        "anthem": ["Quel est l'hymne national {de} ?", "Comment s'appelle l'hymne {de} ?",
                   "Quel est le titre de l'hymne national {de} ?", "L'hymne {de}, c'est lequel ?"],
    },
    "en": {
        "capital": ["What is the capital of {name}?", "Can you tell me the capital of {name}?", "Which city is the capital of {name}?",
                    "What's the capital city of {name}?", "I forgot the capital of {name}, can you remind me?",
                    "Capital of {name}?", "According to my documents, what is the capital of {name}?"],
        "currency": ["What currency does {name} use?", "What is the currency of {name}?", "Which money do people pay with in {name}?",
                     "I'm travelling to {name}, what's the currency there?", "What's the official currency in {name}?"],
        "continent": ["Which continent is {name} on?", "On what continent is {name}?", "What continent does {name} belong to?",
                      "Which continent is {name} part of?", "In which continent is {name} located?"],
        "population": ["How many people live in {name}?", "What is the population of {name}?", "How populous is {name}?",
                       "Do you know the population of {name}?"],
        "anthem": ["What is the national anthem of {name}?", "What's the anthem of {name} called?",
                   "What is the title of the national anthem of {name}?", "Which song is the anthem of {name}?"],
    },
}
QUERIES = {
    "fr": {"capital": ["capitale {name}", "{name} capitale", "{name} ville capitale", "capitale pays {name}", "{name} quelle capitale"],
           "currency": ["monnaie {name}", "{name} monnaie", "{name} monnaie officielle", "devise monnaie {name}", "monnaie utilisée {name}"],
           "continent": ["{name} continent", "continent {name}", "{name} pays situé continent", "{name} situé en", "quel continent {name}"],
           "population": ["population {name}", "{name} nombre habitants", "habitants {name}", "{name} population totale",
                          "nombre d'habitants {name}"],
           "anthem": ["hymne national {name}", "{name} hymne", "{name} hymne national", "titre hymne {name}", "chant national {name}"]},
    "en": {"capital": ["{name} capital", "capital city {name}", "{name} capital city", "capital of country {name}", "{name} which capital"],
           "currency": ["{name} currency", "currency {name}", "{name} official currency", "money used in {name}", "{name} currency name"],
           "continent": ["{name} continent", "continent {name}", "{name} country continent", "{name} located continent",
                         "which continent {name}"],
           "population": ["{name} population", "population {name}", "{name} inhabitants", "{name} number of people",
                          "how many inhabitants {name}"],
           "anthem": ["{name} national anthem", "anthem {name}", "national anthem {name}", "{name} anthem title", "{name} national song"]},
}
FACT = {"fr": {"capital": "la capitale {de} est {value}", "currency": "la monnaie {de} est {value}",
               "continent": "{le} se trouve en {value}"},
        "en": {"capital": "the capital of {name} is {value}", "currency": "the currency of {name} is the {value}",
               "continent": "{name} is in {value}"}}
ANSWERS = {"fr": ["D'après le document [{n}] ({title}), {fact}.", "Selon [{n}] ({title}), {fact}.",
                  "{Fact}, d'après le passage [{n}] ({title}).", "J'ai trouvé la réponse dans [{n}] ({title}) : {fact}.",
                  "Vos documents le disent : {fact} (source : [{n}] {title})."],
           "en": ["According to document [{n}] ({title}), {fact}.", "Per [{n}] ({title}), {fact}.",
                  "{Fact}, according to passage [{n}] ({title}).", "I found it in [{n}] ({title}): {fact}.",
                  "Your documents say so: {fact} (source: [{n}] {title})."]}
TOPIC = {"fr": {"capital": "la capitale {de}", "currency": "la monnaie {de}", "continent": "le continent {de}",
                "population": "la population {de}", "anthem": "l'hymne national {de}"},
         "en": {"capital": "the capital of {name}", "currency": "the currency of {name}", "continent": "which continent {name} is on",
                "population": "the population of {name}", "anthem": "the national anthem of {name}"}}
NOT_FOUND = {"fr": ["Je n'ai pas trouvé {topic} dans les documents indexés, donc je préfère ne pas répondre au hasard.",
                    "Les passages trouvés ne parlent pas de {topic} : je ne peux pas vous donner de réponse fiable à partir de vos documents.",
                    "Aucun document ne mentionne {topic}. Je ne veux pas inventer de réponse.",
                    "Rien dans les documents sur {topic} ; il faudrait une autre source.",
                    "Je ne trouve pas {topic} dans vos documents, je ne peux donc pas l'affirmer."],
             "en": ["I could not find {topic} in the indexed documents, so I won't guess.",
                    "The passages I found don't mention {topic}; I can't give a reliable answer from your documents.",
                    "None of the documents mention {topic}. I'd rather not make up an answer.",
                    "Nothing in the documents covers {topic}; you'd need another source.",
                    "I can't find {topic} in your documents, so I can't state it."]}
LEADS = {"fr": ["", "Je cherche dans vos documents.", "Je regarde dans les documents indexés.", "Je vérifie dans vos documents.",
                "Voyons ce que disent vos documents."],
         "en": ["", "Let me search your documents.", "I'll look it up in the indexed documents.", "Checking your documents.",
                "Let me see what your documents say."]}
NO_SEARCH = {
    "fr": [("Bonjour !", "Bonjour ! Que puis-je faire pour vous ?"),
           ("Merci beaucoup pour ton aide.", "Avec plaisir ! N'hésitez pas si vous avez d'autres questions."),
           ("Comment vas-tu ?", "Très bien, merci ! Que puis-je faire pour vous aujourd'hui ?"),
           ("Traduis « good morning » en français.", "« Good morning » se traduit par « bonjour »."),
           ("Reformule plus poliment : passe-moi le sel.", "Pourriez-vous me passer le sel, s'il vous plaît ?"),
           ("Donne-moi un synonyme de « rapide ».", "Un synonyme de « rapide » : « véloce »."),
           ("Écris une phrase avec le mot « soleil ».", "Le soleil se lève doucement sur la mer."),
           ("Bonne nuit !", "Bonne nuit, à bientôt !"),
           ("Comment dit-on « au revoir » en anglais ?", "En anglais, on dit « goodbye »."),
           ("Quel est le pluriel de « cheval » ?", "Le pluriel de « cheval » est « chevaux »."),
           ("Salut, tu es qui ?", "Je suis HessGPT, un assistant. Je peux répondre à vos questions et chercher dans vos documents."),
           ("Corrige la faute : « ils mangeait une pomme ».", "La phrase correcte est « ils mangeaient une pomme »."),
           ("Donne-moi le contraire de « chaud ».", "Le contraire de « chaud » est « froid »."),
           ("Écris un haïku sur la pluie.", "Gouttes sur le toit\nle jardin boit en silence\nla rue sent la terre")],
    "en": [("Hello!", "Hello! How can I help you?"),
           ("Thanks a lot for your help.", "You're welcome! Let me know if you have more questions."),
           ("How are you?", "I'm doing well, thanks! What can I do for you today?"),
           ("Translate 'bonjour' into English.", "'Bonjour' means 'hello' or 'good morning'."),
           ("Rephrase this more politely: give me the salt.", "Could you please pass me the salt?"),
           ("Give me a synonym of 'fast'.", "A synonym of 'fast' is 'quick'."),
           ("Write a sentence with the word 'river'.", "The river wound slowly through the valley."),
           ("Good night!", "Good night, see you soon!"),
           ("What is the plural of 'mouse'?", "The plural of 'mouse' is 'mice'."),
           ("How do you say goodbye in French?", "In French, you say « au revoir »."),
           ("Hi, who are you?", "I'm HessGPT, an assistant. I can answer your questions and search your documents."),
           ("Fix the mistake: 'she go to school every day'.", "The correct sentence is 'she goes to school every day'."),
           ("Give me the opposite of 'hot'.", "The opposite of 'hot' is 'cold'."),
           ("Write a haiku about rain.", "Drops on the old roof\nthe garden drinks in silence\nthe street smells of earth")],
}

# words for the no-search translation requests (partitioned by split like every list)
WORDS = [("chat", "cat"), ("chien", "dog"), ("maison", "house"), ("pomme", "apple"), ("livre", "book"), ("voiture", "car"),
         ("arbre", "tree"), ("fleur", "flower"), ("soleil", "sun"), ("lune", "moon"), ("eau", "water"), ("pain", "bread"),
         ("fromage", "cheese"), ("école", "school"), ("ville", "city"), ("mer", "sea"), ("montagne", "mountain"),
         ("oiseau", "bird"), ("cheval", "horse"), ("fenêtre", "window"), ("porte", "door"), ("chaise", "chair"),
         ("jardin", "garden"), ("rivière", "river"), ("neige", "snow"), ("pluie", "rain"), ("vent", "wind"),
         ("étoile", "star"), ("ciel", "sky"), ("cuisine", "kitchen")]
TRANSLATE = {"fr": [("Traduis « {fr} » en anglais.", "« {fr} » se dit « {en} » en anglais."),
                    ("Comment dit-on « {fr} » en anglais ?", "En anglais, « {fr} » se dit « {en} »."),
                    ("Que veut dire « {en} » en français ?", "« {en} » veut dire « {fr} » en français."),
                    ("Le mot anglais pour « {fr} », c'est quoi ?", "C'est « {en} »."),
                    ("Tu peux traduire « {en} » en français ?", "Bien sûr : « {en} » se traduit par « {fr} ».")],
             "en": [("Translate '{en}' into French.", "'{en}' is « {fr} » in French."),
                    ("How do you say '{en}' in French?", "In French, '{en}' is « {fr} »."),
                    ("What does « {fr} » mean in English?", "« {fr} » means '{en}' in English."),
                    ("What's the French word for '{en}'?", "It's « {fr} »."),
                    ("Can you translate « {fr} » into English?", "Sure: « {fr} » translates as '{en}'.")]}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _le(de: str, name: str) -> str:
    """French article form from the "de" form: "du Canada" -> "le Canada", "de l'Inde" -> "l'Inde"."""
    return ("le " + name) if de.startswith("du ") else ("l'" + name) if de.startswith("de l'") else ("la " + name)


def states(text: str, value: str) -> bool:
    """Does `text` hold `value` as whole words, accents and case aside? ("Lisbonne" does not state "Lisbon".)"""
    return re.search(rf"(?<!\w){re.escape(fold(value))}(?!\w)", fold(text)) is not None


def _norm(s: str) -> str:
    return " ".join(fold(w) for w in s.replace("?", " ").replace(",", " ").split())


@dataclass
class Facts:
    entities: list[dict]   # {"id", "fr": {...}, "en": {...}}
    absent: list[dict]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Facts":
        p = Path(path)
        if not p.exists():
            raise HessGPTError(f"routing search: no facts table {p}")
        d = json.loads(p.read_text(encoding="utf-8"))
        for e in d.get("entities", []):
            for lang in LANGS:
                missing = {"name", *RELATIONS} - set(e.get(lang, {}))
                if missing:
                    raise HessGPTError(f"routing search: entity {e.get('id')!r} ({lang}) lacks {sorted(missing)} in {p}")
        return cls(d["entities"], d.get("absent", []))


def _names(lang: str, e: dict) -> dict:
    x = e[lang]
    if lang == "fr":
        return {"name": x["name"], "de": x["de"], "au": x["au"], "le": _le(x["de"], x["name"])}
    return {"name": x["name"]}


class CorpusSearch:
    """A SearchIndex whose hits name their page by its path under `root` ("fr/canada.md"), not by a path of
    this machine: what the generated conversations inject, and what `eval tools` gives the router, so the
    model reads at eval time the hits it was trained on."""

    def __init__(self, index: SearchIndex, root: Path | None = None):
        self.index, self.root = index, root

    def page_id(self, path: str) -> str:
        p = Path(path)
        if self.root is not None:
            try:
                p = p.resolve().relative_to(Path(self.root).resolve())
            except ValueError:
                pass
        return p.with_suffix("").as_posix()

    def search(self, query: str, k: int = K, min_coverage: float | None = None) -> list[Hit]:
        return [Hit(path=self.page_id(h.path) + Path(h.path).suffix, title=h.title, snippet=h.snippet, score=h.score,
                    coverage=h.coverage, title_match=h.title_match)
                for h in self.index.search(query, k=k, min_coverage=min_coverage)]

    def close(self) -> None:
        self.index.close()


def shipped_search(folder: str | os.PathLike, corpus: Path = CORPUS,
                   min_coverage: float = DEFAULT_MIN_COVERAGE) -> CorpusSearch:
    """The shipped corpus (corpus/docs) indexed into folder/search.db, as a CorpusSearch."""
    docs = Path(corpus) / "docs"
    return CorpusSearch(build_index(Path(corpus), Path(folder) / "search.db", min_coverage), docs)


class SearchConversations:
    """Generates records split by split; `index` is a SearchIndex over the corpus pages."""

    def __init__(self, facts: Facts, index: SearchIndex, k: int = K, corpus_docs: Path | None = None):
        self.facts, self.k = facts, k
        self.search = CorpusSearch(index, corpus_docs)
        self.stats = {s: Counter() for s in SPLITS}
        self._wrap_rng = SplitRandom(0)
        self.misses: list[str] = []   # queries whose hits did not hold the answer (dropped samples)

    def _pid(self, path: str) -> str:
        return self.search.page_id(path)

    def _search(self, query: str) -> tuple[list[Hit], list[Hit]]:
        """(all top-k hits, the hits above the index's relevance floor: what the router injects), their paths
        made relative to the corpus (no machine-specific path in the data). Which samples exist is decided on
        the first list, so the splits (the frozen test split above all) do not depend on the floor."""
        hits = self.search.search(query, k=self.k, min_coverage=0.0)
        floor = self.search.index.min_coverage
        return hits, [h for h in hits if h.above(floor)]

    def _pick(self, rng: random.Random, items: list, split: str):
        """A random item of this split's part of `items` (entities are partitioned by their id)."""
        if items and isinstance(items[0], dict):
            by_id = {e["id"]: e for e in items}
            return by_id[rng.choice(partition(tuple(by_id))[split])]
        return rng.choice(partition(tuple(items))[split])

    def _query(self, rng, lang, relation, names, split) -> tuple[str, str]:
        tpl = self._pick(rng, QUERIES[lang][relation], split)
        name = names["name"]
        if rng.random() < 0.25:           # users and models often drop accents and capitals
            name = fold(name)
        return tpl, tpl.format(name=name)

    def answerable(self, rng, lang, split) -> dict | None:
        st = self.stats[split]
        e = self._pick(rng, self.facts.entities, split)
        relation = rng.choice(RELATIONS)
        names = _names(lang, e)
        qt = self._pick(rng, QUESTIONS[lang][relation], split)
        user = _wrap(self._wrap_rng, lang, _cap(qt.format(**names)))
        qtpl, query = self._query(rng, lang, relation, names, split)
        every, hits = self._search(query)
        value = e[lang][relation]
        if not any(states(h.snippet, value) for h in every):
            st["dropped_answer_not_retrieved"] += 1
            self.misses.append(query)
            return None
        n = next((i for i, h in enumerate(hits, 1) if states(h.snippet, value)), None)
        if n is None:   # retrieved, but under the relevance floor: the router would answer "No results."
            st["dropped_answer_below_floor"] += 1
            self.misses.append(query)
            return None
        fact = FACT[lang][relation].format(**names, value=value)
        answer = self._pick(rng, ANSWERS[lang], split).format(n=n, title=hits[n - 1].title, fact=fact, Fact=_cap(fact))
        msgs = [{"role": "user", "content": user},
                {"role": "assistant", "content": self._pick(rng, LEADS[lang], split), "search": query},
                {"role": "tool", "name": "search", "content": format_hits(hits)},
                {"role": "assistant", "content": answer}]
        return self._record("answerable", lang, split, msgs, entity=e["id"], relation=relation, template=qt, query_template=qtpl,
                            reference={"type": "string", "value": value}, passage=self._pid(hits[n - 1].path), rank=n)

    def unanswerable(self, rng, lang, split) -> dict | None:
        st = self.stats[split]
        if self.facts.absent and rng.random() < 0.5:
            e, relation, why = self._pick(rng, self.facts.absent, split), rng.choice(RELATIONS), "absent_entity"
        else:
            e, relation, why = self._pick(rng, self.facts.entities, split), rng.choice(ABSENT_RELATIONS), "absent_fact"
        names = _names(lang, e)
        qt = self._pick(rng, QUESTIONS[lang][relation], split)
        user = _wrap(self._wrap_rng, lang, _cap(qt.format(**names)))
        qtpl, query = self._query(rng, lang, relation, names, split)
        every, hits = self._search(query)
        text = fold(format_hits(every))
        if why == "absent_entity" and any(fold(e[l]["name"]) in text for l in LANGS):
            st["dropped_absent_entity_in_hits"] += 1
            return None
        if why == "absent_fact" and any(w in text for w in ABSENT_WORDS[relation]):
            st["dropped_absent_fact_in_hits"] += 1
            return None
        topic = TOPIC[lang][relation].format(**names)
        msgs = [{"role": "user", "content": user},
                {"role": "assistant", "content": self._pick(rng, LEADS[lang], split), "search": query},
                {"role": "tool", "name": "search", "content": format_hits(hits)},
                {"role": "assistant", "content": self._pick(rng, NOT_FOUND[lang], split).format(topic=topic)}]
        return self._record("unanswerable", lang, split, msgs, entity=e["id"], relation=relation, template=qt,
                            query_template=qtpl, reference=None, why=why)

    def no_search(self, rng, lang, split) -> dict:
        """Small talk (as written) or a word translation (wrapped like the questions): answered directly."""
        if rng.random() < 0.3:
            q, a = self._pick(rng, NO_SEARCH[lang], split)
            template = q
        else:
            template, at = self._pick(rng, TRANSLATE[lang], split)
            fr, en = self._pick(rng, WORDS, split)
            q, a = _wrap(self._wrap_rng, lang, template.format(fr=fr, en=en)), at.format(fr=fr, en=en)
        return self._record("no_search", lang, split, [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                            template=template, reference=None)

    def _record(self, kind, lang, split, messages, reference, **extra) -> dict:
        digest = hashlib.sha1(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()[:12]
        search = kind != "no_search"
        return {"id": f"routing:search-{digest}", "source": "routing", "lang": lang, "category": "search", "kind": kind,
                "split": split, "reference": reference, "route": {"search": search, "answerable": (kind == "answerable") if search else None},
                **extra, "messages": messages}

    def generate(self, n: int, split: str, langs=LANGS, seed: int = 0, seen: set | None = None,
                 kinds: dict[str, float] | None = None) -> list[dict]:
        """n records of `split` (fewer if the split runs out of distinct prompts; counted in the stats), drawn by
        kind with the weights `kinds` (default KINDS)."""
        rng = random.Random(seed + SPLIT_SEED_OFFSET[split])
        self._wrap_rng = SplitRandom(seed + SPLIT_SEED_OFFSET[split] + 1, split)
        seen = set() if seen is None else seen
        st = self.stats[split]
        out, idle = [], 0
        table = check_kinds(kinds) if kinds else KINDS
        kinds, weights = list(table), list(table.values())
        while len(out) < n and idle < MAX_IDLE:   # stop when MAX_IDLE draws in a row gave nothing new
            idle += 1
            kind, lang = rng.choices(kinds, weights)[0], rng.choice(list(langs))
            rec = getattr(self, kind)(rng, lang, split)
            if rec is None:
                continue
            key = _norm(rec["messages"][0]["content"])
            if key in seen:
                st["duplicates"] += 1
                continue
            if kind != "no_search" and _norm(rec["messages"][1]["search"]) == key:
                st["dropped_query_equals_question"] += 1
                continue
            seen.add(key)
            idle = 0
            st[f"kept_{kind}"] += 1
            st[f"kept_{lang}"] += 1
            out.append(rec)
        st["short"] = max(0, n - len(out))
        return out


def check_kinds(kinds: dict) -> dict[str, float]:
    """Kind weights {answerable, unanswerable, no_search: w >= 0, not all 0}; a clear error otherwise."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise HessGPTError(f"search kinds: unknown kind {sorted(unknown)[0]!r} (choose among {', '.join(KINDS)})")
    out = {k: float(kinds.get(k, 0.0)) for k in KINDS}
    if any(v < 0 for v in out.values()) or not any(out.values()):
        raise HessGPTError(f"search kinds: weights must be >= 0 and not all 0, got {kinds}")
    return out


def build_index(corpus: Path, out_db: Path, min_coverage: float = DEFAULT_MIN_COVERAGE) -> SearchIndex:
    return SearchIndex.build([corpus / "docs"], out_db, min_coverage=min_coverage)


def generate_splits(n: int, test_n: int, val_fraction: float, langs=LANGS, seed: int = 0, corpus: Path = CORPUS,
                    k: int = K, kinds: dict[str, float] | None = None,
                    min_coverage: float = DEFAULT_MIN_COVERAGE) -> tuple[dict, dict]:
    """{split: records}, stats. The index is built in a temporary folder from corpus/docs. `kinds`: the kind
    weights of train and dev (default KINDS); the test split always uses KINDS, so it stays frozen."""
    for lang in langs:
        if lang not in LANGS:
            raise HessGPTError(f"routing search: unknown language {lang!r} (choose among {', '.join(LANGS)})")
    facts = Facts.load(Path(corpus) / "facts.json")
    n_dev = round(n * val_fraction)
    sizes = {"train": n - n_dev, "dev": n_dev, "test": test_n}
    with tempfile.TemporaryDirectory() as tmp:
        index = build_index(Path(corpus), Path(tmp) / "search.db", min_coverage)
        gen = SearchConversations(facts, index, k=k, corpus_docs=Path(corpus) / "docs")
        seen: set = set()
        out = {s: gen.generate(sizes[s], s, langs, seed, seen, kinds if s != "test" else None) if sizes[s] > 0 else []
               for s in SPLITS}
        index.close()
    stats = {"seed": seed, "k": k, "corpus": str(corpus), "sizes": {s: len(v) for s, v in out.items()},
             "splits": {s: dict(c) for s, c in gen.stats.items()},
             "partition": "entities, question/query/answer templates, leads: sha1 bucket of the item "
                          "(hessgpt.data.routing.partition); a user prompt in one split only"}
    return out, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hessgpt.data.routing.search", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="train + dev records")
    ap.add_argument("--out", required=True, help="output JSONL (train); OUT.val.jsonl, OUT.test.jsonl, OUT.stats.json beside it")
    ap.add_argument("--langs", default="fr,en")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--test-n", type=int, default=400)
    ap.add_argument("--k", type=int, default=K, help="hits per search (the router injects 3)")
    ap.add_argument("--corpus", default=str(CORPUS), help="folder with docs/ and facts.json")
    args = ap.parse_args(argv)
    if args.n <= 0 or args.test_n < 0 or not 0 <= args.val_fraction < 1 or args.k < 1:
        raise HessGPTError(f"routing search: bad sizes --n {args.n} --test-n {args.test_n} --val-fraction {args.val_fraction} --k {args.k}")
    langs = tuple(x.strip() for x in args.langs.split(",") if x.strip())
    out, stats = generate_splits(args.n, args.test_n, args.val_fraction, langs, args.seed, Path(args.corpus), args.k)
    train_p, val_p, stats_p = split_paths(args.out)
    test_p = test_path(args.out)
    write_jsonl(train_p, out["train"])
    write_jsonl(val_p, out["dev"])
    write_jsonl(test_p, out["test"])
    tmp = stats_p.with_name(f".{stats_p.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, stats_p)
    print(f"routing search: wrote {train_p} ({len(out['train'])}), {val_p} (dev, {len(out['dev'])}), "
          f"{test_p} (test, {len(out['test'])}), {stats_p}")
    for s, c in stats["splits"].items():
        print(f"  {s}: " + "  ".join(f"{k}={v}" for k, v in sorted(c.items())), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
