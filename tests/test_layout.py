"""The shape of the repository, read from its files: the layers of the imports, the README's length and links."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("models", "utils", "data_objects", "functions", "benchmarks", "tests")
# Lowest first; the entry scripts, benchmarks and tests stand above them all.
LAYERS = ("utils", "models", "data_objects", "functions")
README_MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files() -> list[Path]:
    files = sorted(REPO.glob("*.py"))
    for package in PACKAGES:
        files += sorted((REPO / package).rglob("*.py"))
    return files


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project's modules that `path` imports anywhere in it (at the top or inside a function): `from a.b import
    c` names the module a.b.c where c is one, else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            found.update(submodules & known or {node.module})
    return found & known


def import_graph() -> dict[str, set[str]]:
    files = project_files()
    known = {module_name(path) for path in files}
    return {module_name(path): imported_modules(path, known) - {module_name(path)} for path in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as the list of its modules (first == last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_import_graph_reads_imports_inside_functions_and_from_packages(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text("from utils import Genotype\n\ndef main():\n    from models.random_cells import random_genotype\n"
                      "    import functions.metrics\n")
    assert imported_modules(source, {"utils", "models.random_cells", "functions.metrics", "models"}) == {
        "utils", "models.random_cells", "functions.metrics"}


def test_find_cycle_names_a_circle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_itself_back():
    graph = import_graph()
    assert len(graph) > 100 and "nas_study" in graph and "benchmarks.run_all" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def climbs(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a layer above the importer's own."""
    level = {package: rank for rank, package in enumerate(LAYERS)}
    return [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items()) if module.split(".")[0] in level
        for target in sorted(targets)
        if level.get(target.split(".")[0], -1) > level[module.split(".")[0]]
    ]


def test_climbs_are_found():
    assert climbs({"models.frontends": {"data_objects.audio", "utils.config"}, "nas_study": {"functions.study"}}) == [
        "models.frontends imports data_objects.audio"]


def test_no_module_imports_from_a_layer_above_its_own():
    graph = import_graph()
    assert not climbs(graph), climbs(graph)
    assert not [target for module, targets in graph.items() if module.split(".")[0] in ("models", "utils")
                for target in targets if target.split(".")[0] in ("data_objects", "functions")]


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "benchmarks").glob("*.md"))]


def test_readme_is_a_short_guide():
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= README_MAX_LINES


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of a markdown page."""
    headings = re.findall(r"^#+ +(.+)$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_every_relative_link_of_readme_and_docs_resolves():
    broken = []
    for page in markdown_files():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, broken
