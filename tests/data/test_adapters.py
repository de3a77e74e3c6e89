"""Exact conversions of real (or schema-doc) rows of every source schema; fixtures in tests/fixtures/data."""

import json

import pyarrow.parquet as pq
import pytest

from pathlib import Path

from hessgpt.data.adapters import get_adapter, names
from hessgpt.data.adapters.schema import param_schema, type_schema
from hessgpt.data.conversation import Skip

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def roles(conv):
    return [m.role for m in conv.messages]


def test_hh_rlhf_splits_human_assistant_turns(convert):
    convs = convert("Anthropic/hh-rlhf", "hh_rlhf.jsonl.gz")
    assert [len(c.messages) for c in convs] == [2, 2, 8]
    car = convs[2]
    assert roles(car) == ["user", "assistant"] * 4
    assert car.messages[0].content == "I want to buy a used card, how can I make sure I am not being ripped off?"
    assert car.messages[3].content == "Do you have a specific car in mind?"
    assert car.messages[-1].content.startswith("Have you seen any listings on websites such as AutoTrader")
    assert convs[1].messages[1].content == "I’m not sure what you mean. Can you clarify?"


def test_hh_rlhf_keeps_a_colon_inside_text():
    conv = get_adapter("hh-rlhf").convert({"chosen": "\n\nHuman: Say Assistant: hi\n\nAssistant: Assistant: hi"})
    assert [(m.role, m.content) for m in conv.messages] == [("user", "Say Assistant: hi"), ("assistant", "Assistant: hi")]


def test_ultrachat_messages_and_prompt_id(convert):
    rows = [json.loads(line) for line in open(FIXTURES / "ultrachat.jsonl")]
    convs = convert("HuggingFaceH4/ultrachat_200k", "ultrachat.jsonl")
    for row, conv in zip(rows, convs):
        assert conv.id == row["prompt_id"]
        assert [(m.role, m.content) for m in conv.messages] == [(m["role"], m["content"].strip()) for m in row["messages"]]


def test_oasst_tree_best_path_follows_rank_zero(convert):
    convs = convert("oasst2", "oasst_trees.jsonl")
    assert [c.id[:8] for c in convs] == ["054e1df3", "ea201f57"]
    eyes = convs[1]
    assert roles(eyes) == ["user", "assistant", "user", "assistant"]
    assert eyes.messages[1].content.startswith("Your eyes are not designed")  # rank 0 of 2
    assert eyes.messages[3].content.startswith("There is no scientific research")  # rank 0 below it
    assert eyes.lang == "en"


def test_oasst_tree_all_paths(convert):
    convs = convert("oasst2", "oasst_trees.jsonl", paths="all")
    assert len(convs) == 3 + 4  # one thread per assistant leaf
    assert len({c.id for c in convs}) == 7
    assert sorted(len(c.messages) for c in convs) == [2, 2, 2, 4, 4, 4, 4]


def test_oasst_flat_table_rebuilds_threads(convert, tmp_path):
    (best,) = convert("OpenAssistant/oasst2", "oasst_flat.parquet")
    assert best.id.startswith("44f6d71c")
    assert [m.content[:30] for m in best.messages] == [
        "What differences are there bet", "Both ChatGPT and InstructGPT a", "Can you provide me some sample", "Sure. Here is some sample code",
    ]  # fmt: skip
    # row order does not matter; a deleted best reply is passed over; `all` yields every leaf thread
    rows = pq.read_table(FIXTURES / "oasst_flat.parquet").to_pylist()[::-1]
    for r in rows:
        if r["message_id"].startswith("d0b8e860"):
            r["deleted"] = True
    with open(tmp_path / "flat.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    from hessgpt.data.adapters import oasst as oasst_mod
    from hessgpt.data.recipe import SourceSpec, iter_rows

    items = list(oasst_mod.group_flat(iter_rows(SourceSpec.from_dict({"dataset": "oasst2", "path": str(tmp_path / "flat.jsonl")}))))
    assert len(items) == 1
    (best,) = oasst_mod.oasst(items[0][1])
    assert [m.content[:30] for m in best.messages] == [
        "What differences are there bet", "The main difference between Ch", "Why is InstructGPT more accura", "Instructional GPT is more accu",
    ]  # fmt: skip
    every = oasst_mod.oasst(items[0][1], paths="all")
    assert len(every) == 3  # the deleted branch held two of the five leaves
    with pytest.raises(Skip) as e:
        oasst_mod.oasst(items[0][1], lang=["fr"])
    assert e.value.reason == "wrong_language"


def test_vigogne_three_schemas(convert):
    chat = convert("vigogne", "vigogne_messages.jsonl")
    old = convert("vigogne", "vigogne_conversation.jsonl")
    inst = convert("vigogne", "vigogne_instruct.jsonl")
    assert chat[0].id == "oasst-20230412-fr-00000000" and roles(chat[0])[:2] == ["user", "assistant"]
    assert old[0].id == "oasst-20230412-fr-00000002"  # UTILISATEUR/ASSISTANT roles
    assert old[0].messages[0].content == "Quelle est la différence entre un disque dur HDD et un SSD ?"
    assert roles(old[0])[:2] == ["user", "assistant"]
    assert inst[0].id == "gtdoremiti_vigilance"
    assert inst[0].messages[0].content == "Quels sont les points de vigilance pour préparer le partage de données scientifiques ?"


def test_alpaca_json_array_and_input_join(convert):
    (crepes, *_rest) = convert("tatsu-lab/alpaca", "alpaca.json")
    assert crepes.messages[0].content == "Describe a process of making crepes."
    assert crepes.messages[1].content.startswith("Making crepes is an easy and delicious process!")
    (distinct, _) = convert("sahil2801/CodeAlpaca-20k", "codealpaca.json")
    assert distinct.messages[0].content == "What are the distinct values from the given list?\n\ndataList = [3, 9, 3, 5, 7, 9, 5]"


def test_dolly_context_joins_the_user_turn(convert):
    with_ctx, no_ctx = convert("databricks/databricks-dolly-15k", "dolly.jsonl")
    user = with_ctx.messages[0].content
    assert user.startswith("When did Virgin Australia start operating?\n\nVirgin Australia, the trading name")
    assert user.endswith("with two aircraft on a single route.[3]")
    assert with_ctx.messages[1].content.startswith("Virgin Australia commenced services on 31 August 2000")
    assert no_ctx.messages[0].content == "Give me three ideas for a rainy Sunday."


@pytest.mark.parametrize(
    "dataset, fname, expected",
    [
        ("WizardLMTeam/WizardLM_evol_instruct_70k", "wizardlm_70k.jsonl", [("user", "Rewrite the sentence in the passive voice: The cat chased the mouse."), ("assistant", "The mouse was chased by the cat.")]),
        ("HuggingFaceTB/smoltalk", "smoltalk.jsonl", [("system", "You are a concise assistant."), ("user", "What is 2+2?"), ("assistant", "4."), ("user", "And times 3?"), ("assistant", "12.")]),
        ("allenai/tulu-3-sft-personas-math", "tulu_personas.jsonl", [("user", "A baker sells 12 loaves a day for 5 days. How many loaves?"), ("assistant", "12 loaves per day times 5 days is 60 loaves.")]),
        ("teknium/OpenHermes-2.5", "openhermes.jsonl", [("system", "You are an AI assistant."), ("user", "Name a primary color."), ("assistant", "Red is a primary color.")]),
        ("wikihow", "wikihow_hf.jsonl", [("user", "How to Tie a Square Knot?"), ("assistant", "Cross the right end over the left and tuck it under. Then cross the left end over the right and tuck it under. Pull both ends tight.")]),
        ("wikihow", "wikihow_cosmopedia.jsonl", [("user", "Write a short tutorial on how to water a cactus.")]),
        ("garage-bAInd/Open-Platypus", "platypus.jsonl", [("user", None), ("assistant", None)]),
        ("THUDM/LongAlign-10k", "longalign.jsonl", [("user", None), ("assistant", "The committee approved the budget for a new library opening next spring.")]),
    ],
)  # fmt: skip
def test_single_schema_conversions(convert, dataset, fname, expected):
    (conv,) = convert(dataset, fname)
    got = [(m.role, m.content) for m in conv.messages]
    assert [r for r, _ in got][: len(expected)] == [r for r, _ in expected]
    for (_, text), (_, want) in zip(got, expected):
        if want is not None:
            assert text == want


def test_wizardlm_v2_from_value(convert):
    convs = convert("wizardlm-v2", "wizardlm_v2.jsonl")
    assert [roles(c)[:2] for c in convs] == [["user", "assistant"]] * 2
    assert convs[0].messages[0].content.startswith("As an online platform teacher named Aimee")


def test_xlam_parallel_calls_and_schema_conversion(convert):
    giveaways, math = convert("Salesforce/xlam-function-calling-60k", "xlam.json")
    assert giveaways.id == "0"
    call = giveaways.messages[1]
    assert (call.role, call.content) == ("assistant", "")
    assert [(c.name, c.arguments) for c in call.tool_calls] == [("live_giveaways_by_type", {"type": "beta"}), ("live_giveaways_by_type", {"type": "game"})]
    assert giveaways.tools[0]["parameters"] == {
        "type": "object",
        "properties": {"type": {"type": "string", "description": "The type of giveaways to retrieve (e.g., game, loot, beta).", "default": "game"}},
        "required": [],
    }  # fmt: skip
    sum_list, round_number = math.tools
    assert sum_list["parameters"]["properties"]["numbers"]["type"] == "array"
    assert sum_list["parameters"]["properties"]["numbers"]["items"] == {"type": "integer"}
    assert sum_list["parameters"]["required"] == ["numbers"]
    assert round_number["parameters"]["required"] == ["x"]  # "int, optional" and Optional[str] are optional
    assert round_number["parameters"]["properties"]["digits"]["type"] == "integer"
    assert [c.arguments for c in math.messages[1].tool_calls] == [{"numbers": [1, 2, 3]}, {"x": 2.567, "digits": 1}]


@pytest.mark.parametrize(
    "t, schema, optional",
    [
        ("str", {"type": "string"}, False),
        ("List[int]", {"type": "array", "items": {"type": "integer"}}, False),
        ("str, optional", {"type": "string"}, True),
        ("Optional[List[str]]", {"type": "array", "items": {"type": "string"}}, True),
        ("Dict[str, Any]", {"type": "object"}, False),
        ("Union[int, float]", {"type": ["integer", "number"]}, False),
        ("int or float", {"type": ["integer", "number"]}, False),
        ("Callable", {}, False),
    ],
)
def test_python_type_strings_become_json_schema(t, schema, optional):
    assert param_schema(t) == (schema, optional)
    assert type_schema("Tuple[int, int]") == {"type": "array", "items": {"type": "integer"}}


def test_glaive_single_quoted_arguments_and_responses(convert):
    tools_chat, plain = convert("glaiveai/glaive-function-calling-v2", "glaive.jsonl")
    assert [t["name"] for t in tools_chat.tools] == ["get_news_headlines", "calculate_tip"]
    assert tools_chat.messages[0].role == "system"
    assert tools_chat.messages[0].content == "You are a helpful assistant with access to the following functions. Use them if required"
    assert roles(tools_chat) == ["system", "user", "assistant", "tool", "assistant", "user", "assistant", "tool", "assistant"]
    first, tip = tools_chat.messages[2].tool_calls[0], tools_chat.messages[6].tool_calls[0]
    assert (first.name, first.arguments) == ("get_news_headlines", {"country": "United States"})
    assert (tip.name, tip.arguments) == ("calculate_tip", {"bill_amount": 50, "tip_percentage": 15})
    assert tools_chat.messages[3].name == "get_news_headlines"
    assert json.loads(tools_chat.messages[7].content) == {"tip_amount": 7.5}
    assert tools_chat.messages[-1].content == "The tip is $7.50."  # <|endoftext|> removed
    assert plain.tools is None
    assert [(m.role, m.content) for m in plain.messages] == [
        ("system", "You are a helpful assistant, with no access to external functions."),
        ("user", "What is the capital of France?"), ("assistant", "The capital of France is Paris."),
    ]  # fmt: skip


def test_glaive_unparsable_call_is_a_skip():
    row = {"system": "SYSTEM: none", "chat": "USER: hi\n\n\nASSISTANT: <functioncall> {\"name\": \"f\", \"arguments\": '{oops'} <|endoftext|>"}
    with pytest.raises(Skip) as e:
        get_adapter("glaive").convert(row)
    assert e.value.reason == "unparsable_tool_call"


def test_sharegpt_tool_format(convert):
    recipes, area = convert("sharegpt-tools", "sharegpt_tools.json")
    assert roles(recipes) == ["user", "assistant", "user", "assistant", "tool", "assistant", "user", "assistant"]
    call = recipes.messages[3].tool_calls[0]
    assert (call.name, call.arguments) == ("search_recipes", {"ingredients": ["chicken", "bell peppers", "rice"]})
    assert recipes.messages[4].name == "search_recipes"
    assert recipes.tools[0]["parameters"]["required"] == ["ingredients"]
    assert area.messages[1].tool_calls[0].arguments == {"shape": "rectangle", "dimensions": [5, 3]}


def test_nexusraven_joins_the_api_list(convert):
    cve, cpe = convert("nexusraven", "nexusraven_queries.jsonl", api_list={"path": str(FIXTURES / "nexusraven_api_list.jsonl")})
    assert [t["name"] for t in cve.tools] == ["searchCVE", "searchCPE"]
    assert cve.tools[0]["parameters"]["required"] == ["limit"]
    assert (cve.messages[1].tool_calls[0].name, cve.messages[1].tool_calls[0].arguments) == ("searchCVE", {"keywordSearch": "openssl", "limit": 5})
    assert cpe.messages[1].tool_calls[0].arguments == {"keywordSearch": "nginx"}  # a dict, not JSON text
    assert [t["name"] for t in cpe.tools] == ["searchCPE"]


def test_code_contests_and_apps(convert):
    (sum_two,) = [c for c in [_try(get_adapter("code_contests").convert, r) for r in _rows("code_contests.jsonl")] if c]
    assert sum_two.id == "1_A. Sum of Two"
    assert sum_two.messages[1].content == "```python\na, b = map(int, input().split())\nprint(a + b)\n```"  # the Python 3 one
    with pytest.raises(Skip) as e:
        get_adapter("code_contests").convert(_rows("code_contests.jsonl")[1])
    assert e.value.reason == "no_solution"
    (add,) = convert("codeparrot/apps", "apps.jsonl")
    assert add.messages[0].content.endswith("```python\ndef add(a, b):\n```")
    assert add.messages[1].content == "```python\ndef add(a, b):\n    return a + b\n```"


def test_routing_markers_become_code_and_tool_messages(convert):
    inline, split = convert("routing", "routing.jsonl")
    d = inline.to_dict()["messages"]
    assert d[2] == {"role": "assistant", "content": "Je calcule.", "code": "import math\nprint(math.sqrt(144))"}
    assert d[3] == {"role": "tool", "content": "12.0\n", "name": "python"}
    assert d[4] == {"role": "assistant", "content": "La racine carrée de 144 est 12.0."}
    assert roles(split) == ["user", "assistant", "tool", "assistant"]
    assert split.messages[1].code == "print(2**10)" and split.messages[2].content == "1024\n"


def test_routing_search_and_tool_call_markers():
    row = {"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "<search>paris weather</search><|result|>sunny<|end|>"
                                         "<|tool_call|>{\"name\": \"f\", \"arguments\": {\"a\": 1}}<|end|>"
                                         "<|tool_call|>{\"name\": \"g\", \"arguments\": {}}<|end|>"
                                         "<|tool_response|>{\"ok\": 1}<|end|><|tool_response|>{\"ok\": 2}<|end|>Done."},
    ]}  # fmt: skip
    conv = get_adapter("routing").convert(row)
    assert [(m.role, m.name) for m in conv.messages] == [("user", None), ("assistant", None), ("tool", "search"), ("assistant", None), ("tool", "f"), ("tool", "f"), ("assistant", None)]
    assert conv.messages[1].search == "paris weather"
    assert [c.name for c in conv.messages[3].tool_calls] == ["f", "g"]


def test_routing_native_records_kept_as_they_are():
    """What `hessgpt data routing` writes (assistant `code`, a weight-0 earlier turn) converts unchanged, so the
    routing data, multi-turn included, can go into a `data prepare` mix."""
    row = {"id": "routing:multiturn-1", "lang": "fr", "messages": [
        {"role": "user", "content": "Combien font 17 fois 23 ?"},
        {"role": "assistant", "content": "Je calcule.\n\n17 × 23 = 391.", "weight": 0},
        {"role": "user", "content": "Et si je divise ce résultat par 17 ?"},
        {"role": "assistant", "content": "", "code": "print(391 / 17)"},
        {"role": "tool", "name": "python", "content": "23.0\n"},
        {"role": "assistant", "content": "Cela fait 23."}]}  # fmt: skip
    conv = get_adapter("routing").convert(row)
    assert conv.to_dict()["messages"] == row["messages"]


def test_registry_knows_every_schema_of_the_issue():
    wanted = ["anthropic/hh-rlhf", "huggingfaceh4/ultrachat_200k", "openassistant/oasst1", "openassistant/oasst2", "vigogne",
              "tatsu-lab/alpaca", "databricks/databricks-dolly-15k", "wizardlmteam/wizardlm_evol_instruct_70k",
              "wizardlmteam/wizardlm_evol_instruct_v2_196k", "huggingfacetb/smoltalk", "allenai/tulu-3-sft-personas-code",
              "thudm/longalign-10k", "teknium/openhermes-2.5", "garage-baind/open-platypus", "wikihow",
              "salesforce/xlam-function-calling-60k", "glaiveai/glaive-function-calling-v2", "sharegpt-tools",
              "nexusflow/nexusraven_api_evaluation", "sahil2801/codealpaca-20k", "deepmind/code_contests", "codeparrot/apps", "routing"]  # fmt: skip
    assert set(wanted) <= set(names())
    with pytest.raises(KeyError, match="no adapter for dataset 'nope'"):
        get_adapter("nope")


def _rows(fname):
    return [json.loads(line) for line in open(FIXTURES / fname)]


def _try(fn, row):
    try:
        return fn(row)
    except Skip:
        return None
