"""Bench scoring on fixed answers: right, wrong, right but wrong language, degenerate, formatted or not."""

import pytest

from hessgpt.eval import scoring
from hessgpt.eval.bench import load_items
from hessgpt.eval.scoring import degeneracy, detect_lang, extract_numbers, run_check, score_answer

CAPITAL_FR = {"id": "t1", "lang": "fr", "category": "factual",
              "messages": [{"role": "user", "content": "Quelle est la capitale de l'Australie ?"}],
              "checks": [{"type": "contains_any", "values": ["Canberra"]}]}
LIST_EN = {"id": "t2", "lang": "en", "category": "instruction",
           "messages": [{"role": "user", "content": "Give me a numbered list of 5 vegetables."}],
           "checks": [{"type": "numbered_list", "n": 5}]}


def test_right_answer_scores_one():
    s = score_answer(CAPITAL_FR, "La capitale de l'Australie est Canberra, et non Sydney.")
    assert s.score == 1.0 and s.degenerate == [] and s.lang == "fr"


def test_wrong_answer_scores_zero_even_in_the_right_language():
    s = score_answer(CAPITAL_FR, "La capitale de l'Australie est Sydney, la plus grande ville.")
    assert [c["score"] for c in s.checks] == [0.0, 1.0]  # keyword fails, language passes
    assert s.score == 0.0


def test_right_but_wrong_language_loses_the_language_check():
    s = score_answer(CAPITAL_FR, "The capital of Australia is Canberra, not Sydney.")
    assert s.lang == "en"
    assert {c["type"]: c["score"] for c in s.checks} == {"contains_any": 1.0, "lang": 0.0}
    assert s.score == 0.5


def test_short_answer_is_not_language_checked():
    assert detect_lang("Canberra.") is None
    assert score_answer(CAPITAL_FR, "Canberra.").score == 1.0


@pytest.mark.parametrize("answer,reason", [
    ("", "empty"),
    ("   \n ... ", "empty"),
    ("Canberra est la capitale. " * 12, "repetitive"),
    ("Canberra\nCanberra\nCanberra\nCanberra\nCanberra", "repetitive"),
    ("Canberra ha" + "ha" * 40, "repetitive"),
    ("Canberra<|end|><|user|>merci", "leaked_tokens"),
    ("Canberra <search>capitale</search>", "leaked_tokens"),
    ("Canberra est la capitale \ufffd\ufffd de l'Australie", "garbled"),
    ("Canberra\x0b est la capitale", "garbled"),
])
def test_degenerate_answers_score_zero(answer, reason):
    s = score_answer(CAPITAL_FR, answer)
    assert reason in s.degenerate
    assert s.score == 0.0  # even though "Canberra" is there in most of them


def test_non_degenerate_text_with_some_repeats_passes():
    d = degeneracy("Le chat mange. Le chien mange aussi. Les deux animaux mangent ensemble dans la cuisine.")
    assert not d.degenerate and d.repeat_ratio < 0.5


def test_numbered_list_format():
    good = "Here are five:\n1. Carrot\n2. Leek\n3. Potato\n4. Onion\n5. Spinach"
    assert score_answer(LIST_EN, good).score == 1.0
    assert score_answer(LIST_EN, "1) Carrot\n2) Leek\n3) Potato\n4) Onion\n5) Spinach").score == 1.0
    four = "Here are some:\n1. Carrot\n2. Leek\n3. Potato\n4. Onion"
    prose = "Carrots, leeks, potatoes, onions and spinach are all good vegetables."
    bullets = "- Carrot\n- Leek\n- Potato\n- Onion\n- Spinach"
    for bad in (four, prose, bullets):
        assert run_check({"type": "numbered_list", "n": 5}, bad) == 0.0
    assert score_answer(LIST_EN, prose).score == 0.0  # right language, wrong format
    assert run_check({"type": "bullet_list", "n": 5}, bullets) == 1.0


def test_other_checks():
    assert run_check({"type": "json"}, 'Voici : ```json\n{"nom": "Marie", "age": 30}\n```') == 1.0
    assert run_check({"type": "json"}, "{nom: Marie}") == 0.0
    assert run_check({"type": "uppercase"}, "BONJOUR") == 1.0
    assert run_check({"type": "uppercase"}, "Bonjour") == 0.0
    assert run_check({"type": "lines", "n": 3}, "a\n\nb\nc\n") == 1.0
    assert run_check({"type": "max_words", "n": 3}, "un deux trois quatre") == 0.0
    assert run_check({"type": "contains_all", "values": ["météo", "climat"]}, "La METEO change, le climat dure") == 1.0
    assert run_check({"type": "contains_all", "values": ["a1", "b2"]}, "a1 only") == 0.5
    assert run_check({"type": "regex", "pattern": r"2\D+4\D+7\D+9"}, "2, 4, 7, 9") == 1.0
    assert run_check({"type": "not_contains", "values": ["Sydney"]}, "Canberra") == 1.0
    assert run_check({"type": "chrf", "references": ["Le chien joue dans le jardin."]}, "Le chien joue dans le jardin.") == 1.0
    assert run_check({"type": "chrf", "references": ["Le chien joue dans le jardin."]}, "Xyz qwv.") < 0.3
    with pytest.raises(ValueError):
        run_check({"type": "nope"}, "x")


def test_numbers_in_both_conventions():
    assert 1234.5 in extract_numbers("Total : 1 234,5 €")
    assert 1000.0 in extract_numbers("It costs $1,000.")
    assert 12.5 in extract_numbers("soit 12,5 kg")
    assert 18.0 in extract_numbers("She makes $18.00 every day.")
    assert -3.0 in extract_numbers("il fait -3 degrés")
    assert scoring.number_in("La réponse est 56.", 56) and not scoring.number_in("La réponse est 65.", 56)


def test_shipped_prompt_sets_are_well_formed():
    items = load_items(("fr", "en"))
    assert len([i for i in items if i["lang"] == "fr"]) >= 60
    assert len([i for i in items if i["lang"] == "en"]) >= 60
    assert len({i["id"] for i in items}) == len(items)
    for item in items:  # every check type is known and every item carries at least one check
        assert item["checks"], item["id"]
        for c in scoring.item_checks(item):
            run_check(c, "Une réponse quelconque pour vérifier les checks.")
