"""dakera_actors: a Trio-native high-availability node for the Dakera agent-memory API."""

__version__ = "0.1.0"

from .config import Config, ConfigError  # noqa: E402
from .node import Node, open_node  # noqa: E402

__all__ = ["Config", "ConfigError", "Node", "__version__", "open_node"]
