"""The README's Layout block matches the tree, both ways: every module and package of hessgpt/ (and of each of
its subpackages) is named under its package, and every file or folder the block names exists there.

How the block is read (README.md, the fenced block after `## Layout`): the `hessgpt/` part ends at the next line
that is not indented. In it, a line indented by 2 * k spaces (k = 1, 2, 3) whose first word is `NAME/` opens the
section of package NAME, a child of the package opened by the last line indented 2 * (k - 1) (k = 1: of
hessgpt/ itself); any other line indented by 2 belongs to hessgpt/; more deeply indented lines continue the
section above them. In a section, `NAME.py` / `NAME.c` name files and `NAME/` names a folder (`fr/en`,
`chat/ask`, `to_hf/to_gguf` are words, not folders). Required: every `*.py` but `__init__.py` and `__main__.py`,
and every subpackage (a folder with an `__init__.py`). The lines below `hessgpt/`: their top-level folders must
exist, and the `docs/` line names every docs/*.md (as NAME, without `.md`) and nothing else.
"""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "hessgpt")
FILE = re.compile(r"(?<![\w./])(\w+\.(?:py|c))\b")
FOLDER = re.compile(r"(?<![\w./])(\w+)/(?![\w/])")


def layout_block(readme_text: str) -> list[str]:
    text = readme_text[readme_text.index("## Layout"):]
    return text.split("```")[1].strip("\n").splitlines()


def sections(lines: list[str]) -> dict[str, set[str]]:
    """{"" (hessgpt/ itself) or "data/routing" (a package, relative to hessgpt/): the names its lines mention}.
    A section line also names its package in the parent's section."""
    assert lines[0] == "hessgpt/", f"the Layout block must start with 'hessgpt/', got {lines[0]!r}"
    found: dict[str, set[str]] = {"": set()}
    stack = [""]   # stack[k - 1]: the package opened at indent 2 * k - 2 ("" = hessgpt/)
    current = ""
    for line in lines[1:]:
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            break
        words = line.split()
        opens = FOLDER.fullmatch(words[0]) if words else None
        if indent % 2 == 0 and indent <= 6 and opens:
            depth = indent // 2
            assert depth <= len(stack), f"Layout line {line!r} is indented deeper than the package it belongs to"
            parent = stack[depth - 1]
            current = f"{parent}/{opens.group(1)}".lstrip("/")
            del stack[depth:]
            stack.append(current)
            found[parent].add(opens.group(1) + "/")
            found.setdefault(current, set())
            line = line.replace(words[0], "", 1)
        elif indent == 2:
            current = ""
        found[current].update(FILE.findall(line))
        found[current].update(m + "/" for m in FOLDER.findall(line))
    return found


def package_tree(root: str) -> dict[str, tuple[set[str], set[str]]]:
    """{package (relative to root, "" for root): (required names, every name there)} for root and each
    subpackage; names as in `sections` (`x.py`, `sub/`)."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        if "__init__.py" not in filenames:
            dirnames[:] = []   # a data folder (web/, prompts/, search_corpus/): its files are not modules
            continue
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel = "" if rel == "." else rel
        subpackages = {d + "/" for d in dirnames if os.path.isfile(os.path.join(dirpath, d, "__init__.py"))}
        required = {f for f in filenames if f.endswith(".py") and f not in ("__init__.py", "__main__.py")} | subpackages
        existing = set(filenames) | {d + "/" for d in dirnames}
        tree[rel] = (required, existing)
    return tree


def layout_problems(lines: list[str], root: str) -> list[str]:
    found, tree = sections(lines), package_tree(root)
    problems = []
    for pkg in sorted(set(tree) | set(found)):
        where = "hessgpt/" + (pkg + "/" if pkg else "")
        if pkg not in tree:
            problems.append(f"{where}: the Layout names a package that does not exist")
            continue
        if pkg not in found:
            problems.append(f"{where}: a package with no Layout line")
            continue
        required, existing = tree[pkg]
        problems += [f"{where}{n}: not named in the Layout" for n in sorted(required - found[pkg])]
        problems += [f"{where}{n}: named in the Layout, not in the tree" for n in sorted(found[pkg] - existing)]
    return problems


def test_layout_block_matches_the_package_tree():
    lines = layout_block(open(os.path.join(REPO, "README.md"), encoding="utf-8").read())
    assert layout_problems(lines, PACKAGE) == []
    found = sections(lines)
    # the reading above is not vacuous: these packages and modules are where the Layout says they are
    assert {"", "kernels", "convert", "data", "data/adapters", "data/routing", "tools", "tools/sandbox", "serve",
            "eval", "train"} == set(found)
    assert {"dense.py", "int8.py", "build.py", "decode.c"} <= found["kernels"]
    assert {"inference.py", "loader.py", "quantize.py", "quickstart.py", "kernels/", "data/"} <= found[""]
    assert sum(len(r) for r, _ in package_tree(PACKAGE).values()) > 100


def test_layout_rest_of_block_names_existing_folders_and_every_doc():
    lines = layout_block(open(os.path.join(REPO, "README.md"), encoding="utf-8").read())
    rest = "\n".join(lines[next(i for i, ln in enumerate(lines[1:], 1) if not ln.startswith(" ")):])
    top = FOLDER.findall(rest)
    assert {"recipes", "benchmarks", "scripts", "tests", "docs"} <= set(top)
    assert [t for t in top if not os.path.isdir(os.path.join(REPO, t))] == []
    docs_text = rest[rest.index("docs/") + len("docs/"):]
    named = {w for w in re.split(r"[,\s]+", docs_text) if w}
    on_disk = {f[:-3] for f in os.listdir(os.path.join(REPO, "docs")) if f.endswith(".md")}
    assert named == on_disk, f"Layout docs line: missing {sorted(on_disk - named)}, extra {sorted(named - on_disk)}"


def test_layout_check_fails_on_an_unnamed_or_missing_file(tmp_path):
    """No false pass: a file added without a Layout line, a package without a section and a named file that
    is gone are all reported."""
    root = tmp_path / "hessgpt"
    (root / "kernels").mkdir(parents=True)
    for f in ("__init__.py", "cli.py", "kernels/__init__.py", "kernels/int8.py", "kernels/decode.c"):
        (root / f).write_text("")
    good = ["hessgpt/", "  cli.py   the command", "  kernels/   int8.py (int8),", "              decode.c (C)"]
    assert layout_problems(good, str(root)) == []
    (root / "kernels" / "dense.py").write_text("")
    assert layout_problems(good, str(root)) == ["hessgpt/kernels/dense.py: not named in the Layout"]
    (root / "serve").mkdir()
    (root / "serve" / "__init__.py").write_text("")
    good += ["  serve/   app.py, web/ (the page)"]
    assert layout_problems(good, str(root)) == ["hessgpt/kernels/dense.py: not named in the Layout",
                                                "hessgpt/serve/app.py: named in the Layout, not in the tree",
                                                "hessgpt/serve/web/: named in the Layout, not in the tree"]
    (root / "data" / "routing").mkdir(parents=True)
    for f in ("data/__init__.py", "data/routing/__init__.py", "data/routing/maths.py"):
        (root / f).write_text("")
    assert "hessgpt/data/: a package with no Layout line" in layout_problems(good, str(root))
    nested = good + ["  data/   routing/ (the routing data)", "    routing/   maths.py, fr/en phrasing"]
    assert [p for p in layout_problems(nested, str(root)) if "data" in p] == []
    (root / "data" / "routing" / "maths.py").unlink()
    assert "hessgpt/data/routing/maths.py: named in the Layout, not in the tree" in layout_problems(nested, str(root))
