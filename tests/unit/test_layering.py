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
