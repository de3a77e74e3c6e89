"""The one tool-call parser (hessgpt.tools.calls) and its users outside the router: data adapters, evaluation."""

import pytest

from hessgpt.data import conversation
from hessgpt.data.adapters import get_adapter
from hessgpt.data.conversation import Skip
from hessgpt.eval.tools import call_matches
from hessgpt.tools.calls import ToolCall, ToolCallError, ToolCallParseError, parse_arguments, read_tool_call


def test_one_call_type():
    assert conversation.ToolCall is ToolCall
    msg = conversation.message_from_dict({"role": "assistant", "tool_calls": [{"name": "f", "arguments": {"x": 1}}]})
    assert msg.tool_calls == [ToolCall("f", {"x": 1})] and msg.to_dict()["tool_calls"] == [{"name": "f", "arguments": {"x": 1}}]


@pytest.mark.parametrize("value, want", [
    ({"a": 1}, {"a": 1}), (None, {}), ("", {}), ('{"a": 1}', {"a": 1}), ("{'a': True}", {"a": True}),
    ('args: {"a": [1, 2]} end', {"a": [1, 2]}),
])
def test_parse_arguments(value, want):
    assert parse_arguments(value, "f") == want


@pytest.mark.parametrize("value, why", [([1, 2], "must be a JSON object, got list"), ("1, 2", "not a JSON object"),
                                        ('{"a": }', "invalid JSON")])
def test_parse_arguments_errors_name_the_function(value, why):
    with pytest.raises(ToolCallParseError, match=why) as e:
        parse_arguments(value, "get_weather")
    assert "'get_weather'" in str(e.value)


def test_read_tool_call_never_raises_and_quotes_the_text():
    assert read_tool_call('Sure: {"name": "f", "arguments": {}}', "c0") == ToolCall("f", {}, id="c0")
    err = read_tool_call('  {"name": f}  ', "c1")
    assert isinstance(err, ToolCallError) and err.id == "c1" and err.text == '{"name": f}'
    assert err.message.startswith("could not parse tool call: invalid JSON") and err.message.endswith("""'{"name": f}'""")
    long = read_tool_call("x" * 500)
    assert isinstance(long, ToolCallError) and len(long.message) < 320 and long.message.endswith("...'")


def test_routing_adapter_reads_calls_as_the_router_does():
    row = {"messages": [{"role": "user", "content": "2+3?"},
                        {"role": "assistant", "content": "<|tool_call|>{'name': 'add', 'arguments': '{\"a\": 2, \"b\": 3}'}<|end|>"
                                                         "<|tool_response|>5<|end|>The sum is 5."}]}
    conv = get_adapter("routing").convert(row)
    assert conv.messages[1].tool_calls == [ToolCall("add", {"a": 2, "b": 3})]
    assert (conv.messages[2].role, conv.messages[2].name, conv.messages[2].content) == ("tool", "add", "5")
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<|tool_call|>add(2, 3)<|end|>"}]}
    with pytest.raises(Skip) as e:
        get_adapter("routing").convert(bad)
    assert e.value.reason == "unparsable_tool_call" and "add(2, 3)" in e.value.detail


def test_glaive_quoted_arguments_with_an_apostrophe():
    chat = ("USER: Translate\n\n\nASSISTANT: <functioncall> {\"name\": \"translate\", \"arguments\": "
            "'{\"text\": \"l'eau\", \"to\": \"en\"}'} <|endoftext|>\n\n\nFUNCTION RESPONSE: {\"t\": \"water\"}\n\n\n"
            "ASSISTANT: water <|endoftext|>")
    conv = get_adapter("glaive").convert({"system": "SYSTEM: none", "chat": chat})
    assert conv.messages[2].tool_calls == [ToolCall("translate", {"text": "l'eau", "to": "en"})]


def test_sharegpt_tool_call_written_as_a_python_literal():
    row = {"conversations": [{"from": "human", "value": "2+3"},
                             {"from": "function_call", "value": "{'name': 'add', 'arguments': {'a': 2, 'b': 3}}"},
                             {"from": "observation", "value": "5"}, {"from": "gpt", "value": "5"}]}
    conv = get_adapter("sharegpt-tools").convert(row)
    assert conv.messages[1].tool_calls == [ToolCall("add", {"a": 2, "b": 3})] and conv.messages[2].name == "add"
    with pytest.raises(Skip) as e:
        get_adapter("sharegpt-tools").convert(dict(row, conversations=[row["conversations"][0],
                                                                       {"from": "function_call", "value": "add 2 3"}]))
    assert e.value.reason == "unparsable_tool_call" and "add 2 3" in e.value.detail


def test_xlam_and_nexusraven_string_arguments():
    xlam = get_adapter("xlam").convert({"id": 1, "query": "2+3", "tools": '[{"name": "add", "parameters": {}}]',
                                        "answers": '[{"name": "add", "arguments": "{\\"a\\": 2}"}]'})
    assert xlam.messages[1].tool_calls == [ToolCall("add", {"a": 2})]
    raven = get_adapter("nexusraven").convert({"prompt": "q", "python_function_name": "f",
                                               "python_args_dict": "{'x': None, 'y': (1, 2)}"})
    assert raven.messages[1].tool_calls == [ToolCall("f", {"x": None, "y": (1, 2)})]
    with pytest.raises(Skip) as e:
        get_adapter("nexusraven").convert({"prompt": "q", "python_function_name": "f", "python_args_dict": "[1]"})
    assert e.value.reason == "unparsable_tool_call" and "[1]" in e.value.detail


def test_eval_reads_string_arguments_leniently():
    expected = {"add": {"a": [2], "b": [3]}}
    assert call_matches({"name": "add", "arguments": {"a": 2, "b": 3}}, expected)
    assert call_matches({"name": "add", "arguments": '{"a": 2, "b": 3}'}, expected)
    assert call_matches({"name": "add", "arguments": "{'a': 2, 'b': 3}"}, expected)
    assert not call_matches({"name": "add", "arguments": "a=2, b=3"}, expected)
    assert not call_matches({"name": None, "arguments": {}}, expected)   # an error event of a call it could not read
