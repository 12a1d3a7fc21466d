"""Nothing below the HTTP facade imports Quart (DESIGN: domain errors are not HTTP errors)."""

from __future__ import annotations

import graphlib
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


def test_the_packages_have_no_import_cycles() -> None:
    """Sibling layers that may import each other (routing and operations, replication and
    sharding) must still not import in a circle, TYPE_CHECKING imports included."""
    import grimp

    graph = grimp.build_graph("dakera_actors", "transports")
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    graphlib.TopologicalSorter(imports).prepare()  # a cycle raises CycleError, which names its modules
