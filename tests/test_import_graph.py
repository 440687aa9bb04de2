"""The package's import structure: data flows one way between hf_cai's modules.

Every import counts, including those inside functions (a lazy import still ties two modules together). A module may
not take another module's private (``_name``) names, and no source file grows past the size at which it usually
holds several jobs without saying why at its top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hf_cai"
SOURCES = {PACKAGE: "hf_cai", ROOT / "spaces": "hf_cai.spaces"}
"""Source folders and the module names they are installed as (the Space's code ships as ``hf_cai.spaces``)."""
MAX_LINES = 450
"""Past this a file must say at its top why it stays one file (a line containing "one file" in its docstring)."""


def _source_files() -> list[tuple[str, Path]]:
    """``(module name, path)`` of every source file of the package."""
    files = []
    for folder, prefix in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = (prefix, *path.relative_to(folder).with_suffix("").parts)
            files.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return files


def _modules() -> dict[str, Path]:
    return dict(_source_files())


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """``(module, imported name or None)`` for each import in the file, resolved to hf_cai modules where possible."""
    found = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None) if submodule in modules else (base, alias.name))
    return found


def _owner(target: str, modules: dict[str, Path]) -> str | None:
    while target and target not in modules:
        if "." not in target:
            return None
        target = target.rsplit(".", 1)[0]
    return target


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    private: list[str] = []
    for name, path in modules.items():
        for target, imported in _imports(name, path, modules):
            owner = _owner(target, modules)
            # A package's own submodules and the top-level package (lazy public exports) are not dependencies.
            if owner is None or owner == name or owner == "hf_cai" or owner.startswith(name + "."):
                continue
            edges[name].add(owner)
            if imported and imported.startswith("_") and not imported.startswith("__") and owner != "hf_cai._lazy":
                private.append(f"{name} imports {imported} from {owner}")
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_no_import_cycles_between_modules():
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_the_cycle_finder_sees_a_cycle_through_a_lazy_import():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_only_the_command_line_imports_the_spaces_code():
    """The Space's code is the bottom room: it calls the library, the library never calls it (``hub.space`` writes
    the Space's config through ``hub.space_config``, which the Space reads)."""
    edges, _ = _graph()
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in edges.items()
        if not module.startswith(("hf_cai.spaces", "hf_cai.cli"))
        for target in targets
        if target.startswith("hf_cai.spaces")
    )
    assert upward == []


def test_no_module_takes_another_modules_private_names():
    _, private = _graph()
    assert private == []


def test_source_files_hold_one_job():
    too_long = []
    for _, path in _source_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES and "one file" not in "\n".join(lines[:30]):
            too_long.append(f"{path.relative_to(ROOT)}: {len(lines)} lines")
    assert too_long == []
