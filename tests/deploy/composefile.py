"""Reading deploy/compose/docker-compose.yml and deploy/docker/Dockerfile the way Compose and Docker
do, for the tests that run the stack's configuration as local processes: the env file, Compose's
variable interpolation, the image's ENV, and a service's whole container environment."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


class MissingVariable(Exception):
    """A ``${NAME:?message}`` whose variable is unset or empty: Compose refuses the file."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (comments and blank lines skipped), as Compose reads ``.env``."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


# Compose's forms: $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err},
# ${NAME?err}, $NAME
_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` (a string, or lists and maps of them, recursively) with Compose's substitution."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if unset else current  # type: ignore[return-value]
        if op in (":?", "?"):
            if unset:
                raise MissingVariable(name, arg)
            return current  # type: ignore[return-value]
        return current or ""

    return _VARIABLE.sub(one, value)


def load_compose(env: dict[str, str]) -> dict[str, Any]:
    """The Compose file with its YAML anchors merged and every variable substituted from ``env``."""
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def image_env() -> dict[str, str]:
    """The ``ENV`` of the Dockerfile's last stage (the image the services run)."""
    final: list[tuple[str, str]] = []
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            final = []
        final.append((word, rest))
    env: dict[str, str] = {}
    for word, rest in final:
        if word == "ENV":
            for token in shlex.split(rest):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {rest!r}: use the KEY=VALUE form"
                env[key] = value
    return env


def container_env(compose: dict[str, Any], service: str) -> dict[str, str]:
    """What the service's container sees: the image's ENV, overridden by the service's environment."""
    environment = compose["services"][service].get("environment", {})
    assert isinstance(environment, dict), f"{service}: environment as a map, please"
    return {**image_env(), **{k: str(v) for k, v in environment.items()}}
