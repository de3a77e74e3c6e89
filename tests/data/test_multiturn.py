"""Multi-turn conversations: message `weight` (validation, JSONL, loss mask), history flattening, and the
multi-turn routing records of hessgpt.data.routing_multiturn (docs/chat-format.md)."""

import json

import pytest

from hessgpt.data.conversation import Skip, flatten_history, from_dict, read_jsonl, write_jsonl
from hessgpt.errors import HessGPTError

TWO_TURNS = {
    "id": "t:1", "source": "t", "lang": "fr",
    "messages": [
        {"role": "user", "content": "Combien font 17 fois 23 ?"},
        {"role": "assistant", "content": "17 × 23 = 391.", "weight": 0},
        {"role": "user", "content": "Et si je divise ce résultat par 8 ?"},
        {"role": "assistant", "content": "Je calcule.", "code": "print(391 / 8)"},
        {"role": "tool", "name": "python", "content": "48.875\n"},
        {"role": "assistant", "content": "391 / 8 = 48.875."},
    ],
}


def _spans(tok, ids, mask):
    """Decoded text of the mask-1 tokens, and of the mask-0 tokens."""
    on = tok.decode([i for i, m in zip(ids, mask) if m])
    off = tok.decode([i for i, m in zip(ids, mask) if not m])
    return on, off


# --- weight: conversation format --------------------------------------------------------------------


def test_weight_round_trips_through_jsonl(tmp_path):
    conv = from_dict(TWO_TURNS)
    assert [m.weight for m in conv.messages] == [1, 0, 1, 1, 1, 1]
    p = tmp_path / "c.jsonl"
    write_jsonl(p, [conv])
    line = json.loads(p.read_text())
    assert line["messages"][1]["weight"] == 0
    assert all("weight" not in m for i, m in enumerate(line["messages"]) if i != 1)   # default 1 is not written
    back = list(read_jsonl(p))[0]
    assert [m.weight for m in back.messages] == [1, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("bad", [2, -1, 0.5, "0", True, None])
def test_bad_weight_is_a_skip_naming_it(bad):
    rec = json.loads(json.dumps(TWO_TURNS))
    rec["messages"][1]["weight"] = bad
    with pytest.raises(Skip) as e:
        from_dict(rec)
    assert e.value.reason == "bad_weight"
    assert "weight" in str(e.value) and "message 1" in str(e.value)


def test_weight_only_on_assistant_messages():
    rec = json.loads(json.dumps(TWO_TURNS))
    rec["messages"][0]["weight"] = 0
    with pytest.raises(Skip) as e:
        from_dict(rec)
    assert e.value.reason == "bad_weight" and "user" in str(e.value)


# --- weight: loss mask -------------------------------------------------------------------------------


def test_weight_zero_masks_the_whole_earlier_turn(tokenizer):
    ids, mask = tokenizer.render(TWO_TURNS)
    tok = tokenizer
    assert len(ids) == len(mask)
    on, off = _spans(tok, ids, mask)
    assert "391." not in on.replace("391 / 8", "")   # the first answer is not a target
    assert "17 × 23 = 391." in off
    assert "Je calcule." in on and "print(391 / 8)" in on and "391 / 8 = 48.875." in on
    assert "48.875\n" in off   # the tool result stays context
    # the closing <|end|> of turn 1 (just before the second <|user|>) is masked; that of turn 2 is trained
    u2 = [i for i, t in enumerate(ids) if t == tok.user_id][1]
    assert ids[u2 - 1] == tok.end_id and mask[u2 - 1] == 0
    assert ids[-1] == tok.end_id and mask[-1] == 1
    # the same conversation with default weights trains both turns: exactly turn 1's tokens differ
    plain = json.loads(json.dumps(TWO_TURNS))
    del plain["messages"][1]["weight"]
    ids2, mask2 = tokenizer.render(plain)
    assert ids2 == ids
    diff = [i for i, (a, b) in enumerate(zip(mask, mask2)) if a != b]
    first_turn = tok.encode("17 × 23 = 391.")
    assert len(diff) == len(first_turn) + 1 and all(mask2[i] == 1 for i in diff)
    assert ids[diff[0]:diff[0] + len(first_turn)] == first_turn and diff[-1] == u2 - 1


def test_default_weight_is_unchanged(tokenizer):
    plain = json.loads(json.dumps(TWO_TURNS))
    del plain["messages"][1]["weight"]
    explicit = json.loads(json.dumps(plain))
    for m in explicit["messages"]:
        if m["role"] == "assistant":
            m["weight"] = 1
    assert tokenizer.render(plain) == tokenizer.render(explicit)


def test_render_rejects_a_bad_weight(tokenizer):
    rec = json.loads(json.dumps(TWO_TURNS))
    rec["messages"][1]["weight"] = 3
    with pytest.raises(HessGPTError, match="weight"):
        tokenizer.render(rec)


def test_weight_reaches_the_sft_loss_mask(tokenizer, tmp_path):
    """The SFT data path (render_file -> make_batch) keeps the render mask: no target inside turn 1."""
    from hessgpt.train.sft import make_batch, render_file

    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps(TWO_TURNS, ensure_ascii=False) + "\n")
    examples, stats = render_file(str(p), tokenizer, 512)
    ids, mask = examples[0]
    assert (ids, mask) == tuple(tokenizer.render(TWO_TURNS))
    batch = make_batch(examples, [[0]], len(ids) - 1, tokenizer.pad_id)
    y, lm = batch["y"][0].tolist(), batch["loss_mask"][0].tolist()
    targets = tokenizer.decode([t for t, m in zip(y, lm) if m])
    assert "17 × 23" not in targets and "391 / 8 = 48.875." in targets
    assert sum(lm) == sum(mask[1:])


# --- history flattening ------------------------------------------------------------------------------

TOOL_TURN = [
    {"role": "user", "content": "Combien font 17 fois 23 ?"},
    {"role": "assistant", "content": "Je lance un petit script.", "code": "print(17 * 23)"},
    {"role": "tool", "name": "python", "content": "391\n"},
    {"role": "assistant", "content": "Résultat : 391."},
]


def test_flatten_history_joins_text_before_and_after_the_tool():
    msgs = TOOL_TURN + [{"role": "user", "content": "Merci !"}, {"role": "assistant", "content": "Avec plaisir !"}]
    flat = flatten_history(msgs)
    assert flat == [
        {"role": "user", "content": "Combien font 17 fois 23 ?"},
        {"role": "assistant", "content": "Je lance un petit script.\n\nRésultat : 391."},
        {"role": "user", "content": "Merci !"},
        {"role": "assistant", "content": "Avec plaisir !"},
    ]
    assert msgs[1]["code"] == "print(17 * 23)"   # the input is not changed


def test_flatten_history_keeps_the_last_turn_and_plain_turns():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Salut"}, {"role": "assistant", "content": "Bonjour !"}] + TOOL_TURN
    flat = flatten_history(msgs)
    assert flat == msgs   # no earlier tool turn: nothing to flatten, the last turn keeps code and result
    # empty lead text: only the final text remains, no leading blank line
    msgs2 = [dict(m) for m in TOOL_TURN]
    msgs2[1]["content"] = ""
    flat2 = flatten_history(msgs2 + [{"role": "user", "content": "Et par 8 ?"}])
    assert flat2[1] == {"role": "assistant", "content": "Résultat : 391."} and flat2[-1]["role"] == "user"


def test_flatten_history_training_weights():
    msgs = TOOL_TURN + [{"role": "user", "content": "Bonjour"}, {"role": "assistant", "content": "Salut !"},
                        {"role": "user", "content": "Et par 8 ?"}] + [dict(m) for m in TOOL_TURN[1:]]
    flat = flatten_history(msgs, earlier_weight=0)
    assert [m.get("weight", 1) for m in flat if m["role"] == "assistant"] == [0, 0, 1, 1]
    assert flat[1]["content"] == "Je lance un petit script.\n\nRésultat : 391." and "code" not in flat[1]
    assert flat[-3]["code"] == "print(17 * 23)" and flat[-2]["role"] == "tool"
    from_dict({"messages": flat})   # a valid conversation


def test_flatten_history_matches_the_router():
    """Inference (hessgpt.tools.router) renders history the same way."""
    from hessgpt.tools.router import flatten_earlier_turns

    msgs = TOOL_TURN + [{"role": "user", "content": "Merci"}, {"role": "assistant", "content": "De rien."},
                        {"role": "user", "content": "Et 18 × 23 ?"}]
    assert flatten_history(msgs) == flatten_earlier_turns(msgs)
