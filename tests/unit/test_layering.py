"""Nothing below the HTTP facade imports Quart (DESIGN: domain errors are not HTTP errors)."""

from __future__ import annotations

import subprocess
import sys

from tests.real.procs import ROOT


def test_the_domain_and_the_json_parser_load_without_quart() -> None:
    code = ("import sys\n"
            "import dakera_actors.safejson, dakera_actors.routing.router, dakera_actors.store.service\n"
            "import dakera_actors.replication.actor, dakera_actors.operations.service\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('quart', 'quart_trio')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_layering_contracts_hold() -> None:
    """pyproject.toml's import-linter contracts (the layers, the facade, the pure cores, the
    transport plugins), checked in the suite as well as by `make lint`, so CI sees a broken layer."""
    code = "import sys\nfrom importlinter.cli import lint_imports\nsys.exit(lint_imports(no_cache=True, no_logo=True))\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def import_cycles(graph: object) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    modules = sorted(graph.modules)  # type: ignore[attr-defined]
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}  # type: ignore[attr-defined]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in modules:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges.get(node, [])
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_the_packages_have_no_import_cycles() -> None:
    """Sibling layers that may import each other (routing and operations, replication and
    sharding) must still not import in a circle, TYPE_CHECKING imports included."""
    import grimp

    assert import_cycles(grimp.build_graph("dakera_actors", "transports")) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    class Graph:
        modules = {"a", "b", "c", "d"}

        @staticmethod
        def find_modules_directly_imported_by(m: str) -> set[str]:
            return {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}[m]

    assert import_cycles(Graph()) == [["a", "b", "c"]]
