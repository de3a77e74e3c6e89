"""HFBackend on a tiny random MistralForCausalLM with a tokenizer and a LoRA adapter built here (nothing downloaded)."""

import json
import threading

import openai
import pytest
import torch

from hessgpt.engine import SamplingParams
from hessgpt.errors import HessGPTError
from hessgpt.serve.backends import ChatBackend, ContextLengthError, FenceSplitter, HFBackend

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}<<SYS>>{{ m['content'] }}<</SYS>>"
    "{% elif m['role'] == 'user' %}[INST]{{ m['content'] }}[/INST]"
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)
CORPUS = ["Bonjour, comment allez-vous ? Hello, how are you today?", "The answer is 42. La réponse est 42.",
          "print(6 * 7)\n```python\nimport math\n```", "Paris est la capitale de la France."] * 20


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """-> (model_dir, adapter_dir): a 2-layer Mistral, its byte-level BPE tokenizer with a chat template, a LoRA."""
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("hf")
    model_dir, adapter_dir = root / "tiny-mistral", root / "tiny-lora"
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                     pad_token="<pad>", chat_template=CHAT_TEMPLATE)
    hf_tok.save_pretrained(model_dir)
    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=len(hf_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
                        pad_token_id=hf_tok.pad_token_id)
    model = MistralForCausalLM(cfg)
    model.save_pretrained(model_dir)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"],
                                            init_lora_weights=False))
    lora.save_pretrained(adapter_dir)
    return str(model_dir), str(adapter_dir)


@pytest.fixture(scope="module")
def base(tiny_model):
    return HFBackend(tiny_model[0])


@pytest.fixture(scope="module")
def adapted(tiny_model):
    return HFBackend(tiny_model[0], tiny_model[1])


MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bonjour, comment allez-vous ?"}]


def run(backend, params=None, messages=MSGS, **kw):
    events = list(backend.stream_chat(messages, params or SamplingParams(max_new_tokens=16), **kw))
    text = "".join(e.text for e in events if e.type == "text")
    return text, events


def test_streams_text_and_ends_with_done(base):
    assert isinstance(base, ChatBackend) and base.context_length == 256 and base.model_id == "tiny-mistral"
    text, events = run(base)
    assert events[-1].type == "done" and all(e.type == "text" for e in events[:-1])
    done = events[-1].data
    assert done["prompt_tokens"] > 5 and 1 <= done["completion_tokens"] <= 16
    assert done["finish_reason"] in ("stop", "length")
    assert text and len([e for e in events if e.type == "text"]) > 1  # streamed in pieces
    assert run(base)[0] == text  # greedy is deterministic


def test_prompt_uses_the_models_chat_template(base):
    ids = base._encode(base._template_messages(MSGS, None))[0].tolist()
    assert base.tokenizer.decode(ids) == "<s><<SYS>>Be brief.<</SYS>>[INST]Bonjour, comment allez-vous ?[/INST]"


def test_adapter_changes_the_output(base, adapted):
    assert adapted.model_id == "tiny-mistral+tiny-lora"
    params = SamplingParams(max_new_tokens=12)
    ids = base._encode(base._template_messages(MSGS, None))
    with torch.inference_mode():
        lb, la = base.model(ids).logits, adapted.model(ids).logits
    assert not torch.allclose(lb, la, atol=1e-3)
    assert run(base, params)[0] != run(adapted, params)[0]


def test_seeded_sampling_is_reproducible(base):
    p = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, top_k=50, seed=3)
    assert run(base, p)[0] == run(base, p)[0]
    outs = {run(base, SamplingParams(max_new_tokens=12, temperature=1.5, seed=s))[0] for s in range(4)}
    assert len(outs) > 1  # the seed matters


def test_cancel_and_context_length(base):
    cancel = threading.Event()
    cancel.set()
    _, events = run(base, cancel=cancel)
    assert events[-1].data["finish_reason"] == "cancelled" and events[-1].data["completion_tokens"] == 0
    with pytest.raises(ContextLengthError):
        run(base, messages=[{"role": "user", "content": "Bonjour " * 300}])


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(HessGPTError, match="--hf-model"):
        HFBackend(str(tmp_path / "nope"))


class ScriptedHF(HFBackend):
    """The real tokenizer and template, but each generation round replays scripted text deltas."""

    def __init__(self, src: HFBackend, rounds, run_code=None):
        self.__dict__.update(src.__dict__)
        self.rounds, self.prompts, self.run_code, self.max_tool_rounds = list(rounds), [], run_code, 4

    def _generate_text(self, input_ids, params, budget, cancel, generator, kv=None):
        self.prompts.append(self.tokenizer.decode(input_ids[0]))
        yield from self.rounds.pop(0)   # no token is sampled (kv.sampled stays empty): no usage, no budget spent
        yield None  # EOS


def test_python_blocks_go_through_the_run_code_hook(base):
    ran = []

    def run_code(src):
        ran.append(src)
        return "ok", "42\n"

    b = ScriptedHF(base, [["Let me compute.\n``", "`py", "thon\nprint(6 *", " 7)\n```", "\nnot shown"],
                          ["The answer is ", "42."]], run_code=run_code)
    text, events = run(b, messages=[{"role": "user", "content": "6*7?"}])
    assert [e.type for e in events] == ["text", "code", "result", "text", "text", "done"]
    assert ran == ["print(6 * 7)"]
    assert events[1].text == "print(6 * 7)" and events[2].data["status"] == "ok" and events[2].text == "42\n"
    assert isinstance(events[2].data["duration_ms"], float) and events[2].data["duration_ms"] >= 0
    assert text == "Let me compute.\n\nThe answer is 42."  # text before / after the step: one blank line
    assert "```python" in b.prompts[0]  # the system prompt teaches the convention
    assert "42" in b.prompts[1] and "print(6 * 7)" in b.prompts[1]  # the result went back to the model
    assert events[-1].data["finish_reason"] == "stop"


def test_function_tools_and_artifacts(base):
    tools = [{"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}]
    b = ScriptedHF(base, [["Checking.\n```tool_call\n", '{"name": "get_weather", "arguments": {"city": "Paris"}}', "\n```"]])
    _, events = run(b, messages=[{"role": "user", "content": "Weather?"}], tools=tools)
    call = next(e for e in events if e.type == "tool_call")
    assert call.data["name"] == "get_weather" and call.data["arguments"] == {"city": "Paris"}
    assert events[-1].data["finish_reason"] == "tool_calls"
    assert "get_weather" in b.prompts[0]
    b = ScriptedHF(base, [["Here:\n```html\n<h1>Hi</h1>\n```\nDone, and ```js\nx()\n``` stays."]])
    text, events = run(b, messages=[{"role": "user", "content": "page"}])
    assert [e.text for e in events if e.type == "artifact"] == ["<h1>Hi</h1>"]
    assert text == "Here:\n\nDone, and ```js\nx()\n``` stays."


def test_fence_splitter_holds_partial_fences():
    s = FenceSplitter({"python"})
    out = []
    for ch in "a `b` ```python\nx = 1\n``` c ```sh\nls\n``` d":  # one character at a time
        out += s.feed(ch)
    out += s.flush()
    text = "".join(i[1] for i in out if i[0] == "text")
    assert [i for i in out if i[0] == "block"] == [("block", "python", "x = 1")]
    assert text == "a `b`  c ```sh\nls\n``` d"


def test_served_through_the_api(serve, tiny_model, adapted):
    srv = serve(adapted)
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
    expected = run(adapted, SamplingParams(max_new_tokens=10))[0]
    r = c.chat.completions.create(model="tiny-mistral+tiny-lora", messages=MSGS, max_tokens=10, temperature=0)
    assert r.choices[0].message.content == expected
    assert r.usage.completion_tokens <= 10 and r.usage.prompt_tokens > 5
    streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="tiny-mistral+tiny-lora", messages=MSGS, max_tokens=10, temperature=0, stream=True) if ch.choices)
    assert streamed == expected
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tiny-mistral+tiny-lora", messages=[{"role": "user", "content": "Bonjour " * 300}])
    assert e.value.code == "context_length_exceeded"
    body = json.loads(e.value.response.text)
    assert body["error"]["param"] == "messages"


def test_hf_folder_generation_config_is_the_default_sampling(tiny_model, tmp_path):
    """A Hugging Face folder's own generation_config.json, with HF's meaning (greedy unless do_sample)."""
    import shutil

    assert HFBackend(tiny_model[0]).generation_config == {"temperature": 0.0}  # save_pretrained: no do_sample
    d = tmp_path / "sampling"
    shutil.copytree(tiny_model[0], d)
    gen = json.loads((d / "generation_config.json").read_text())
    (d / "generation_config.json").write_text(json.dumps({**gen, "do_sample": True, "temperature": 0.6, "top_p": 0.9}))
    assert HFBackend(str(d)).generation_config == {"temperature": 0.6, "top_p": 0.9, "top_k": 50}


# ---- dtype, 4-bit, accelerate: decided before loading, errors in one line ---------------------------------


def test_dtype_rule_and_4bit_errors(tiny_model, monkeypatch):
    import importlib.util

    from hessgpt.device import inference_dtype
    from hessgpt.serve import backends

    cpu = torch.device("cpu")
    assert inference_dtype(cpu, "auto") == torch.float32 and inference_dtype(cpu, "bfloat16") == torch.bfloat16
    for cap, want in [((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16), ((7, 5), torch.float16), ((6, 1), torch.float16)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, cap=cap: cap)
        assert inference_dtype(torch.device("cuda", 0), "auto") == want, cap
    with pytest.raises(HessGPTError, match="--dtype 'int8'"):
        inference_dtype(cpu, "int8")
    with pytest.raises(HessGPTError, match="--load-in-4bit needs a CUDA GPU") as e:
        HFBackend(tiny_model[0], load_in_4bit=True, device="cpu")
    assert "\n" not in str(e.value)
    assert HFBackend(tiny_model[0], dtype="bfloat16").model.dtype == torch.bfloat16
    # on a GPU (faked: nothing is loaded, only the keyword arguments are decided)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    real_find_spec = importlib.util.find_spec
    installed = {"accelerate", "bitsandbytes"}

    def find_spec(name, *a):
        if name in ("accelerate", "bitsandbytes"):
            return object() if name in installed else None
        return real_find_spec(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    kw = backends.hf_load_kwargs(torch.device("cuda", 0), "auto", load_in_4bit=True)
    q = kw["quantization_config"]
    assert kw["dtype"] == torch.bfloat16 and kw["device_map"] == "auto"
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.bfloat16
    installed.discard("bitsandbytes")
    with pytest.raises(HessGPTError, match="--load-in-4bit needs bitsandbytes: pip install bitsandbytes"):
        backends.hf_load_kwargs(torch.device("cuda", 0), "auto", load_in_4bit=True)
    installed.discard("accelerate")
    with pytest.raises(HessGPTError, match="needs accelerate"):
        backends.hf_load_kwargs(torch.device("cuda", 0), "float16")


def test_flags_reach_the_hf_backend(monkeypatch):
    """chat/ask's flags and serve's go through the one builder (serve/build.py) to the same HFBackend call."""
    from hessgpt import chat
    from hessgpt.serve import app, build

    seen = []
    monkeypatch.setattr(build, "HFBackend", lambda *a, **kw: seen.append(kw) or "backend")
    p = chat.argparse.ArgumentParser()
    chat.add_backend_args(p)
    assert build.build_backend(p.parse_args(["--hf-model", "m", "--dtype", "bfloat16", "--load-in-4bit", "--no-tools"])) == "backend"
    assert seen[-1]["dtype"] == "bfloat16" and seen[-1]["load_in_4bit"] is True and seen[-1]["registry"] is None
    build.build_backend(p.parse_args(["--hf-model", "m"]))
    assert "calculator" in seen[-1]["registry"] and seen[-1]["run_code"] is not None
    with pytest.raises(HessGPTError, match="apply to --hf-model"):
        build.build_backend(p.parse_args(["ck", "--dtype", "float16"]))
    with pytest.raises(HessGPTError, match="not both"):
        build.build_backend(p.parse_args(["ck", "--hf-model", "m"]))
    args = app.build_parser().parse_args(["--hf-model", "m", "--dtype", "float16", "--no-tools"])
    assert build.build_backend(args) == "backend" and seen[-1]["dtype"] == "float16" and not seen[-1]["load_in_4bit"]
    with pytest.raises(SystemExit):
        app.build_parser().parse_args(["--hf-model", "m", "--dtype", "int4"])
    # the same flags on both front ends are the same spec (serve alone batches --model1: --max-batch)
    flags = ["--model1", "ck", "--model2", "ck2", "--no-tools", "--search-index", "idx.db", "--http-allow", "a.org"]
    spec = build.BackendSpec.from_args(p.parse_args(flags))
    assert spec == build.BackendSpec(model1="ck", model2="ck2", tools=False, search_index="idx.db", http_allow=["a.org"])
    assert build.BackendSpec.from_args(app.build_parser().parse_args(flags)) == build.BackendSpec(
        **{**vars(spec), "max_batch": 8})
    # --code-votes: model 1's tool loop only, batch 1 only
    for bad, why in [(dict(model1="ck", code_votes=0), "must be >= 1"), (dict(hf_model="m", code_votes=3), "HessGPT --model1"),
                     (dict(model1="ck", plain=True, code_votes=3), "with tools"),
                     (dict(model1="ck", code_votes=3, max_batch=8), "needs --max-batch 1")]:
        with pytest.raises(HessGPTError, match=why):
            build.BackendSpec(**bad).check()
    assert build.BackendSpec(model1="ck", code_votes=5).check().code_votes == 5


# ---- the KV cache across tool rounds ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tiny_model, tmp_path_factory):
    """A 2-layer random LlamaForCausalLM (full attention: its cache can be cropped) with the same tokenizer."""
    import shutil

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("llama") / "tiny-llama"
    shutil.copytree(tiny_model[0], d, ignore=shutil.ignore_patterns("*.safetensors", "config.json", "generation_config.json"))
    tok = AutoTokenizer.from_pretrained(d)
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return HFBackend(str(d))


def test_cached_round_gives_the_tokens_of_a_full_prefill(tiny_llama):
    from hessgpt.serve.backends import KVState

    b, greedy = tiny_llama, SamplingParams(max_new_tokens=12)
    a = b._encode(b._template_messages(MSGS, None))                         # round 1 prompt (1, T)
    kv = KVState()
    list(b._generate(a, greedy, 10, None, None, kv=kv))
    assert kv.prefilled == [a.shape[1]] and len(kv.sampled) == 10
    assert kv.ids == a[0].tolist() + kv.sampled[:-1]                         # the last token was never fed
    result = b.tokenizer("\nOutput (ok):\n42\n", add_special_tokens=False)["input_ids"]
    for keep in (len(kv.sampled), 4):   # round 2 extends what the cache holds / shares only part of it
        kv2 = KVState()
        list(b._generate(a, greedy, 10, None, None, kv=kv2))
        round1 = kv2.sampled
        prompt2 = torch.tensor([a[0].tolist() + round1[:keep] + result])
        text_cached = "".join(t for t in b._generate(prompt2, greedy, 12, None, None, kv=kv2) if t)
        shared = a.shape[1] + min(keep, len(round1) - 1)
        assert kv2.prefilled == [a.shape[1], prompt2.shape[1] - shared]       # only the new tokens computed
        full = KVState()
        text_full = "".join(t for t in b._generate(prompt2, greedy, 12, None, None, kv=full) if t)
        assert full.prefilled == [prompt2.shape[1]]
        assert kv2.sampled == full.sampled and text_cached == text_full, keep
        assert kv2.past.get_seq_length() == len(kv2.ids)


class CodeOnceHF(HFBackend):
    """The real model and cache, but round 1 ends with a scripted ```python block after 6 real tokens."""

    def __init__(self, src: HFBackend, run_code):
        self.__dict__.update(src.__dict__)
        self.run_code, self.max_tool_rounds, self.kvs, self.round = run_code, 4, [], 0

    def _generate_text(self, input_ids, params, budget, cancel, generator, kv=None):
        self.kvs.append(kv)
        self.round += 1
        if self.round > 1:
            return self._generate(input_ids, params, budget, cancel, generator, kv=kv)
        real = list(self._generate(input_ids, params, 6, cancel, generator, kv=kv))
        return iter([t for t in real if t] + ["\n```python\nprint(6 * 7)\n```"])


def test_tool_rounds_keep_the_cache_through_stream_chat(tiny_llama):
    b = CodeOnceHF(tiny_llama, run_code=lambda src: ("ok", "42\n"))
    params = SamplingParams(max_new_tokens=30)
    text, events = run(b, params, messages=[{"role": "user", "content": "6*7?"}])
    assert [e.type for e in events if e.type != "text"] == ["code", "result", "done"]
    kv = b.kvs[0]
    assert b.kvs[1] is kv and len(kv.prefilled) == 2
    round2 = kv.prefilled[1]
    full_prompt = len(kv.ids) - len(kv.sampled) + 1   # round 2 prompt length (its fed ids minus the sampled ones)
    assert 0 < round2 <= full_prompt - kv.prefilled[0]  # the whole round-1 prompt came from the cache
    # the same round-2 prompt prefilled from scratch samples the same tokens
    from hessgpt.serve.backends import KVState

    prompt2 = torch.tensor([kv.ids[:full_prompt]])
    fresh = KVState()
    list(b._generate(prompt2, params, 30 - events[-1].data["completion_tokens"] + len(kv.sampled), None, None, kv=fresh))
    assert fresh.sampled[:len(kv.sampled)] == kv.sampled


def test_registry_tools_run_in_the_backend(base):
    """Registry tools (as HessGPT's router has: calculator, search, http_request) are offered beside the request's;
    a call to one runs here and the answer continues; a call to the caller's function still ends the turn."""
    from hessgpt.tools.registry import Tool, ToolRegistry

    reg = ToolRegistry([Tool("add", "Add two integers", {"type": "object", "properties": {"a": {"type": "integer"},
                             "b": {"type": "integer"}}, "required": ["a", "b"]}, lambda a, b: a + b)])
    b = ScriptedHF(base, [["```tool_call\n", '{"name": "add", "arguments": {"a": 15, "b": 27}}', "\n```"],
                          ["15 + 27 = ", "42."]])
    b.registry, b.context_length = reg, 4096   # scripted rounds: the prompt is only tokenized
    text, events = run(b, messages=[{"role": "user", "content": "15 + 27 ?"}])
    assert [e.type for e in events if e.type != "text"] == ["tool_call", "tool_result", "done"]
    result = next(e for e in events if e.type == "tool_result")
    assert result.text == "42" and result.data["name"] == "add" and result.data["duration_ms"] >= 0
    assert text == "15 + 27 = 42." and events[-1].data["finish_reason"] == "stop"
    assert '"name": "add"' in b.prompts[0]                        # offered in the system prompt
    assert "Result of add:" in b.prompts[1] and "42" in b.prompts[1]
    weather = [{"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}]
    b = ScriptedHF(base, [["```tool_call\n", '{"name": "get_weather", "arguments": {"city": "Paris"}}', "\n```"]])
    b.registry, b.context_length = reg, 4096
    _, events = run(b, messages=[{"role": "user", "content": "Weather?"}], tools=weather)
    assert events[-1].data["finish_reason"] == "tool_calls" and "get_weather" in b.prompts[0] and '"add"' in b.prompts[0]


def test_tool_calls_are_parsed_leniently_and_a_bad_one_goes_back_to_the_model(base):
    """The HF backend reads ```tool_call blocks with the router's parser (hessgpt.tools.calls): text around the object,
    a Python literal, string arguments; a block it cannot read is an error event quoting it, fed back (no exception)."""
    from hessgpt.tools.registry import Tool, ToolRegistry

    reg = ToolRegistry([Tool("add", "Add two integers", {"type": "object", "properties": {"a": {"type": "integer"},
                             "b": {"type": "integer"}}, "required": ["a", "b"]}, lambda a, b: a + b)])
    for body in ['Sure: {"name": "add", "arguments": {"a": 15, "b": 27}}', "{'name': 'add', 'arguments': {'a': 15, 'b': 27}}",
                 '{"name": "add", "arguments": "{\\"a\\": 15, \\"b\\": 27}"}']:
        b = ScriptedHF(base, [["```tool_call\n", body, "\n```"], ["= 42."]])
        b.registry, b.context_length = reg, 4096
        _, events = run(b, messages=[{"role": "user", "content": "15 + 27 ?"}])
        call = next(e for e in events if e.type == "tool_call")
        assert (call.data["name"], call.data["arguments"]) == ("add", {"a": 15, "b": 27}), body
        assert next(e for e in events if e.type == "tool_result").text == "42"
    b = ScriptedHF(base, [["```tool_call\n", '{"name": add}', "\n```"], ["Sorry."]])
    b.registry, b.context_length = reg, 4096
    text, events = run(b, messages=[{"role": "user", "content": "15 + 27 ?"}])
    [bad] = [e for e in events if e.type == "tool_call"]
    assert bad.data["name"] is None and "invalid JSON" in bad.data["error"] and "'{\"name\": add}'" in bad.data["error"]
    assert not any(e.type == "tool_result" for e in events) and text == "Sorry." and events[-1].data["finish_reason"] == "stop"
    assert "invalid JSON" in b.prompts[1]   # the model saw why and may write the call again


class ForcedLogits(torch.nn.Module):
    """The real model (its cache too), whose next-token logits allow only the next id of `script`: greedy
    sampling then writes exactly that script. `forced` counts the tokens it made the backend sample."""

    def __init__(self, model):
        super().__init__()
        self.model, self.script, self.forced = model, [], 0

    def forward(self, **kw):
        out = self.model(**kw)
        logits = torch.full_like(out.logits, float("-inf"))
        logits[:, -1, self.script.pop(0)] = 0.0
        out.logits = logits
        self.forced += 1
        return out


class ForcedRoundsHF(HFBackend):
    """Round r of a turn samples the ids of rounds[r] (then EOS) through the real generation loop."""

    def __init__(self, src: HFBackend, rounds: list[list[int]], run_code):
        self.__dict__.update(src.__dict__)
        self.model, self.rounds, self.run_code, self.max_tool_rounds = ForcedLogits(src.model), list(rounds), run_code, 4

    def _generate_text(self, input_ids, params, budget, cancel, generator, kv=None):
        self.model.script = self.rounds.pop(0) + [self.tokenizer.eos_token_id]
        return self._generate(input_ids, params, budget, cancel, generator, kv=kv)


def test_usage_and_max_new_tokens_count_tokens_across_tool_rounds(tiny_llama):
    """completion_tokens counts sampled token ids over every round (the EOS included, as the engine's router
    does), not text deltas (6 byte tokens of "日本" stream as 2 deltas), and max_new_tokens caps that sum."""
    ids = lambda text: tiny_llama.tokenizer(text, add_special_tokens=False)["input_ids"]   # noqa: E731
    round1, round2 = ids("日本 6*7:\n```python\nprint(6 * 7)\n```"), ids("= 42, 日本語 ok")
    assert len(ids("日本")) == 6                                                         # one byte per token
    msgs = [{"role": "user", "content": "6*7?"}]
    b = ForcedRoundsHF(tiny_llama, [round1, round2], run_code=lambda src: ("ok", "42\n"))
    text, events = run(b, SamplingParams(max_new_tokens=100), messages=msgs)
    assert [e.type for e in events if e.type != "text"] == ["code", "result", "done"]
    assert text.endswith("= 42, 日本語 ok") and events[-1].data["finish_reason"] == "stop"
    assert events[-1].data["completion_tokens"] == b.model.forced == len(round1) + len(round2) + 1
    budget = len(round1) + 5                                                           # round 2 gets 5 tokens
    b = ForcedRoundsHF(tiny_llama, [round1, round2], run_code=lambda src: ("ok", "42\n"))
    text, events = run(b, SamplingParams(max_new_tokens=budget), messages=msgs)
    assert events[-1].data["finish_reason"] == "length"
    assert events[-1].data["completion_tokens"] == b.model.forced == budget
