"""Byte-level BPE tokenizer with HessGPT's special tokens, and the chat renderer (ids + loss mask).

    hessgpt tokenizer train --input corpus_fr.txt corpus_en.txt --vocab-size 8192 --out tok/
    tok = Tokenizer.load("tok/")
    ids = tok.encode("Bonjour 👋")                      # special-token strings in text stay plain text
    ids, mask = tok.render(conversation)                # docs/chat-format.md
    ids = tok.render_for_generation(conversation)       # ... ending with <|assistant|>

Training uses Hugging Face `tokenizers`. Encoding uses a `tiktoken` encoder built from the same merges when
it reproduces `tokenizers`' ids exactly (checked at load on a probe text; ~4x faster), else `tokenizers`.
"""

import argparse
import bisect
import hashlib
import json
import os
import random
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import cached_property

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hessgpt import datafiles
from hessgpt.errors import HessGPTError
from hessgpt.tools.calls import ToolCall, read_tool_call

# Fixed ids for tokenizers HessGPT trains (docs/chat-format.md, section 2).
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
CODE, RESULT, SEARCH, SEARCH_END = "<|code|>", "<|result|>", "<search>", "</search>"
TOOL_CALL, TOOL_RESPONSE = "<|tool_call|>", "<|tool_response|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, SYSTEM, USER, ASSISTANT, END, CODE, RESULT, SEARCH, SEARCH_END, TOOL_CALL, TOOL_RESPONSE]
# What each token stands for, in plain text: when an existing model's vocabulary gains HessGPT's tokens, a new
# embedding (and output) row starts as the mean of these words' rows ("descriptive" initialization), so the
# model already predicts `<|code|>` where it would open a code fence. From the overall mean instead, the new
# tokens start ~22,000th in SmolLM2-135M's ranking and 90 LoRA steps only bring `<|code|>` to ~135-530th.
TOKEN_DESCRIPTIONS = {
    PAD: " ", BOS: "\n", EOS: "\n\n", UNK: "?", SYSTEM: "System:", USER: "User:", ASSISTANT: "Assistant:",
    END: "\n```\n", CODE: "```python\n", RESULT: "Output:\n", SEARCH: "Search the web for:", SEARCH_END: "\n",
    TOOL_CALL: '{"name": "', TOOL_RESPONSE: "Function returned:",
}

# GPT-2's pre-tokenization regex, which the `tokenizers` ByteLevel pre-tokenizer uses too.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The same with one token per digit (as Llama/Mistral do): small models copy and compute numbers far better
# when "345" is always 3-4-5 rather than whatever merges BPE happened to learn.
DIGITS_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# SmolLM2's pre-tokenizer (`Digits(individual_digits)` then ByteLevel's GPT-2 regex, llama.cpp's "smollm" kind)
# as one regex: DIGITS_PATTERN but a whitespace run before a digit stays whole ("  1" -> "  ", "1"), as it
# does when the digit is split off first (DIGITS_PATTERN gives " ", " ", "1").
SMOLLM_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"""
META_FILE = "hessgpt_tokenizer.json"
_PROBE = ("Bonjour, ça va ? L'été à Paris — 3,14 € !  Hello   world\n\tdef f(x):\n        return x**2  # 👋🇫🇷\n"
          "Ünïcödé ½ ∑ 中文 日本語 ...!!! 12345678 don't we'll")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character table (what ByteLevel BPE vocab strings use)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the ids of HessGPT's special tokens and the chat renderer."""

    def __init__(self, hf_tokenizer, special_ids: dict[str, int] | None = None, path: str | None = None,
                 template: dict | None = None):
        self.hf = hf_tokenizer
        self.hf.encode_special_tokens = True  # text never becomes a special token
        self.path = path
        self.special = special_ids or {t: hf_tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in self.special.items() if i is None and t != PAD]
        if missing:
            raise HessGPTError(f"tokenizer{' ' + path if path else ''} lacks special tokens {missing}; "
                               "adopt it with `hessgpt tokenizer adopt` to add them")
        self.special_id_set = {i for i in self.special.values() if i is not None}
        self.pad_id = self.special.get(PAD) if self.special.get(PAD) is not None else self.special[UNK]
        self.bos_id, self.eos_id, self.end_id = self.special[BOS], self.special[EOS], self.special[END]
        self.system_id, self.user_id, self.assistant_id = self.special[SYSTEM], self.special[USER], self.special[ASSISTANT]
        self.code_id, self.result_id = self.special[CODE], self.special[RESULT]
        self.search_id, self.search_end_id = self.special[SEARCH], self.special[SEARCH_END]
        self.tool_call_id, self.tool_response_id = self.special[TOOL_CALL], self.special[TOOL_RESPONSE]
        self._fast = None
        self._fast_checked = False
        # An imported model's own chat format (docs/chat-format.md, "Imported models"): {"chat_template": Jinja
        # text, "bos_token": str, "eos_token": str}; None = HessGPT's format. It travels in hessgpt_tokenizer.json.
        self.template = ChatTemplate(template, self) if template and template.get("chat_template") else None

    # ---- persistence ------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str) -> "Tokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        if not os.path.exists(file):
            raise HessGPTError(f"{path}: no tokenizer.json found")
        try:
            hf = HFTokenizer.from_file(file)
        except Exception as e:  # a corrupt file: name it, don't dump a Rust traceback
            raise HessGPTError(f"{file}: not a valid tokenizer.json ({str(e).splitlines()[0]})") from None
        special, template = None, None
        meta = os.path.join(os.path.dirname(file), META_FILE)
        if os.path.exists(meta):
            with open(meta) as f:
                blob = json.load(f)
            special, template = blob["special_tokens"], blob.get("chat_template")
        return cls(hf, special, path=path, template=template)

    def save(self, out_dir: str) -> None:
        os.makedirs(out_dir, exist_ok=True)
        self.hf.encode_special_tokens = False  # the serialized tokenizer behaves like any HF tokenizer
        self.hf.save(os.path.join(out_dir, "tokenizer.json"))
        self.hf.encode_special_tokens = True
        with open(os.path.join(out_dir, META_FILE), "w") as f:
            blob = {"special_tokens": self.special, "vocab_size": self.vocab_size, "hash": self.hash}
            if self.template is not None:
                blob["chat_template"] = self.template.spec
            json.dump(blob, f, indent=2, ensure_ascii=False)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @cached_property
    def hash(self) -> str:
        """Identity of the vocabulary + merges: shards and checkpoints record it to catch mismatches."""
        self.hf.encode_special_tokens = False
        blob = self.hf.to_str()
        self.hf.encode_special_tokens = True
        model = json.loads(blob)["model"]
        return hashlib.sha256(json.dumps([model.get("vocab"), model.get("merges"), self.special], sort_keys=True).encode()).hexdigest()[:16]

    # ---- encode / decode --------------------------------------------------------------------

    def _fast_encoder(self):
        """tiktoken encoder from the same byte-level merges, used only if it reproduces `tokenizers` exactly."""
        if self._fast_checked:
            return self._fast
        self._fast_checked = True
        try:
            import tiktoken
        except ImportError:
            return None
        blob = json.loads(self.hf.to_str())
        model, pattern = blob["model"], _split_pattern(blob.get("pre_tokenizer"))
        if model.get("type") != "BPE" or pattern is None:
            return None
        byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
        ranks = {}
        try:
            for token, idx in model["vocab"].items():
                if idx in self.special_id_set:
                    continue
                ranks[bytes(byte_decoder[c] for c in token)] = idx
        except KeyError:
            return None  # not a byte-level vocabulary (e.g. SentencePiece-style)
        if len(ranks) < 256:
            return None
        try:
            enc = tiktoken.Encoding(name=f"hessgpt-{self.hash}", pat_str=pattern, mergeable_ranks=ranks,
                                    special_tokens={}, explicit_n_vocab=None)
        except Exception:
            return None
        probe = _PROBE * 3
        if enc.encode_ordinary(probe) != self.hf.encode(probe, add_special_tokens=False).ids:
            return None
        self._fast = enc
        return enc

    def encode(self, text: str) -> list[int]:
        fast = self._fast_encoder()
        if fast is not None:
            return fast.encode_ordinary(text)
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        fast = self._fast_encoder()
        if fast is not None:
            return fast.encode_ordinary_batch(texts, num_threads=num_threads)
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def encode_slow(self, text: str) -> list[int]:
        """Always `tokenizers` (the reference the fast path is checked against)."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special)

    def token_str(self, i: int) -> str:
        return self.hf.id_to_token(i)

    # ---- chat rendering (docs/chat-format.md) -----------------------------------------------

    def render(self, conversation, for_generation: bool = False) -> tuple[list[int], list[int]]:
        """A conversation (dict with "messages", or the list itself) -> (ids, loss_mask).

        An assistant message with `"weight": 0` (default 1) is context only: its tokens get mask 0, and so does
        the turn's closing `<|end|>` when it is the turn's last assistant message."""
        if self.template is not None:  # an imported model: its own template around HessGPT's tool blocks
            return self.template.render(conversation, for_generation)
        messages, tools = _messages_and_tools(conversation)
        ids: list[int] = [self.bos_id]
        mask: list[int] = [0]

        def add(tokens: list[int], m: int):
            ids.extend(tokens)
            mask.extend([m] * len(tokens))

        in_turn = False  # inside an assistant turn (after <|assistant|>, before its closing <|end|>)
        turn_weight = 1  # `weight` of the turn's last assistant message: 0 masks it (docs/chat-format.md)
        for i, msg in enumerate(messages):
            role = msg.get("role")
            content = msg.get("content") or ""
            if not isinstance(content, str):
                raise HessGPTError(f"message {i}: content must be a string, got {type(content).__name__}")
            if role in ("system", "user") and in_turn:
                add([self.end_id], turn_weight)
                in_turn = False
            if role == "system":
                if i != 0:
                    raise HessGPTError(f"message {i}: a system message must come first")
                text = content
                if tools:
                    text = with_tools(text, tools)
                add([self.system_id] + self.encode(text) + [self.end_id], 0)
            elif role == "user":
                add([self.user_id] + self.encode(content) + [self.end_id], 0)
            elif role == "assistant":
                w = msg.get("weight", 1)
                if type(w) is not int or w not in (0, 1):
                    raise HessGPTError(f"message {i}: weight must be 0 or 1, got {w!r}")
                if not in_turn:
                    add([self.assistant_id], 0)
                    in_turn = True
                turn_weight = w   # the turn's closing <|end|> goes with its last assistant message
                add(self.encode(content), w)
                add(self.action_ids(msg), w)
            elif role == "tool":
                if not in_turn:
                    raise HessGPTError(f"message {i}: a tool message must follow an assistant message")
                add(self.result_ids(msg), 0)
            else:
                raise HessGPTError(f"message {i}: unknown role {role!r}")
        if in_turn:
            last = messages[-1]
            if last.get("role") == "assistant" and not for_generation:
                add([self.end_id], turn_weight)
        if for_generation:
            if in_turn:
                raise HessGPTError("render_for_generation: the conversation already ends inside an assistant turn")
            add([self.assistant_id], 0)
        return ids, mask

    def action_blocks(self, msg: dict) -> list[int | str]:
        """An assistant message's tool blocks as special ids and texts: <|code|>..<|end|>,
        <|tool_call|>{json}<|end|>, <search>..</search>."""
        out: list[int | str] = []
        if msg.get("code") is not None:
            out += [self.code_id, msg["code"], self.end_id]
        for call in msg.get("tool_calls") or []:
            call_json = json.dumps({"name": call["name"], "arguments": call.get("arguments", {})}, ensure_ascii=False)
            out += [self.tool_call_id, call_json, self.end_id]
        if msg.get("search") is not None:
            out += [self.search_id, msg["search"], self.search_end_id]
        return out

    def result_blocks(self, msg: dict) -> list[int | str]:
        """A tool message: <|result|>..<|end|> (python, search) or <|tool_response|>..<|end|> (a function)."""
        opener = self.result_id if msg.get("name") in ("python", "search", None) else self.tool_response_id
        return [opener, msg.get("content") or "", self.end_id]

    def _ids(self, blocks: list[int | str]) -> list[int]:
        return [i for b in blocks for i in ([b] if isinstance(b, int) else self.encode(b))]

    def action_ids(self, msg: dict) -> list[int]:
        return self._ids(self.action_blocks(msg))

    def result_ids(self, msg: dict) -> list[int]:
        return self._ids(self.result_blocks(msg))

    @property
    def stop_ids(self) -> list[int]:
        """Tokens that end an answer: HessGPT's <|end|> and </s>, plus an imported template's own end-of-turn
        and role tokens (e.g. ChatML's <|im_end|>, <|im_start|>)."""
        own = [self.end_id, self.eos_id]
        return own + [i for i in self.template.stop_ids if i not in own] if self.template is not None else own

    def render_for_generation(self, conversation) -> list[int]:
        """Ids of the conversation followed by `<|assistant|>`: the prompt for the next answer."""
        return self.render(conversation, for_generation=True)[0]

    def parse(self, ids: list[int]) -> list[dict]:
        """Token ids (as rendered, possibly with a generated answer) -> messages. Inverse of `render`."""
        messages: list[dict] = []
        cur: dict | None = None      # the assistant message text is appended to
        calls: list[dict] = []       # tool calls awaiting their responses, in order
        i, n = 0, len(ids)

        def read_until(j: int, stop: int) -> tuple[str, int]:
            k = j
            while k < n and ids[k] != stop:
                k += 1
            return self.decode(ids[j:k]), k + 1  # skip the closing token

        def assistant() -> dict:
            messages.append({"role": "assistant", "content": ""})
            return messages[-1]

        while i < n:
            t = ids[i]
            if t in (self.system_id, self.user_id):
                text, i = read_until(i + 1, self.end_id)
                role = "system" if t == self.system_id else "user"
                content = without_tools(text) if role == "system" else text
                if not (role == "system" and content == "" and text.startswith(TOOLS_HEADER)):  # the tools' own system message
                    messages.append({"role": role, "content": content})
                cur = None
            elif t == self.assistant_id:
                cur, i = assistant(), i + 1
            elif t in (self.code_id, self.search_id, self.tool_call_id):
                if cur is None or ("code" in cur or "search" in cur or ("tool_calls" in cur and t != self.tool_call_id)):
                    cur = assistant()
                if t == self.code_id:
                    cur["code"], i = read_until(i + 1, self.end_id)
                    lang = code_language(cur["code"])
                    if lang != "python":
                        cur["code_lang"] = lang
                elif t == self.search_id:
                    cur["search"], i = read_until(i + 1, self.search_end_id)
                else:
                    text, i = read_until(i + 1, self.end_id)
                    read = read_tool_call(text)           # the one lenient parser (hessgpt/tools/calls.py)
                    # unparsable: kept verbatim for the caller to report
                    call = read.to_dict() if isinstance(read, ToolCall) else {"name": None, "arguments": text}
                    cur.setdefault("tool_calls", []).append(call)
                    calls.append(call)
            elif t in (self.result_id, self.tool_response_id):
                text, i = read_until(i + 1, self.end_id)
                if t == self.tool_response_id:
                    name = calls.pop(0)["name"] if calls else None
                else:
                    name = "search" if cur is not None and "search" in cur else "python"
                messages.append({"role": "tool", "name": name, "content": text})
                cur = None
            elif t == self.end_id:  # closes the assistant's turn
                cur, calls, i = None, [], i + 1
            elif t in self.special_id_set:  # <s>, </s>, <pad>: structure only
                i += 1
            else:
                j = i
                while j < n and ids[j] not in self.special_id_set:
                    j += 1
                if cur is None or any(k in cur for k in ("code", "search", "tool_calls")):
                    cur = assistant()
                cur["content"] += self.decode(ids[i:j])
                i = j
        return messages

    # ---- Hugging Face export ----------------------------------------------------------------

    @property
    def turn_end_id(self) -> int:
        """The token that closes an assistant turn: <|end|>, or an imported template's own (e.g. <|im_end|>)."""
        t = self.template
        return t.end_of_turn if t is not None and t.end_of_turn is not None else self.end_id

    def chat_template(self) -> str:
        """A Jinja template rendering the same text as `render` (for `transformers.apply_chat_template`)."""
        if self.template is not None:
            return self.template.hf_template()
        s = {k: v for k, v in zip(["bos", "sys", "usr", "ast", "end", "code", "res", "srch", "srch_end", "call", "resp"],
                                  [BOS, SYSTEM, USER, ASSISTANT, END, CODE, RESULT, SEARCH, SEARCH_END, TOOL_CALL, TOOL_RESPONSE])}
        return (
            _JINJA_TOOLS_SYSTEM +
            "{{- '" + s["bos"] + "' -}}"
            "{%- set ns = namespace(in_turn=false) -%}"
            "{%- for m in messages -%}"
            "{%- if m.role in ['system', 'user'] and ns.in_turn -%}{{- '" + s["end"] + "' -}}{%- set ns.in_turn = false -%}{%- endif -%}"
            "{%- if m.role == 'system' -%}"
            "{{- '" + s["sys"] + "' + m.content -}}"
            "{%- if tools -%}{{- ('\\n\\n' if m.content else '') + '# Tools\\n' -}}{%- for t in tools -%}{{- (t | tojson) -}}{%- if not loop.last -%}{{- '\\n' -}}{%- endif -%}{%- endfor -%}{%- endif -%}"
            "{{- '" + s["end"] + "' -}}"
            "{%- elif m.role == 'user' -%}{{- '" + s["usr"] + "' + m.content + '" + s["end"] + "' -}}"
            "{%- elif m.role == 'assistant' -%}"
            "{%- if not ns.in_turn -%}{{- '" + s["ast"] + "' -}}{%- set ns.in_turn = true -%}{%- endif -%}"
            "{{- m.content or '' -}}"
            "{%- if m.code is defined and m.code is not none -%}{{- '" + s["code"] + "' + m.code + '" + s["end"] + "' -}}{%- endif -%}"
            "{%- if m.tool_calls -%}{%- for c in m.tool_calls -%}{%- set f = c.function if c.function is defined else c -%}"
            "{{- '" + s["call"] + "' + ({'name': f.name, 'arguments': f.arguments} | tojson) + '" + s["end"] + "' -}}{%- endfor -%}{%- endif -%}"
            "{%- if m.search is defined and m.search is not none -%}{{- '" + s["srch"] + "' + m.search + '" + s["srch_end"] + "' -}}{%- endif -%}"
            "{%- if loop.last and not add_generation_prompt -%}{{- '" + s["end"] + "' -}}{%- endif -%}"
            "{%- elif m.role == 'tool' -%}"
            "{%- if m.name in ['python', 'search'] or m.name is not defined or m.name is none -%}{{- '" + s["res"] + "' -}}{%- else -%}{{- '" + s["resp"] + "' -}}{%- endif -%}"
            "{{- m.content + '" + s["end"] + "' -}}"
            "{%- endif -%}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{- '" + s["ast"] + "' -}}{%- endif -%}"
        )


# ---- an imported model's own chat template (docs/chat-format.md, "Imported models") -------------------

_SLOT = "\ue000{}\ue001"   # private-use characters: a message's place in the rendered template text
_SLOT_RE = re.compile("\ue000(\\d+)\ue001")


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


class ChatTemplate:
    """Conversation turns rendered by the checkpoint's own Jinja chat template (as transformers'
    `apply_chat_template` renders it), HessGPT's tool blocks inside the assistant turn.

    The template is rendered with every message's content replaced by a slot marker; the text between
    slots (the template's own structure, e.g. `<|im_start|>user\n`) is encoded with the vocabulary's special
    tokens recognised, the contents never are. One assistant turn = the assistant and tool messages after a
    user message, handed to the template as ONE assistant message whose content is HessGPT's body: text,
    `<|code|>..<|end|>`, `<|result|>..<|end|>`, text... Loss mask: the body's assistant tokens (weight) and
    the template's end-of-turn token after it (the first special token the template writes after the turn,
    e.g. `<|im_end|>`); results and all template structure 0."""

    def __init__(self, spec: dict, tok: "Tokenizer"):
        self.spec = {k: spec.get(k) for k in ("chat_template", "bos_token", "eos_token")}
        self.tok = tok
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self.jinja = env.from_string(self.spec["chat_template"])
        except jinja2.exceptions.TemplateError as e:
            raise HessGPTError(f"chat template: not a valid Jinja template ({e})") from None
        # every special token of the vocabulary (a Llama 2 template's "</s>" is the model's own </s>)
        self.specials = {t.content: i for i, t in tok.hf.get_added_tokens_decoder().items() if t.special}
        self.special_text = {i: t for t, i in self.specials.items()}
        # a copy of the vocabulary that matches special-token strings (the tokenizer's own never does)
        self.hf_specials = type(tok.hf).from_str(tok.hf.to_str())
        self.hf_specials.encode_special_tokens = False
        self.special_re = re.compile("|".join(re.escape(t) for t in sorted(self.specials, key=len, reverse=True))) if self.specials else None
        # does the template strip message contents (Llama 3's `content | trim`)? then render strips them too
        self.trims = False
        probe = [{"role": "user", "content": " " + _SLOT.format(0) + " "}, {"role": "assistant", "content": " " + _SLOT.format(1) + " "}]
        self.trims = " " + _SLOT.format(0) not in self._jinja(probe, False)
        # the template's end-of-turn and role tokens, from a one-turn probe: the engine stops on them
        ids, mask = self.render([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
        structure = [i for i, m in zip(ids, mask) if i in self.specials.values()]
        eos = self.specials.get(self.spec.get("eos_token") or "")
        self.stop_ids = list(dict.fromkeys(structure + ([eos] if eos is not None else [])))
        ends = [i for i, m in zip(ids, mask) if m and i in self.specials.values()]
        self.end_of_turn = ends[0] if ends else None

    def hf_template(self) -> str:
        """The checkpoint's template behind a Jinja prelude that folds each assistant turn (text, tool blocks,
        results) into one assistant message as `render` does, and the tools into the system text: for
        `transformers.apply_chat_template` on the exported model (same text as `render`)."""
        prelude = (
            _JINJA_TOOLS_SYSTEM +
            "{%- set hg = namespace(out=[], body='', open=false) -%}"
            "{%- for m in messages -%}"
            "{%- if m.role in ['system', 'user'] -%}"
            "{%- if hg.open -%}{%- set hg.out = hg.out + [{'role': 'assistant', 'content': hg.body}] -%}{%- set hg.open = false -%}{%- endif -%}"
            "{%- set hg.body = m.content or '' -%}"
            "{%- if m.role == 'system' and tools -%}{%- set hg.body = hg.body + ('\n\n' if hg.body else '') + '# Tools\n' -%}"
            "{%- for t in tools -%}{%- set hg.body = hg.body + (t | tojson) + ('' if loop.last else '\n') -%}{%- endfor -%}{%- endif -%}"
            "{%- set hg.out = hg.out + [{'role': m.role, 'content': hg.body}] -%}"
            "{%- elif m.role == 'assistant' -%}"
            "{%- if not hg.open -%}{%- set hg.body = '' -%}{%- set hg.open = true -%}{%- endif -%}"
            "{%- set hg.body = hg.body + (m.content or '') -%}"
            "{%- if m.code is defined and m.code is not none -%}{%- set hg.body = hg.body + '" + CODE + "' + m.code + '" + END + "' -%}{%- endif -%}"
            "{%- if m.tool_calls -%}{%- for c in m.tool_calls -%}{%- set f = c.function if c.function is defined else c -%}"
            "{%- set hg.body = hg.body + '" + TOOL_CALL + "' + ({'name': f.name, 'arguments': f.arguments} | tojson) + '" + END + "' -%}{%- endfor -%}{%- endif -%}"
            "{%- if m.search is defined and m.search is not none -%}{%- set hg.body = hg.body + '" + SEARCH + "' + m.search + '" + SEARCH_END + "' -%}{%- endif -%}"
            "{%- elif m.role == 'tool' -%}"
            "{%- set hg.body = hg.body + ('" + RESULT + "' if m.name in ['python', 'search'] or m.name is not defined or m.name is none else '" + TOOL_RESPONSE + "') + m.content + '" + END + "' -%}"
            "{%- endif -%}"
            "{%- endfor -%}"
            "{%- if hg.open -%}{%- set hg.out = hg.out + [{'role': 'assistant', 'content': hg.body}] -%}{%- endif -%}"
            "{%- set messages = hg.out %}")
        return prelude + self.spec["chat_template"]

    def _structure(self, text: str, weight: int) -> list[tuple[int | str, int]]:
        """Template text -> (special id or text, weight) pieces; the text up to and including the first special
        token gets `weight` (the closing of an assistant turn, e.g. `<|im_end|>`), the rest 0."""
        out: list[tuple[int | str, int]] = []
        pos, w = 0, weight
        for m in self.special_re.finditer(text) if self.special_re is not None else ():
            if m.start() > pos:
                out.append((text[pos:m.start()], w))
            out.append((self.specials[m.group()], w))
            pos, w = m.end(), 0
        if pos < len(text):
            out.append((text[pos:], w))
        return out

    def _encode_run(self, text: str, after: int | None) -> list[tuple[int, tuple[int, int]]]:
        """(id, char offsets) of a text run, encoded as it is inside the whole string: after the special token
        `after` (a SentencePiece "first" prefix is not repeated there). A run holding a special-token string is
        encoded on its own (the string stays text)."""
        hf = self.tok.hf
        prefix = self.special_text.get(after) if after is not None else None
        if prefix is None or self.special_re.search(text):
            enc = hf.encode(text, add_special_tokens=False)
            return list(zip(enc.ids, enc.offsets))
        enc = self.hf_specials.encode(prefix + text, add_special_tokens=False)   # the prefix is special; the run has none
        if not enc.ids or enc.ids[0] != after:
            raise HessGPTError(f"chat template: {prefix!r} + text did not encode as that special token first")
        k = len(prefix)
        return [(i, (a - k, b - k)) for i, (a, b) in zip(enc.ids[1:], enc.offsets[1:])]

    def _encode(self, pieces: list[tuple[int | str, int]]) -> tuple[list[int], list[int]]:
        """(special id or text, weight) pieces -> (ids, mask). The texts between two special tokens are encoded
        as ONE run (as a tokenizer encodes the whole rendered string: SentencePiece's leading "▁" per run, merges
        across the template/content boundary), special-token strings inside them staying text; a token's weight
        is that of the piece holding its last character."""
        ids: list[int] = []
        mask: list[int] = []
        run: list[tuple[str, int]] = []

        def flush() -> None:
            if not run:
                return
            text = "".join(t for t, _ in run)
            ends, weights, n = [], [], 0
            for t, w in run:
                n += len(t)
                ends.append(n)
                weights.append(w)
            for i, (a, b) in self._encode_run(text, ids[-1] if ids else None):
                ids.append(i)
                mask.append(weights[min(bisect.bisect_right(ends, max(a, b - 1)), len(ends) - 1)])
            run.clear()

        for piece, w in pieces:
            if isinstance(piece, int):
                flush()
                ids.append(piece)
                mask.append(w)
            elif piece:
                run.append((piece, w))
        flush()
        return ids, mask

    def _jinja(self, messages: list[dict], add_generation_prompt: bool) -> str:
        try:
            return self.jinja.render(messages=messages, add_generation_prompt=add_generation_prompt, tools=None,
                                     bos_token=self.spec.get("bos_token") or "", eos_token=self.spec.get("eos_token") or "")
        except jinja2.exceptions.TemplateError as e:
            raise HessGPTError(f"the chat template refused the conversation: {e}") from None

    def render(self, conversation, for_generation: bool = False) -> tuple[list[int], list[int]]:
        tok = self.tok
        messages, tools = _messages_and_tools(conversation)
        shown: list[dict] = []                                # what the template sees: content = a slot marker
        bodies: list[list[tuple[int | str, int]]] = []        # per slot: the content's pieces (weighted)
        closing: list[int] = []                               # per slot: weight of the template's turn end after it
        turn = None                                           # slot of the open assistant turn
        for i, msg in enumerate(messages):
            role = msg.get("role")
            content = msg.get("content") or ""
            if not isinstance(content, str):
                raise HessGPTError(f"message {i}: content must be a string, got {type(content).__name__}")
            if role in ("system", "user"):
                if role == "system" and i != 0:
                    raise HessGPTError(f"message {i}: a system message must come first")
                if role == "system" and tools:
                    content = with_tools(content, tools)
                turn = None
                shown.append({"role": role, "content": _SLOT.format(len(bodies))})
                bodies.append([(content, 0)])
                closing.append(0)
            elif role == "assistant":
                w = msg.get("weight", 1)
                if type(w) is not int or w not in (0, 1):
                    raise HessGPTError(f"message {i}: weight must be 0 or 1, got {w!r}")
                if turn is None:
                    turn = len(bodies)
                    shown.append({"role": "assistant", "content": _SLOT.format(turn)})
                    bodies.append([])
                    closing.append(w)
                bodies[turn] += [(b, w) for b in [content] + tok.action_blocks(msg)]
                closing[turn] = w   # the turn's end token goes with its last assistant message
            elif role == "tool":
                if turn is None:
                    raise HessGPTError(f"message {i}: a tool message must follow an assistant message")
                bodies[turn] += [(b, 0) for b in tok.result_blocks(msg)]
            else:
                raise HessGPTError(f"message {i}: unknown role {role!r}")
        if for_generation and turn is not None:
            raise HessGPTError("render_for_generation: the conversation already ends inside an assistant turn")
        if self.trims:
            for body in bodies:
                if body and isinstance(body[0][0], str):
                    body[0] = (body[0][0].lstrip(), body[0][1])
                if body and isinstance(body[-1][0], str):
                    body[-1] = (body[-1][0].rstrip(), body[-1][1])
        text = self._jinja(shown, for_generation)
        pieces: list[tuple[int | str, int]] = []
        pos, expect, weight = 0, 0, 0
        for m in _SLOT_RE.finditer(text):
            k = int(m.group(1))
            if k != expect:
                raise HessGPTError(f"the chat template does not render each message's content once, in order (slot {k}, expected {expect})")
            pieces += self._structure(text[pos:m.start()], weight) + bodies[k]
            pos, expect, weight = m.end(), k + 1, closing[k]
        if expect != len(bodies):
            raise HessGPTError(f"the chat template does not render message content {expect} (it drops or reorders messages)")
        return self._encode(pieces + self._structure(text[pos:], weight))


def with_template(tok: "Tokenizer", chat_template: str | None, bos_token: str | None = None,
                  eos_token: str | None = None) -> "Tokenizer":
    """`tok` speaking an imported model's own chat template (kept unless it is missing or is HessGPT's own)."""
    if not chat_template or chat_template == tok.chat_template():
        return tok
    return Tokenizer(tok.hf, tok.special, path=tok.path,
                     template={"chat_template": chat_template, "bos_token": bos_token, "eos_token": eos_token})


def code_language(source: str) -> str:
    """The language of a code block: python if it parses as Python, else html/css/js by shape (such blocks
    are artifacts: previewed, never executed)."""
    import ast
    import re

    try:
        ast.parse(source)
        return "python"
    except (SyntaxError, ValueError):
        pass
    head = source.lstrip()
    if head.startswith("<"):
        return "html"
    if re.match(r"^[\w\s.#:,>*\[\]=\"'-]+\{[^}]*:[^}]*;?[^}]*\}", head) and not re.search(r"\b(function|const|let|var|=>)\b", head):
        return "css"
    if re.search(r"\b(function|const|let|var)\b|=>|document\.|console\.log|;\s*$", head, re.M):
        return "js"
    return "python"  # broken Python is still Python: running it returns the error the model can fix


def _split_pattern(pre: dict | None) -> str | None:
    """The regex a byte-level pre-tokenizer splits with (for the tiktoken fast path), or None if unknown."""
    if not pre:
        return None
    if pre.get("type") == "ByteLevel":
        return GPT2_PATTERN if pre.get("use_regex", True) else None
    if pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers", [])
        if (len(steps) == 2 and steps[0].get("type") == "Split" and steps[0].get("behavior") == "Isolated"
                and not steps[0].get("invert") and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex", True)):
            return steps[0]["pattern"].get("Regex")
        # SmolLM2's: every digit alone, then GPT-2's regex (ByteLevel use_regex) = DIGITS_PATTERN in one regex
        if (len(steps) == 2 and steps[0].get("type") == "Digits" and steps[0].get("individual_digits")
                and steps[1].get("type") == "ByteLevel" and steps[1].get("use_regex", True)):
            return SMOLLM_PATTERN
    return None


def _messages_and_tools(conversation) -> tuple[list[dict], list | None]:
    """The messages and tools of a conversation; with tools and no system message first, an empty system message
    is put first so the tools are rendered in it (docs/chat-format.md section 3), never dropped."""
    if isinstance(conversation, dict):
        messages, tools = conversation.get("messages") or [], conversation.get("tools")
    elif hasattr(conversation, "messages"):
        messages, tools = list(conversation.messages), getattr(conversation, "tools", None)
    else:
        messages, tools = list(conversation), None
    if tools and (not messages or messages[0].get("role") != "system"):
        messages = [{"role": "system", "content": ""}, *messages]
    return messages, tools


TOOLS_HEADER = "# Tools\n"


def with_tools(system: str, tools: list) -> str:
    """The system text with the tools block: SYSTEM + "\\n\\n# Tools\\n" + one JSON line per tool ("# Tools\\n..."
    alone for an empty system text)."""
    block = TOOLS_HEADER + "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return f"{system}\n\n{block}" if system else block


def without_tools(system_text: str) -> str:
    """The inverse of `with_tools` for parsing: the system text without its tools block."""
    return "" if system_text.startswith(TOOLS_HEADER) else system_text.split("\n\n" + TOOLS_HEADER, 1)[0]


# the same rule in the exported Jinja templates (to-hf / to-gguf): tools and no system message -> an empty one first
_JINJA_TOOLS_SYSTEM = ("{%- if tools and (messages | length == 0 or messages[0].role != 'system') -%}"
                       "{%- set messages = [{'role': 'system', 'content': ''}] + messages -%}{%- endif -%}")


# ---- training -------------------------------------------------------------------------------


def iter_texts(path: str) -> Iterator[str]:
    """Texts of a local file (hessgpt.datafiles.iter_texts: .txt one document per blank-line-separated block,
    .jsonl/.json "text"/"content" field or conversations, .parquet, gzip of those) or `hf:DATASET[:CONFIG]`
    (streamed)."""
    if path.startswith("hf:"):
        from datasets import load_dataset

        name, _, config = path[3:].partition(":")
        ds = load_dataset(name, config or None, split="train", streaming=True)
        for row in ds:
            text = row.get("text") or row.get("content")
            if text:
                yield text
        return
    if not os.path.exists(path):
        raise HessGPTError(f"tokenizer input {path!r} does not exist")
    yield from datafiles.iter_texts(path)


def _weighted_texts(paths: list[str], lang_weights: dict[str, float] | None, seed: int = 0) -> Iterator[str]:
    """All texts; with language weights, documents of over-represented languages are subsampled (by bytes)."""
    if not lang_weights:
        for p in paths:
            yield from iter_texts(p)
        return
    import py3langid as langid

    docs: list[tuple[str, str]] = []
    totals: dict[str, int] = {}
    for p in paths:
        for text in iter_texts(p):
            lang = langid.classify(text[:2000])[0]
            lang = lang if lang in lang_weights else "other"
            docs.append((lang, text))
            totals[lang] = totals.get(lang, 0) + len(text.encode())
    wanted = {k: v for k, v in lang_weights.items() if totals.get(k)}
    if not wanted:
        raise HessGPTError(f"--lang-weights: none of the languages {list(lang_weights)} found in the input")
    # largest scale s such that s * weight_l <= bytes_l for every language
    s = min(totals[k] / w for k, w in wanted.items())
    keep = {k: min(1.0, s * w / totals[k]) for k, w in wanted.items()}
    rng = random.Random(seed)
    for lang, text in docs:
        if lang == "other" or rng.random() < keep.get(lang, 0.0):
            yield text


def train_tokenizer(paths: list[str], vocab_size: int, lang_weights: dict[str, float] | None = None,
                    min_frequency: int = 2, seed: int = 0, split_digits: bool = True) -> Tokenizer:
    """Byte-level BPE whose total vocabulary (special tokens included) is `vocab_size`."""
    from tokenizers import Regex
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < len(SPECIAL_TOKENS) + 256 + 1:
        raise HessGPTError(f"--vocab-size {vocab_size} is too small (at least {len(SPECIAL_TOKENS) + 257})")
    hf = HFTokenizer(models.BPE())
    if split_digits:  # the split regex is explicit, so the tiktoken fast path uses exactly the same one
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(DIGITS_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=True)
    n_docs = 0

    def counted():
        nonlocal n_docs
        for t in _weighted_texts(paths, lang_weights, seed):
            n_docs += 1
            yield t

    hf.train_from_iterator(counted(), trainer=trainer)
    if n_docs == 0:
        raise HessGPTError(f"no text found in {paths}")
    return Tokenizer(hf, {t: i for i, t in enumerate(SPECIAL_TOKENS)})


def adopt_tokenizer(path: str) -> Tokenizer:
    """An existing tokenizer.json (e.g. Mistral's 32000) plus HessGPT's special tokens where missing."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as HFTokenizer

    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise HessGPTError(f"{path}: no tokenizer.json found")
    hf = HFTokenizer.from_file(file)
    missing = [t for t in SPECIAL_TOKENS if hf.token_to_id(t) is None and t != PAD]
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return Tokenizer(hf, {t: hf.token_to_id(t) for t in SPECIAL_TOKENS})


def description_rows(tok: Tokenizer, old_vocab_size: int) -> dict[int, list[int]]:
    """{new special id: ids of its TOKEN_DESCRIPTIONS text} for the special tokens at or beyond
    `old_vocab_size` (the rows an existing model lacks); the text is encoded with ids below it only."""
    rows = {}
    for name, i in tok.special.items():
        if i is not None and i >= old_vocab_size:
            ids = [j for j in tok.encode(TOKEN_DESCRIPTIONS[name]) if j < old_vocab_size]
            if ids:
                rows[i] = ids
    return rows


def _parse_lang_weights(s: str | None) -> dict[str, float] | None:
    if not s:
        return None
    out = {}
    for part in s.split(","):
        lang, _, w = part.partition("=")
        try:
            out[lang.strip()] = float(w)
        except ValueError:
            raise HessGPTError(f"--lang-weights: bad entry {part!r} (expected LANG=WEIGHT, e.g. en=0.6,fr=0.4)") from None
    return out


def cli_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="hessgpt tokenizer", description="Train or adopt a byte-level BPE tokenizer.")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a byte-level BPE on French/English text")
    t.add_argument("--input", nargs="+", required=True, help="text/jsonl/json/parquet files (.gz ok) or hf:DATASET[:CONFIG]")
    t.add_argument("--vocab-size", type=int, required=True, help="total vocabulary, special tokens included")
    t.add_argument("--out", required=True)
    t.add_argument("--lang-weights", help="e.g. en=0.6,fr=0.4 (documents are language-identified and subsampled)")
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--no-split-digits", action="store_true", help="let BPE merge digits (default: one token per digit)")
    a = sub.add_parser("adopt", help="take an existing tokenizer.json and add HessGPT's special tokens")
    a.add_argument("path")
    a.add_argument("--out", required=True)
    e = sub.add_parser("encode", help="print the ids of a text")
    e.add_argument("tokenizer")
    e.add_argument("text")
    args = p.parse_args(argv)
    if args.cmd == "train":
        tok = train_tokenizer(args.input, args.vocab_size, _parse_lang_weights(args.lang_weights), args.min_frequency,
                              split_digits=not args.no_split_digits)
    elif args.cmd == "adopt":
        tok = adopt_tokenizer(args.path)
    else:
        tok = Tokenizer.load(args.tokenizer)
        ids = tok.encode(args.text)
        print(ids)
        print(" ".join(repr(tok.decode([i])) for i in ids))
        return 0
    tok.save(args.out)
    fast = "tiktoken (verified identical)" if tok._fast_encoder() is not None else "tokenizers"
    print(f"saved {args.out}: vocab {tok.vocab_size}, {len(tok.special)} special tokens, hash {tok.hash}, encoder {fast}")
    return 0
