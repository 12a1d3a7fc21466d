"""dakera_actors: a Trio-native high-availability node for the Dakera agent-memory API."""

from .config import Config, ConfigError
from .node import Node, open_node
from .version import __version__

__all__ = ["Config", "ConfigError", "Node", "__version__", "open_node"]
