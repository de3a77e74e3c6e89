"""`hessgpt sandbox run FILE|-` and `hessgpt sandbox doctor`."""

import argparse
import sys

from hessgpt.errors import HessGPTError
from hessgpt.tools.sandbox import DEFAULT_ALLOWED_MODULES, Limits, Sandbox, doctor


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hessgpt sandbox", description="the secure Python sandbox")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a Python file (or - for stdin) in the sandbox")
    r.add_argument("file", help="path to a .py file, or - to read stdin")
    r.add_argument("--wall-s", type=float, default=5.0, help="wall-clock limit in seconds (default 5)")
    r.add_argument("--memory-mb", type=int, default=100, help="memory limit in MB (default 100)")
    r.add_argument("--output-bytes", type=int, default=65536, help="stdout cap in bytes (default 65536)")
    r.add_argument("--allow", action="append", default=[], metavar="MODULE",
                   help="allow importing MODULE in addition to the defaults (repeatable)")
    r.add_argument("--json", action="store_true", help="print the RunResult as JSON")
    sub.add_parser("doctor", help="start a worker and print which isolation layers are active")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "doctor":
        layers = doctor()
        width = max(map(len, layers))
        for name, (active, detail) in layers.items():
            print(f"{name:<{width}}  {'active ' if active else 'MISSING'}  {detail}")
        return 0 if all(a for a, _ in layers.values()) else 1
    if args.file == "-":
        code = sys.stdin.read()
    else:
        try:
            with open(args.file, encoding="utf-8") as fh:
                code = fh.read()
        except UnicodeDecodeError as e:
            raise HessGPTError(f"{args.file} is not UTF-8 text: {e}") from e
    limits = Limits(wall_s=args.wall_s, memory_mb=args.memory_mb, output_bytes=args.output_bytes)
    with Sandbox(limits=limits, allowed_modules=(*DEFAULT_ALLOWED_MODULES, *args.allow)) as sb:
        r = sb.run(code)
    if args.json:
        import json
        from dataclasses import asdict

        print(json.dumps(asdict(r), ensure_ascii=False))
    else:
        sys.stdout.write(r.stdout)
        sys.stdout.flush()  # before the status line on stderr
        if r.stderr:
            sys.stderr.write(r.stderr if r.stderr.endswith("\n") else r.stderr + "\n")
        print(f"[sandbox] status={r.status} duration={r.duration_ms:.1f} ms", file=sys.stderr)
    return 0 if r.ok else 1
