"""The import contract ([tool.importlinter] in pyproject.toml, run by `make test`): imports flow one way.

The real package keeps it, it has no import cycle at all (strongly connected components of the module graph,
imports inside functions included), and a deliberate cycle - the two the contract was written to end - breaks
it: lint-imports exits non-zero naming the broken contract.
"""

import os
import shutil
import subprocess
import sys

import grimp
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT_IMPORTS = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def lint_imports(root: str) -> subprocess.CompletedProcess:
    """lint-imports on the `hessgpt` package and pyproject.toml found in `root`."""
    env = {**os.environ, "PYTHONPATH": root}
    return subprocess.run(LINT_IMPORTS + ["--no-cache", "--config", os.path.join(root, "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_package_keeps_the_contract():
    r = lint_imports(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "hessgpt layers KEPT" in r.stdout


def test_the_package_has_no_import_cycle():
    graph = grimp.build_graph("hessgpt", include_external_packages=False, cache_dir=None)
    assert cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert cycles(graph) == [["p.a", "p.b", "p.c"]]


@pytest.mark.parametrize("module, line, broken", [
    # kernels used to import quantize for an isinstance test (core cycle kernels -> quantize -> model -> kernels)
    ("kernels/__init__.py", "from hessgpt import quantize", ["hessgpt layers"]),
    # registry.py used to build the default tool set (tools.registry <-> tools.calculator)
    ("tools/registry.py", "from hessgpt.tools import calculator", ["hessgpt layers", "no cycles inside a package"]),
])
def test_a_deliberate_cycle_breaks_the_contract(tmp_path, module, line, broken):
    shutil.copytree(os.path.join(REPO, "hessgpt"), tmp_path / "hessgpt",
                    ignore=lambda d, names: [n for n in names if n == "__pycache__" or
                                             (os.path.isfile(os.path.join(d, n)) and not n.endswith(".py"))])
    shutil.copy(os.path.join(REPO, "pyproject.toml"), tmp_path / "pyproject.toml")
    with open(tmp_path / "hessgpt" / module, "a") as f:
        f.write(f"\n{line}  # noqa: E402,F401 (a deliberate cycle)\n")
    where = subprocess.run([sys.executable, "-c", "import hessgpt; print(hessgpt.__file__)"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True)
    assert where.stdout.strip() == str(tmp_path / "hessgpt" / "__init__.py")   # the copy is what gets checked
    r = lint_imports(str(tmp_path))
    assert r.returncode != 0, r.stdout
    for name in broken:
        assert f"{name} BROKEN" in r.stdout, r.stdout
    assert f"{len(broken)} broken" in r.stdout
