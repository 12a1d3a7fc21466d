"""Pure retrieval core for hybrid recall: tokenizer, embedders, BM25 and vector indexes.

No Trio and no I/O: an actor owns one :class:`AgentIndex` per agent, feeds it memories as they
are stored, updated and forgotten, and asks it for the best matches of a query.
"""

from .embed import (
    DEFAULT_DIM,
    DEFAULT_EMBEDDER,
    WORDLLAMA_DIMS,
    Embedder,
    EmbedderUnavailable,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    WordLlamaEmbedder,
    make_embedder,
)
from .index import (
    DEFAULT_VECTOR_WEIGHT,
    FUSIONS,
    ROUTINGS,
    RRF_K,
    AgentIndex,
    Bm25Index,
    DimensionMismatch,
    Fusion,
    Hit,
    Routing,
    VectorIndex,
)
from .text import CONTENT_WORDS, STOP_WORDS, TOKENIZER_ID, stem, tokenize, words

__all__ = [
    "CONTENT_WORDS",
    "DEFAULT_DIM",
    "DEFAULT_EMBEDDER",
    "DEFAULT_VECTOR_WEIGHT",
    "DimensionMismatch",
    "FUSIONS",
    "ROUTINGS",
    "RRF_K",
    "STOP_WORDS",
    "TOKENIZER_ID",
    "AgentIndex",
    "Bm25Index",
    "Embedder",
    "EmbedderUnavailable",
    "Fusion",
    "HashingEmbedder",
    "Hit",
    "Routing",
    "SentenceTransformerEmbedder",
    "VectorIndex",
    "WORDLLAMA_DIMS",
    "WordLlamaEmbedder",
    "make_embedder",
    "stem",
    "tokenize",
    "words",
]
