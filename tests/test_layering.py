"""The package layering (docs/plugins.md, "Packages"): no import cycle between packages, and a
core that names no plugin package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _packages() -> dict[str, Path]:
    dirs = [*(ROOT / "plugins").iterdir(), ROOT / "cli" / "fourreal_cli", *ROOT.glob("fourreal_*")]
    return {d.name: d for d in dirs if d.is_dir() and d.name.startswith("fourreal_") and (d / "__init__.py").exists()}


def _imported_names(path: Path) -> list[tuple[str, int]]:
    """Absolute module names ``path`` imports (anywhere: top level, inside functions, under
    TYPE_CHECKING), with their line numbers."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, node.lineno))
    return out


def import_graph(packages: dict[str, Path]) -> dict[str, dict[str, str]]:
    """``{package: {imported package: 'file:line' of one import}}`` between the packages."""
    graph: dict[str, dict[str, str]] = {name: {} for name in packages}
    for name, folder in packages.items():
        for f in sorted(folder.rglob("*.py")):
            for module, line in _imported_names(f):
                top = module.split(".")[0]
                if top in packages and top != name:
                    graph[name].setdefault(top, f"{f.relative_to(ROOT)}:{line}")
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str]:
    """One cycle of the graph as a list of packages (first == last), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, {}):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def test_no_import_cycle_between_packages():
    graph = import_graph(_packages())
    cycle = find_cycle(graph)
    where = [f"{a} -> {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    assert not cycle, "import cycle between packages: " + "; ".join(where)


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: the finder sees a two-package and a three-package cycle, and
    none in a chain."""
    assert find_cycle({"a": {"b": ""}, "b": {"a": ""}}) in (["a", "b", "a"], ["b", "a", "b"])
    assert find_cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""}})[0] == \
        find_cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""}})[-1]
    assert find_cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {}}) == []


def test_core_names_no_plugin_package():
    """fourreal_core imports only itself and third-party code, and its text names no plugin
    package (not even in a docstring: the core knows plugins only through the registry)."""
    packages = _packages()
    others = sorted(n for n in packages if n != "fourreal_core")
    bad = []
    for f in sorted((ROOT / "fourreal_core").rglob("*.py")):
        text = f.read_text()
        for name in others:
            if name in text:
                line = text[: text.index(name)].count("\n") + 1
                bad.append(f"{f.relative_to(ROOT)}:{line} names {name}")
    assert not bad, "; ".join(bad)
    assert "fourreal_stages" in others and "fourreal_formats" in others  # the check looks at the real tree


CORE_CODE_LINES = 2500  # issue 30: "fourreal_core is <= 2,500 lines"


def code_lines(folder: Path) -> dict[str, int]:
    """Lines of code per file as pygount (cloc's rules) counts them: blank lines, comments and
    docstrings are not code."""
    from pygount import SourceAnalysis

    return {f.name: SourceAnalysis.from_file(str(f), "core").code_count for f in sorted(folder.rglob("*.py"))}


def test_core_is_small():
    """The core stays readable in one sitting: at most 2,500 lines of code (docs/plugins.md,
    "Packages"; the contracts' docstrings do not count, so documenting the interfaces costs
    nothing)."""
    per_file = code_lines(ROOT / "fourreal_core")
    total = sum(per_file.values())
    biggest = ", ".join(f"{n} {c}" for n, c in sorted(per_file.items(), key=lambda kv: -kv[1])[:3])
    assert total <= CORE_CODE_LINES, f"fourreal_core holds {total} lines of code (> {CORE_CODE_LINES}); largest: {biggest}"
    assert total > 1000  # the count reads the real tree (a wrong folder would pass with 0)


def test_code_lines_skip_docstrings_comments_and_blanks(tmp_path):
    """The counter the size check uses counts code only."""
    (tmp_path / "m.py").write_text('"""Doc\n\nmore doc."""\n\n# a comment\nx = 1\n\n\ndef f():\n    """Doc."""\n'
                                   '    return x  # trailing comment\n')
    assert code_lines(tmp_path) == {"m.py": 3}
