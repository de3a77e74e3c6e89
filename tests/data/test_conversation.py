import json

import pytest

from hessgpt.data.conversation import Conversation, Message, Skip, ToolCall, dumps, from_dict, read_jsonl, validate, write_jsonl

DOC_EXAMPLE = {
    "id": "oasst2:6ab24d72", "source": "oasst2", "lang": "fr",
    "tools": [{"name": "get_weather", "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
    "messages": [
        {"role": "system", "content": "Tu es HessGPT, un assistant utile."},
        {"role": "user", "content": "Calcule la racine carrée de 144"},
        {"role": "assistant", "content": "Je calcule.", "code": "import math\nprint(math.sqrt(144))"},
        {"role": "tool", "name": "python", "content": "12.0\n"},
        {"role": "assistant", "content": "La racine carrée de 144 est 12.0."},
    ],
}  # fmt: skip


def test_doc_example_roundtrips_exactly():
    conv = from_dict(DOC_EXAMPLE)
    assert json.loads(dumps(conv)) == DOC_EXAMPLE


def _conv(*msgs):
    return Conversation([Message(**m) for m in msgs])


@pytest.mark.parametrize(
    "msgs, reason",
    [
        ([], "empty_conversation"),
        ([{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}], "empty_turn"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}], "empty_turn"),
        ([{"role": "assistant", "content": "hi"}, {"role": "user", "content": "q"}], "roles_out_of_order"),
        ([{"role": "user", "content": "q"}, {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a"}], "roles_out_of_order"),
        ([{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}], "roles_out_of_order"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "tool", "name": "python", "content": "1"}], "roles_out_of_order"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "code": "<b>", "code_lang": "html"},
          {"role": "tool", "name": "python", "content": "1"}, {"role": "assistant", "content": "a"}], "roles_out_of_order"),
        ([{"role": "user", "content": "q"}], "no_assistant_reply"),
        ([{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}], "bad_role"),
    ],
)  # fmt: skip
def test_validate_names_the_rule(msgs, reason):
    with pytest.raises(Skip) as e:
        validate(_conv(*msgs))
    assert e.value.reason == reason


def test_parallel_tool_results_are_valid():
    conv = _conv(
        {"role": "user", "content": "weather in Paris and Lyon"},
        {"role": "assistant", "content": "", "tool_calls": [ToolCall("w", {"city": "Paris"}), ToolCall("w", {"city": "Lyon"})]},
        {"role": "tool", "name": "w", "content": "{\"t\": 20}"},
        {"role": "tool", "name": "w", "content": "{\"t\": 22}"},
        {"role": "assistant", "content": "20 and 22."},
    )
    assert validate(conv) is conv
    d = conv.to_dict()
    assert d["messages"][1]["tool_calls"][1] == {"name": "w", "arguments": {"city": "Lyon"}}
    assert "code" not in d["messages"][1] and d["lang"] == "und"


def test_write_then_read_jsonl(tmp_path):
    convs = [from_dict(DOC_EXAMPLE), from_dict(dict(DOC_EXAMPLE, id="oasst2:2", tools=None))]
    path = tmp_path / "sub" / "out.jsonl"
    assert write_jsonl(path, convs) == 2
    back = list(read_jsonl(path))
    assert [dumps(c) for c in back] == [dumps(c) for c in convs]
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind
    path.write_text(path.read_text() + "{broken\n")
    with pytest.raises(Skip) as e:
        list(read_jsonl(path))
    assert e.value.reason == "corrupt_json" and ":3:" in e.value.detail
