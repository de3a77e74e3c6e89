"""The router: HessGPT's tool loop, inside the engine's generation loop (docs/chat-format.md, section 4).

Model 1 answers token by token. When it writes `<|code|>`, the router collects the block until `<|end|>`,
feeds that `<|end|>` to the model, runs it in the sandbox (model 2 rewrites it only when that run fails:
`ToolRouter.run_code`) and forces `<|result|>OUTPUT<|end|>` into model 1's context; model 1 then finishes its
answer on the real result. Non-Python blocks (HTML/CSS/JS) are artifacts: shown, never executed. `<|tool_call|>{json}<|end|>`
runs a registered function (or hands the call back to the API client) and `<search>q</search>` queries the
search backend, both the same way.

The in-band tools are one table, `INBAND_TOOLS`: each entry names its opening token, its closing token, the
token its injected result starts with and its handler, a generator of Events whose return value is the text to
inject (`result = yield from tool.handler(router, text, turn)`; None: nothing injected, HAND_BACK: the API client
runs it). A new tool kind is one more entry.

Every step is an `Event` (hessgpt/events.py) that the CLI, the web page and the API show. The router gets
engines, never paths: the chat backend that loads the checkpoints and runs this loop per turn is
hessgpt/serve/dual.py (`DualModelBackend`).
"""

import ast
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass

from hessgpt.data.refine import refine_prompt, run_text
from hessgpt.engine import Engine, Generation, SamplingParams, TextDecoder
from hessgpt.errors import HessGPTError
from hessgpt.events import Event
from hessgpt.tokenizer import code_language
from hessgpt.tools.calls import ToolCallError, read_tool_call
from hessgpt.tools.sandbox import Sandbox
from hessgpt.tools.search import format_hits

MAX_RESULT_CHARS = 1500  # what is injected back into model 1's context (the event carries the full output)


@dataclass
class RouterConfig:
    max_tool_calls: int = 4        # code blocks / function calls / searches per turn
    turn_timeout_s: float = 60.0   # total wall time of one turn (generation + tools)
    refine_with_model2: bool = True   # ask model 2 when model 1's code fails (see ToolRouter.run_code)
    refine_max_tokens: int = 384      # ceiling of model 2's program: each call asks for 2x the draft's tokens + 32
    check_operands: bool = False      # also ask model 2 when a number of the request is missing from the code
    code_votes: int = 1               # self-consistency: model 1 writes this many blocks, the most printed result wins
    vote_temperature: float = 0.7     # sampling of the extra blocks (model 1's own block is the turn's)
    vote_seed: int = 0

    def __post_init__(self):
        if self.code_votes < 1:
            raise HessGPTError(f"code_votes must be >= 1, got {self.code_votes}")
        if self.vote_temperature <= 0:
            raise HessGPTError(f"vote_temperature must be > 0, got {self.vote_temperature}")


class TurnText:
    """Spacing of one assistant turn's text events: the text before a tool step and the text after its result
    are joined with exactly "\n\n" ("Je lance un petit script.\n\nRésultat : 100."), never glued.

    `push(delta)` returns what to emit now: whitespace at the end of the text so far is held back (it is
    replaced by the separator if a tool step follows, emitted as is if more text follows); `step()` marks a
    tool step; the first non-space text after it gets "\n\n" in front (when there was text before) and loses
    its leading whitespace. Whitespace still held at the end of the turn is dropped.
    """

    SEP = "\n\n"

    def __init__(self):
        self.held = ""          # trailing whitespace not emitted yet
        self.any = False        # some non-space text was emitted in this turn
        self.after_step = False

    def push(self, delta: str) -> str:
        if not delta:
            return ""
        if self.after_step:
            delta = delta.lstrip()
            if not delta:
                return ""
            self.after_step = False
            self.held = self.SEP if self.any else ""
        text = self.held + delta
        body = text.rstrip()
        if not body.strip():  # only whitespace so far: hold it
            self.held = text
            return ""
        self.held = text[len(body):]
        self.any = True
        return body

    def step(self) -> None:
        self.held, self.after_step = "", True


_OBJECT_REPR = re.compile(r"<(?:[\w.]+ )?(?:object|function|generator|built-in|bound method|map|filter|zip)\b[^>]*>")


def output_mismatch(request: str, stdout: str) -> str | None:
    """A cheap check that a program's output cannot be the answer to a request, or None: an object's default
    repr (`<generator object ...>`, `<function f at 0x...>`), a bare None, or a float that is not a number. The
    request is not used to guess what the answer looks like (a wrong guess would let model 2 replace a right
    result)."""
    out = stdout.strip()
    if _OBJECT_REPR.search(out):
        return "object repr"
    if out == "None":
        return "prints None"
    if out.lower() in ("nan", "inf", "-inf"):
        return "not a number"
    return None


_REQUEST_NUMBER = re.compile(r"(?<![\w.,])[0-9]+(?:[.,][0-9]+)?(?![\w])")
_CODE_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def _readings(number: str) -> set[float]:
    """The values a number written in a request may stand for: "474,26" -> 474.26; "1,000" -> 1000 or 1.0."""
    out = {float(number.replace(",", "."))}
    if re.fullmatch(r"[0-9]{1,3},[0-9]{3}", number):
        out.add(float(number.replace(",", "")))
    return out


def missing_operands(request: str, code: str) -> list[str]:
    """Numbers written in the request (digits; "70 000" is one number) that the program does not contain, 0
    left out ("... = 0" needs none): model 1's usual mistake is copying an operand wrong."""
    text = re.sub(r"(?<=[0-9])[ \u00a0\u202f](?=[0-9]{3}(?![0-9]))", "", request)
    have = set()
    for n in _CODE_NUMBER.findall(code):
        try:
            have.add(float(n))
        except ValueError:
            pass
    return [n for n in _REQUEST_NUMBER.findall(text) if float(n.replace(",", ".")) != 0 and not (_readings(n) & have)]


def _clip(text: str, n: int = MAX_RESULT_CHARS) -> str:
    return text if len(text) <= n else text[: n - 20] + "\n... (truncated)"


def sandbox_output(result) -> str:
    """What model 1 reads back: stdout, or a short error so it can recover."""
    if result.status == "ok":
        return result.stdout if result.stdout.strip() else "(no output: use print() to show a result)"
    return result.text()


def sandbox_run_code(sandbox=None):
    """`run_code(source) -> (status, output)` over the sandbox: the tools hook of the Hugging Face backend.
    The sandbox starts at the first call."""
    box = [sandbox]

    def run_code(source: str) -> tuple[str, str]:
        if box[0] is None:
            box[0] = Sandbox()
        result = box[0].run(source)
        return result.status, sandbox_output(result)

    return run_code


@dataclass
class TurnState:
    """What a tool handler knows of the turn: the user's request, the tools the API client runs, and the tool
    steps so far (this one included)."""

    request: str
    client_tools: set[str]
    calls: int = 0


class HandBack:
    """The return value of a handler whose call the API client runs (finish_reason "tool_calls")."""

    def __repr__(self) -> str:
        return "HAND_BACK"


HAND_BACK = HandBack()


@dataclass(frozen=True)
class InbandTool:
    """One kind of in-band tool: the model writes `opener`, the call, `closer` (tokenizer attribute names of the
    token ids). The router feeds the closer, runs `handler(router, call_text, turn)` (a generator of Events
    returning the text to inject, None for nothing, HAND_BACK for the API client) and injects
    `result` + the text (clipped to MAX_RESULT_CHARS) + <|end|>."""

    name: str
    opener: str
    closer: str
    result: str
    handler: Callable[["ToolRouter", str, TurnState], Generator[Event, None, str | HandBack | None]]


class ToolRouter:
    """Drives one assistant turn of model 1 (a `Generation`) through code, function calls and search."""

    def __init__(self, engine: Engine, sandbox=None, model2: Engine | None = None, registry=None, search=None,
                 config: RouterConfig | None = None):
        self.engine, self.tok = engine, engine.tokenizer
        self.sandbox, self.model2, self.registry, self.search = sandbox, model2, registry, search
        self.config = config or RouterConfig()
        self.tools = INBAND_TOOLS   # the in-band tool kinds this router runs (a new kind: one more entry)

    # ---- tools ------------------------------------------------------------------------------

    def refine_reason(self, result, request: str) -> str | None:
        """Why model 1's run needs model 2, or None: it ran and printed something that fits (model 2 is then
        never called, so it cannot break a working program)."""
        if result.status != "ok":
            return result.status                     # error, timeout, memory, output_cap, policy
        if not result.stdout.strip():
            return "no output"
        return output_mismatch(request, result.stdout)

    def refine(self, code: str, request: str, result) -> tuple[str | None, dict]:
        """Model 2's rewrite of `code` from the refinement prompt (hessgpt.data.refine.refine_prompt: the request,
        the draft and its real run), or None with {"skipped": why} when it cannot be asked (its context is too
        small for the prompt plus a program budget sized to the draft: 2x its tokens + 32, at most
        refine_max_tokens)."""
        tok2 = self.model2.tokenizer
        prompt = refine_prompt(request, code, result.status, result.stdout, result.stderr)
        ids = tok2.render_for_generation([{"role": "user", "content": prompt}]) + [tok2.code_id]
        budget = min(self.config.refine_max_tokens, 2 * len(tok2.encode(code)) + 32)
        info = {"prompt_tokens": len(ids), "max_new_tokens": budget, "context": self.model2.max_len}
        if len(ids) + budget > self.model2.max_len:
            return None, {**info, "skipped": "context"}
        params = SamplingParams(max_new_tokens=budget, temperature=0.0, stop_token_ids=[tok2.end_id, tok2.eos_id])
        return tok2.decode(self.model2.generate(ids, params)).strip(), info

    def run_code(self, code: str, request: str) -> Generator[Event, None, str]:
        """Events for one Python block; returns the text to inject as the result.

        The policy (docs/tools.md, "Model 2"): model 1's code runs first. Model 2 is asked only when that run
        fails (an error, a timeout, a policy refusal, no output) or prints something that cannot be an answer
        (`output_mismatch`); its program is used only if it runs, prints something, passes the same check and
        prints something else than model 1's: otherwise model 1's result stays."""
        if self.sandbox is None:
            yield Event("result", "tools are disabled: code was not executed", {"status": "disabled"})
            return "Error: code execution is disabled"
        result = self.sandbox.run(code)
        first_status = result.status
        refined_used = False
        reason = self.refine_reason(result, request) if self.model2 is not None and self.config.refine_with_model2 else None
        if reason is None and self.model2 is not None and self.config.refine_with_model2 and self.config.check_operands:
            missing = missing_operands(request, code)
            reason = f"operand {missing[0]} of the request not in the code" if missing else None
        if reason is not None:
            detail = run_text(result.status, result.stdout, result.stderr)
            refined, info = self.refine(code, request, result)
            if refined is None:
                yield Event("refine_skipped", f"model 2 not asked: its context ({info['context']} tokens) is too small "
                            f"for the prompt ({info['prompt_tokens']}) + the program ({info['max_new_tokens']})",
                            {"reason": reason, "detail": detail, **info})
            else:
                verdict, new = self._judge(code, refined, result, request)
                yield Event("refined_code", refined, {"lang": "python", "reason": reason, "detail": detail,
                                                      "used": verdict == "used", "verdict": verdict, **info})
                if verdict == "used":
                    result, refined_used = new, True
        yield Event("result", result.stdout if result.status == "ok" else result.text(),
                    {"status": result.status, "duration_ms": round(result.duration_ms, 1), "refined": refined_used,
                     "model1_status": first_status})
        return sandbox_output(result)

    def _judge(self, code: str, refined: str, first, request: str) -> tuple[str, object]:
        """("used", its run) when model 2's program replaces model 1's, else (why not, None): unchanged (model
        1's code given back), not_python (empty or unparsable), failed, no_output, still_wrong (the output check fails again),
        same_output (nothing to fix: model 1's result stays)."""
        if refined == code.strip():
            return "unchanged", None
        if not refined:
            return "not_python", None
        try:
            ast.parse(refined)
        except SyntaxError:
            return "not_python", None
        new = self.sandbox.run(refined)
        if new.status != "ok":
            return "failed", None
        if not new.stdout.strip():
            return "no_output", None
        if output_mismatch(request, new.stdout) is not None:
            return "still_wrong", None
        lost = set(missing_operands(request, refined)) - set(() if self.config.check_operands else missing_operands(request, code))
        if lost:   # model 2 dropped a number of the request that model 1's code had (or, checking operands, any)
            return "still_wrong", None
        if first.status == "ok" and new.stdout.strip() == first.stdout.strip():
            return "same_output", None
        return "used", new

    def vote_code(self, prefix: list[int], block: list[int], request: str, space: int) -> tuple[list[int], dict | None]:
        """Self-consistency over code (Wang et al. 2022, run through the sandbox): model 1 writes code_votes - 1
        more blocks after the same `prefix` (sampled at vote_temperature, batched), every block runs, and the
        block whose printed output is the most common among those that ran and printed something that can be
        an answer (`refine_reason` is None) wins; ties and no valid output keep model 1's own block (`block`,
        its greedy or sampled one). -> (the winning block's tokens, what the vote saw) or (block, None) when
        no vote is held (code_votes 1, no room in the context, not Python)."""
        n = self.config.code_votes - 1
        budget = min(2 * len(block) + 32, self.engine.max_len - len(prefix), space)
        if n < 1 or budget <= len(block) or self.sandbox is None or code_language(self.tok.decode(block)) != "python":
            return block, None
        tok = self.tok
        params = SamplingParams(max_new_tokens=budget, temperature=self.config.vote_temperature,
                                seed=self.config.vote_seed, stop_token_ids=[tok.end_id, tok.eos_id])
        blocks = [block] + self.engine.generate_batch([prefix] * n, params)   # rows share one seeded generator
        keys = [self._vote_key(tok.decode(b), request) for b in blocks]   # None: the block does not vote
        counts = Counter(k for k in keys if k is not None)
        best = max(counts.values(), default=0)
        # the first block with the most votes; model 1's own block (index 0) wins its ties, and no vote at all
        win = next((i for i, k in enumerate(keys) if k is not None and counts[k] == best), 0)
        return blocks[win], {"candidates": len(blocks), "valid": sum(counts.values()), "distinct": len(counts),
                             "winner_votes": counts.get(keys[win], 0), "chosen": win, "replaced": win != 0}

    def _vote_key(self, text: str, request: str) -> str | None:
        """What one candidate block votes for: its printed output, when it is Python that ran and printed
        something that can be an answer (`refine_reason` None)."""
        if code_language(text) != "python":
            return None
        result = self.sandbox.run(text)
        return None if self.refine_reason(result, request) is not None else result.stdout.strip()

    def call_function(self, call_text: str, client_tools: set[str]) -> Generator[Event, None, str | None]:
        """Events for one function call; returns the response text to inject, or None to hand the call to the
        API client (a tool it declared, not one HessGPT runs)."""
        call = read_tool_call(call_text)   # lenient: text around the object, Python literals, string arguments
        if isinstance(call, ToolCallError):  # returned to the model as the call's response, so it can retry
            yield Event("tool_call", call_text, {"name": None, "arguments": {}, "error": call.message})
            return call.as_result()
        name, args = call.name, call.arguments
        call_id = f"call_{abs(hash((name, call_text))) % 10**10}"
        yield Event("tool_call", "", {"name": name, "arguments": args, "id": call_id})
        if name in client_tools:
            return None
        if self.registry is not None:
            out = self.registry.call(name, args)  # unknown tools and bad arguments come back as {"error": ...}
        else:
            out = json.dumps({"error": f"unknown tool {name!r}"})
        yield Event("tool_result", out, {"name": name, "id": call_id})
        return out

    def run_search(self, query: str) -> Generator[Event, None, str]:
        """Events for one search; returns the hits' text to inject."""
        yield Event("search", query)
        if self.search is None:
            text = "(search is not configured: index documents with `hessgpt search build DOCS --out DB`, then pass `--search-index DB`)"
        else:
            text = format_hits(self.search.search(query, k=3)) or "(no results)"
        yield Event("result", text, {"status": "ok", "tool": "search"})
        return text

    # ---- the in-band tools' handlers (INBAND_TOOLS) ---------------------------------------------

    def code_step(self, text: str, turn: TurnState) -> Generator[Event, None, str | None]:
        """A code block: shown; Python runs (up to max_tool_calls per turn), other languages are artifacts."""
        lang = code_language(text)
        yield Event("code", text, {"lang": lang})
        if lang != "python":
            yield Event("artifact", text, {"lang": lang})
            return None
        if turn.calls > self.config.max_tool_calls:
            yield Event("result", "tool call limit reached", {"status": "limit"})
            return "Error: tool call limit reached; answer without code."
        return (yield from self.run_code(text, turn.request))

    def call_step(self, text: str, turn: TurnState) -> Generator[Event, None, str | HandBack]:
        out = yield from self.call_function(text, turn.client_tools)
        return HAND_BACK if out is None else out

    def search_step(self, text: str, turn: TurnState) -> Generator[Event, None, str]:
        return (yield from self.run_search(text))

    # ---- the loop -----------------------------------------------------------------------------

    def stream_turn(self, prompt_ids: list[int], params: SamplingParams, request: str = "",
                    client_tools: set[str] = frozenset(), cancel=None) -> Generator[Event, None, None]:
        tok, cfg = self.tok, self.config
        gen: Generation = self.engine.session(prompt_ids, params)
        started, generated = time.monotonic(), 0
        turn = TurnState(request, set(client_tools))
        decoder = TextDecoder(tok)
        spacing = TurnText()
        block: list[int] = []
        active: InbandTool | None = None   # the tool whose call is being written, None in text
        finish = "length"
        opener = {getattr(tok, tool.opener): tool for tool in self.tools}
        structure = {tok.system_id, tok.user_id, tok.assistant_id, tok.result_id, tok.tool_response_id, tok.bos_id, tok.pad_id}

        while generated < params.max_new_tokens:
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            if time.monotonic() - started > cfg.turn_timeout_s:
                finish = "length"
                break
            t = gen.next_token()
            generated += 1
            if active is None:
                if t in tok.stop_ids or t in structure:  # end of turn (or the model starting a new role)
                    finish = "stop"
                    break
                if t in opener:
                    tail = spacing.push(decoder.flush())
                    if tail:
                        yield Event("text", tail)
                    spacing.step()
                    active, block = opener[t], []
                else:
                    delta = spacing.push(decoder.push(t))
                    if delta:
                        yield Event("text", delta)
            elif t != getattr(tok, active.closer):
                block.append(t)
            else:
                if gen.space_left < 8:
                    break
                chosen = block
                if active.name == "code" and cfg.code_votes > 1:   # a Generation (batched serving refuses votes)
                    start = len(gen.ids) - len(block)                # gen.ids: the sequence its cache holds
                    chosen, vote = self.vote_code(gen.ids[:start], block, turn.request, gen.space_left + len(block) - 8)
                    if vote is not None:
                        yield Event("code_vote", tok.decode(chosen), vote)
                if chosen != block:   # the winning block replaces model 1's in the cache
                    gen.feed(chosen + [t], keep=start)
                    block = chosen
                else:
                    gen.feed([t])  # the closing token the model wrote goes into the cache before any result
                turn.calls += 1
                result = yield from active.handler(self, tok.decode(block), turn)
                if result is HAND_BACK:  # the API client runs this tool
                    finish = "tool_calls"
                    break
                inject = None if result is None else [getattr(tok, active.result)] + tok.encode(_clip(result)) + [tok.end_id]
                active, block = None, []
                if inject:
                    if gen.space_left <= len(inject) + 1:
                        finish = "length"
                        break
                    gen.feed(inject)
                continue  # the closing token was already fed
            if gen.space_left <= 0:
                finish = "length"
                break
            gen.feed([t])
        tail = spacing.push(decoder.flush())
        if tail and active is None:
            yield Event("text", tail)
        yield Event("done", data={"finish_reason": finish, "prompt_tokens": len(prompt_ids), "completion_tokens": generated})


# The in-band tools, in the order the loop looks them up by opening token: a new kind is one more entry.
INBAND_TOOLS = (
    InbandTool("code", opener="code_id", closer="end_id", result="result_id", handler=ToolRouter.code_step),
    InbandTool("call", opener="tool_call_id", closer="end_id", result="tool_response_id", handler=ToolRouter.call_step),
    InbandTool("search", opener="search_id", closer="search_end_id", result="result_id", handler=ToolRouter.search_step),
)
