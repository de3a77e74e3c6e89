"""Terminal front ends: `hessgpt generate`, `hessgpt chat` (REPL) and `hessgpt ask` (one question, every step).

`chat` and `ask` sit on a chat backend (hessgpt/serve/backends.py contract) that serve/build.py's
`build_backend` makes from the flags (`add_backend_args`): the HessGPT dual model with its tool loop
(`serve.dual.DualModelBackend`) or any local Hugging Face model with an optional LoRA adapter
(`serve.backends.HFBackend`). `generate` is raw text continuation on the engine.
"""

import argparse
import json
import os
import sys

import hessgpt
from hessgpt.engine import Engine, SamplingParams, sampling_params
from hessgpt.errors import HessGPTError
from hessgpt.serve.build import build_backend

# ANSI styles, only when printing to a terminal
_TTY = sys.stdout.isatty()


def _style(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if _TTY else text


def add_sampling_args(p: argparse.ArgumentParser, max_new_tokens: int = 256) -> None:
    """Sampling flags; each defaults to None = the checkpoint's generation_config.json (greedy when none)."""
    g = p.add_argument_group("sampling (unset = the checkpoint's generation_config.json; greedy without one)")
    g.add_argument("--max-new-tokens", type=int, default=None, help=f"default: the checkpoint's, else {max_new_tokens}")
    g.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=None, help="0 = off")
    g.add_argument("--top-p", type=float, default=None, help="1 = off")
    g.add_argument("--repetition-penalty", type=float, default=None, help="1 = off")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--seed", type=int, default=None)
    p.set_defaults(_default_max_new_tokens=max_new_tokens)


def sampling_from_args(args, generation_config: dict | None = None) -> SamplingParams:
    """Flags over the model's generation_config (a flag left unset keeps the checkpoint's value)."""
    gen = dict(generation_config or {})
    gen.setdefault("max_new_tokens", getattr(args, "_default_max_new_tokens", 256))
    return sampling_params(gen, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                           top_p=args.top_p, repetition_penalty=args.repetition_penalty, stop=args.stop,
                           seed=args.seed)


def add_backend_args(p: argparse.ArgumentParser, positional: bool = True) -> None:
    if positional:
        p.add_argument("ckpt", nargs="?", help="HessGPT checkpoint (same as --model1)")
    p.add_argument("--model1", help="model 1: the assistant checkpoint")
    p.add_argument("--model2", help="model 2: the code specialist, asked to repair model 1's code when it fails (optional)")
    p.add_argument("--hf-model", help="a local Hugging Face causal LM directory instead of HessGPT checkpoints")
    p.add_argument("--adapter", help="a PEFT LoRA adapter directory for --hf-model")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="--hf-model weights: auto = bf16 on a GPU with compute capability >= 8.0, fp16 on older GPUs, fp32 on CPU")
    p.add_argument("--load-in-4bit", action="store_true", help="--hf-model in bitsandbytes nf4 (needs a CUDA GPU)")
    p.add_argument("--no-tools", action="store_true", help="never execute code (no sandbox)")
    p.add_argument("--search-index", help="a `hessgpt search build` database answering <search> queries")
    p.add_argument("--http-allow", action="append", default=[], metavar="HOST",
                   help="a host the http_request tool may reach (repeatable; none by default)")
    p.add_argument("--device", default=None)


def history_text(segments: list[str]) -> str:
    """A turn's text as history: the text before the tool steps + "\n\n" + the text after them (no code, no
    result), the one plain assistant message the eval and training use for an earlier turn."""
    return "\n\n".join(t for t in (s.strip() for s in segments) if t)


class TurnRecorder:
    """Collects one turn's events into {"text", "code", "results", "done"} ("text" = history_text)."""

    def __init__(self):
        self.segments, self.codes, self.results, self.done = [""], [], [], {}

    def add(self, e) -> None:
        if e.type == "text":
            self.segments[-1] += e.text
        elif e.type == "done":
            self.done = e.data
        else:
            if self.segments[-1]:
                self.segments.append("")
            if e.type in ("code", "refined_code", "artifact"):
                self.codes.append(e.text)
            elif e.type in ("result", "tool_result"):
                self.results.append(e.text)

    def turn(self) -> dict:
        return {"text": history_text(self.segments), "code": self.codes, "results": self.results, "done": self.done}


def print_events(events, show_steps: bool = True, out=None) -> dict:
    """Print a turn's events as they arrive; returns {"text", "code", "results", "done"}, where "text" is the
    turn's text as history (history_text: the parts around the tool steps joined with a blank line)."""
    out = out or sys.stdout  # looked up per call (not bound when the module was imported)
    rec = TurnRecorder()
    for e in events:
        rec.add(e)
        if e.type == "text":
            out.write(e.text)
        elif e.type == "done":
            pass
        elif show_steps:
            if e.type in ("code", "refined_code", "artifact"):
                label = {"code": "code", "refined_code": "code refined by model 2", "artifact": "artifact (not executed)"}[e.type]
                if e.type == "refined_code":   # why model 2 was asked, and whether its program's result is used
                    why = e.data.get("reason", "?") + (f": {e.data['detail']}" if e.data.get("detail") else "")
                    label += f" ({why}; {'used' if e.data.get('used') else 'not used: ' + str(e.data.get('verdict'))})"
                lang = e.data.get("lang", "python")
                out.write("\n" + _style("36", f"┌─ {label} [{lang}]") + "\n" + _style("36", e.text.rstrip()) + "\n" + _style("36", "└─") + "\n")
            elif e.type in ("result", "tool_result"):
                status = e.data.get("status", "ok")
                out.write(_style("33", f"┌─ result ({status}, {e.data.get('duration_ms', '?')} ms)") + "\n" +
                          _style("33", e.text.rstrip() or "(empty)") + "\n" + _style("33", "└─") + "\n")
            elif e.type == "tool_call":
                out.write(_style("35", f"\n→ {e.data.get('name')}({json.dumps(e.data.get('arguments'), ensure_ascii=False)})") + "\n")
            elif e.type == "search":
                out.write(_style("35", f"\n🔎 {e.text}") + "\n")
            elif e.type == "refine_skipped":
                out.write(_style("2", f"(model 2 not asked: {e.text})") + "\n")
        out.flush()
    return rec.turn()


# ---- hessgpt generate ---------------------------------------------------------------------------


def generate_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="hessgpt generate", description="Continue a prompt (raw text, or one chat turn with --chat).")
    p.add_argument("ckpt", help="HessGPT checkpoint or Hugging Face directory")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="wrap the prompt as a user message and answer it (no tools)")
    p.add_argument("--beams", type=int, default=0, help="beam search with N beams instead of sampling")
    p.add_argument("--int8", action="store_true", help="int8 weights (CPU chat speed)")
    p.add_argument("--int4", action="store_true", help="int4 weights, llama.cpp's Q4_0 blocks (CPU chat speed, less memory)")
    p.add_argument("--device", default=None)
    add_sampling_args(p, 128)
    args = p.parse_args(argv)
    model, tok = hessgpt.load(args.ckpt, device=args.device)
    if tok is None:
        raise HessGPTError(f"{args.ckpt}: no tokenizer found beside the weights")
    engine = Engine(model, tok)
    if args.int8:
        engine.quantize_int8()
    elif args.int4:
        engine.quantize_int4()
    ids = tok.render_for_generation([{"role": "user", "content": args.prompt}]) if args.chat else [tok.bos_id] + tok.encode(args.prompt)
    if len(ids) >= engine.max_len:
        raise HessGPTError(f"the prompt has {len(ids)} tokens; the context window is {engine.max_len}")
    params = sampling_from_args(args, getattr(model, "generation_config", None))
    if not args.chat:
        sys.stdout.write(args.prompt)
    if args.beams:
        out = engine.beam_search(ids, num_beams=args.beams, max_new_tokens=params.max_new_tokens)
        sys.stdout.write(tok.decode(out))
    else:
        for piece in engine.stream_text(ids, params):
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


# ---- hessgpt ask --------------------------------------------------------------------------------


def ask_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="hessgpt ask", description="Ask a question (or a conversation: --prompt several "
                                "times); print each tool step and the answer.")
    add_backend_args(p)
    p.add_argument("--prompt", action="append", required=True,
                   help="a user turn; repeat it for a conversation (each answered in order, history carried)")
    p.add_argument("--system", default=None)
    p.add_argument("--json", action="store_true", help="print the events as JSON lines (each turn ends with its done event)")
    add_sampling_args(p)
    args = p.parse_args(argv)
    backend = build_backend(args)
    params = sampling_from_args(args, getattr(backend, "generation_config", None))
    messages = [{"role": "system", "content": args.system}] if args.system else []
    for i, prompt in enumerate(args.prompt):
        messages.append({"role": "user", "content": prompt})
        events = backend.stream_chat(list(messages), params)
        if args.json:
            rec = TurnRecorder()
            for e in events:
                rec.add(e)
                print(json.dumps(e.to_dict(), ensure_ascii=False), flush=True)
            turn = rec.turn()
        else:
            if i:
                print()
            print(_style("1", "question: ") + prompt)
            print(_style("1", "answer: "), end="")
            turn = print_events(events)
            print()
        # the next turn sees this answer as the eval does: one plain assistant message, no code or result
        messages.append({"role": "assistant", "content": turn["text"]})
    return 0


# ---- hessgpt chat -------------------------------------------------------------------------------

HELP = """commands: /reset (new conversation)  /system TEXT (set the system prompt)  /save FILE  /load FILE
          /steps (toggle tool steps)  /quit"""


def chat_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="hessgpt chat", description="Multi-turn chat in the terminal, with tool steps shown.")
    add_backend_args(p)
    p.add_argument("--system", default=None, help="system prompt")
    add_sampling_args(p)
    args = p.parse_args(argv)
    backend = build_backend(args)
    params = sampling_from_args(args, getattr(backend, "generation_config", None))
    system = args.system
    messages: list[dict] = []
    show_steps = True
    print(f"HessGPT chat — {backend.model_id} (context {backend.context_length} tokens). {HELP}")
    while True:
        try:
            line = input(_style("1;32", "vous> ") if _TTY else "vous> ")
        except EOFError:
            print()
            return 0
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, rest = line.partition(" ")
            if cmd in ("/quit", "/exit", "/q"):
                return 0
            if cmd == "/reset":
                messages = []
                print("(new conversation)")
            elif cmd == "/system":
                system = rest or None
                print(f"(system prompt {'set' if system else 'cleared'})")
            elif cmd == "/steps":
                show_steps = not show_steps
                print(f"(tool steps {'shown' if show_steps else 'hidden'})")
            elif cmd == "/save":
                path = rest or "conversation.json"
                if os.path.exists(path) and not os.path.isfile(path):
                    print(f"(cannot save to {path}: not a regular file)")  # never rename over /dev/null & co
                    continue
                tmp = path + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({"system": system, "messages": messages}, f, ensure_ascii=False, indent=2)
                os.replace(tmp, path)
                print(f"(saved {len(messages)} messages to {path})")
            elif cmd == "/load":
                path = rest or "conversation.json"
                try:
                    with open(path) as f:
                        d = json.load(f)
                    system, messages = d.get("system"), list(d["messages"])
                    print(f"(loaded {len(messages)} messages from {path})")
                except (OSError, json.JSONDecodeError, KeyError) as e:
                    print(f"(cannot load {path}: {e})")
            else:
                print(HELP)
            continue
        messages.append({"role": "user", "content": line})
        convo = ([{"role": "system", "content": system}] if system else []) + messages
        print(_style("1;34", "hessgpt> ") if _TTY else "hessgpt> ", end="", flush=True)
        try:
            turn = print_events(backend.stream_chat(convo, params), show_steps=show_steps)
        except KeyboardInterrupt:
            print("\n(interrupted)")
            messages.pop()
            continue
        except HessGPTError as e:
            print(f"\n(error: {e})")
            messages.pop()
            continue
        print()
        messages.append({"role": "assistant", "content": turn["text"]})
