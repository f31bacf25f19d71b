"""``Embed4All``: text embeddings from a local embedding model.

Texts are tokenized here, cut into chunks that fit the model's context, and
sent to the engine in batches (several texts per step, see
``_pyllmodel.Embedder``). The vectors come back L2-normalized, as
sentence-transformers returns them for the models in the registry.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, overload

from . import errors
from ._pyllmodel import Embedder
from ._wordpiece import WordPiece

if TYPE_CHECKING:  # importing gpt4all.gpt4all at run time here would be a cycle
    from .gpt4all import GPT4All

#: ``cancel_cb(batch_sizes, backend) -> bool``: the tokens of each engine step,
#: and the backend's name; return True to cancel.
CancelCallback = Callable[[List[int], str], bool]

#: Nomic Atlas' limit on one text, kept by ``atlas=True``.
ATLAS_MAX_TOKENS = 8192
#: tokens that consecutive chunks of a long text share (as Nomic Atlas does)
CHUNK_OVERLAP = 8


@dataclass(frozen=True)
class EmbeddingSpec:
    """What a known embedding model expects: its task prefixes, and the
    output sizes it was trained to be truncated to (Matryoshka)."""

    document_prefix: str = ""
    query_prefix: str = ""
    other_prefixes: Tuple[str, ...] = ()
    matryoshka_dims: Tuple[int, ...] = ()

    @property
    def prefixes(self) -> Tuple[str, ...]:
        return tuple(p for p in (self.document_prefix, self.query_prefix, *self.other_prefixes) if p)


_NOMIC = EmbeddingSpec("search_document", "search_query", ("clustering", "classification"))
_NOMIC_1_5 = EmbeddingSpec("search_document", "search_query", ("clustering", "classification"),
                           (768, 512, 384, 256, 128))
_E5 = EmbeddingSpec("passage", "query")
_BGE = EmbeddingSpec("", "Represent this sentence for searching relevant passages")

#: Known models by the name their files and metadata carry (longest match wins).
EMBEDDING_SPECS: Dict[str, EmbeddingSpec] = {
    "all-MiniLM-L6-v1": EmbeddingSpec(),
    "all-MiniLM-L12-v1": EmbeddingSpec(),
    "all-MiniLM-L6-v2": EmbeddingSpec(),
    "all-MiniLM-L12-v2": EmbeddingSpec(),
    "nomic-embed-text-v1": _NOMIC,
    "nomic-embed-text-v1-ablated": _NOMIC,
    "nomic-embed-text-v1-unsupervised": _NOMIC,
    "nomic-embed-text-v1.5": _NOMIC_1_5,
    **{f"bge-{size}-en{v}": _BGE for size in ("small", "base", "large") for v in ("", "-v1.5")},
    **{f"e5-{size}{v}": _E5 for size in ("small", "base", "large") for v in ("", "-unsupervised", "-v2")},
}


def find_spec(*names: str) -> Tuple[Optional[str], Optional[EmbeddingSpec]]:
    """The known model that one of ``names`` (file name, metadata name) is."""
    keys = sorted(EMBEDDING_SPECS, key=len, reverse=True)
    for name in names:
        low = name.lower()
        for key in keys:
            k = key.lower()
            # a file name continues with ".", "-" or "_" (nomic-embed-text-v1.5.f16.gguf)
            if low == k or (low.startswith(k) and low[len(k)] in "._-"):
                return key, EMBEDDING_SPECS[key]
    return None, None


class Embed4All:
    """Embeds texts with a local embedding model.

    Args:
        model_name: the model's file name or registry name; default:
            ``all-MiniLM-L6-v2.gguf2.f16.gguf``.
        n_threads: CPU threads; default: the number of physical cores.
        device: as for [`GPT4All`][gpt4all.GPT4All].
        **kwargs: passed on to [`GPT4All`][gpt4all.GPT4All] (``model_path``,
            ``allow_download``, ``n_ctx``, ``verbose``, ...). ``n_ctx`` caps
            the tokens of one chunk (never more than the model was trained
            on).
    """

    MIN_DIMENSIONALITY = 64
    DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2.gguf2.f16.gguf"

    def __init__(self, model_name: Optional[str] = None, *, n_threads: Optional[int] = None,
                 device: Optional[str] = None, **kwargs: Any):
        from .gpt4all import GPT4All

        kwargs.setdefault("n_parallel", 1)  # generation is not what this model is for
        kwargs.setdefault("f32_weights", True)  # faster products on the CPU (see GPT4All); small models
        self.gpt4all: "GPT4All" = GPT4All(model_name or self.DEFAULT_MODEL_NAME, n_threads=n_threads,
                                          device=device, **kwargs)
        model = self.gpt4all.model
        self.model_name, self.spec = find_spec(model.info.name, os.path.basename(model.model_path))
        self._embedder: Optional[Embedder] = None
        n_ctx = min(model.info.n_ctx, model.info.n_ctx_train) if model.info.n_ctx_train > 0 else model.info.n_ctx
        self._n_ctx = max(n_ctx, 1)
        # BERT's own tokenizer for BERT vocabularies (see _wordpiece), else the model's
        self._wordpiece: Optional[WordPiece] = None
        if model.meta("tokenizer.ggml.model") == "bert":
            lowercase = model.meta("tokenizer.ggml.normalizer.lowercase")
            self._wordpiece = WordPiece.from_model(
                model.info.n_vocab, model.token_bytes, None if lowercase is None else lowercase == "true")
        # the special tokens the tokenizer puts around a text ([CLS] ... [SEP] for BERT)
        probe = model.tokenize("hello", add_special=False, parse_special=False)
        full = model.tokenize("hello", add_special=True, parse_special=False)
        at = next((i for i in range(len(full) - len(probe) + 1) if full[i:i + len(probe)] == probe), None)
        self._head = full[:at] if at is not None else []
        self._tail = full[at + len(probe):] if at is not None else []

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Frees the model. Using it afterwards raises ``ModelClosedError``."""
        if self._embedder is not None:
            self._embedder.close()
        self.gpt4all.close()

    def __enter__(self) -> "Embed4All":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend(self) -> str:
        """The backend the model runs on: ``"cpu"``, ``"cuda"``, ``"vulkan"`` or ``"metal"``."""
        return self.gpt4all.backend

    @property
    def device(self) -> Optional[str]:
        """The GPU the model runs on, or ``None`` on the CPU."""
        return self.gpt4all.device

    def _get_embedder(self) -> Embedder:
        if self._embedder is None or self._embedder.closed:
            self._embedder = Embedder(self.gpt4all.model, n_ctx=self._n_ctx, n_seq_max=64)
        return self._embedder

    # ------------------------------------------------------------ embedding

    @overload
    def embed(self, text: str, *, prefix: Optional[str] = ..., dimensionality: Optional[int] = ...,
              long_text_mode: str = ..., return_dict: bool = ..., atlas: bool = ...,
              cancel_cb: Optional[CancelCallback] = ...) -> Any: ...

    @overload
    def embed(self, text: List[str], *, prefix: Optional[str] = ..., dimensionality: Optional[int] = ...,
              long_text_mode: str = ..., return_dict: bool = ..., atlas: bool = ...,
              cancel_cb: Optional[CancelCallback] = ...) -> Any: ...

    def embed(self, text: Union[str, List[str]], *, prefix: Optional[str] = None,
              dimensionality: Optional[int] = None, long_text_mode: str = "mean", return_dict: bool = False,
              atlas: bool = False, cancel_cb: Optional[CancelCallback] = None) -> Any:
        """Embeds one text or a list of texts.

        Args:
            text: a text (gives one vector) or a list of texts (gives a list
                of vectors, in order). An empty text or list raises
                ``ValueError``.
            prefix: the task, for models trained with task prefixes
                (nomic-embed-text: ``"search_document"`` (the default),
                ``"search_query"``, ``"clustering"``, ``"classification"``);
                another task raises ``ValueError``. For a model this library
                does not know, the prefix is put before each text as
                ``"prefix: text"``.
            dimensionality: the vector size, for Matryoshka models
                (nomic-embed-text-v1.5: 768, 512, 384, 256, 128): the vector is
                truncated and normalized again. Below 64 warns; 0 or less, or
                a model that was not trained for it, raises ``ValueError``.
            long_text_mode: for a text longer than the context: ``"mean"``
                embeds it in overlapping chunks and averages them, weighted
                by their token counts; ``"truncate"`` embeds its beginning.
            return_dict: return ``{"embeddings": ..., "n_prompt_tokens": ...}``
                (the text tokens embedded, chunk overlaps counted twice).
            atlas: keep Nomic Atlas' limit of 8192 tokens per text (in
                ``"mean"`` mode a longer text raises ``ValueError``; in
                ``"truncate"`` mode it is cut).
            cancel_cb: called once before the engine starts, with the tokens
                of each engine step and the backend's name; returning True
                raises ``CancellationError``.

        Returns:
            The vector (a list of floats), or a list of vectors, or the dict.
        """
        texts, single = self._check_texts(text)
        dims = self._check_dimensionality(dimensionality)
        if long_text_mode not in ("mean", "truncate"):
            raise ValueError(f"Long text mode must be one of 'mean' or 'truncate', got {long_text_mode!r}")
        prefix_tokens = self._prefix_tokens(prefix)

        chunks: List[List[int]] = []
        owner: List[Tuple[int, int]] = []  # (text index, text tokens) of each chunk
        n_prompt_tokens = 0
        room = self._n_ctx - len(self._head) - len(self._tail) - len(prefix_tokens)
        if room <= CHUNK_OVERLAP:
            raise errors.ContextOverflowError(
                f"the prefix leaves {room} tokens of a context of {self._n_ctx} for the text; raise n_ctx")
        for i, t in enumerate(texts):
            tokens = self._tokenize(t)
            if atlas and len(tokens) > ATLAS_MAX_TOKENS:
                if long_text_mode == "mean":
                    raise ValueError(f"text {i} is {len(tokens)} tokens long, over Nomic Atlas' limit of "
                                     f"{ATLAS_MAX_TOKENS} (atlas=True)")
                tokens = tokens[:ATLAS_MAX_TOKENS]
            for piece in _chunks(tokens, room, long_text_mode == "mean"):
                chunks.append(self._head + prefix_tokens + piece + self._tail)
                owner.append((i, len(piece)))
                n_prompt_tokens += len(piece)

        embedder = self._get_embedder()
        if cancel_cb is not None:
            if cancel_cb(_step_sizes(chunks, embedder), self.backend):
                raise errors.CancellationError("operation was canceled")
        vectors = embedder.embed_tokens(chunks)

        out = _combine(vectors, owner, len(texts), self.spec, dims)
        result: Any = out[0] if single else out
        if return_dict:
            return {"embeddings": result, "n_prompt_tokens": n_prompt_tokens}
        return result

    # ------------------------------------------------------------ checks

    @staticmethod
    def _check_texts(text: Union[str, Sequence[str]]) -> Tuple[List[str], bool]:
        if isinstance(text, str):
            if not text:
                raise ValueError("text must not be empty")
            return [text], True
        if isinstance(text, (bytes, bytearray)) or not isinstance(text, Sequence):
            raise TypeError(f"text must be a str or a list of str, not {type(text).__name__}")
        texts = list(text)
        if not texts:
            raise ValueError("the list of texts must not be empty")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is a {type(t).__name__}, not a str")
        return texts, False

    def _check_dimensionality(self, dimensionality: Optional[int]) -> Optional[int]:
        n_embd = self.gpt4all.model.info.n_embd
        if dimensionality is None:
            return None
        if isinstance(dimensionality, bool) or not isinstance(dimensionality, int) or dimensionality <= 0:
            raise ValueError(f"Dimensionality must be None or a positive integer, got {dimensionality}")
        if dimensionality < self.MIN_DIMENSIONALITY:
            warnings.warn(f"Dimensionality {dimensionality} is less than the suggested minimum of "
                          f"{self.MIN_DIMENSIONALITY}. Performance may be degraded.", stacklevel=3)
        if dimensionality == n_embd:
            return None
        name = self.model_name or self.gpt4all.model.info.name or "this model"
        if dimensionality > n_embd:
            raise ValueError(f"dimensionality {dimensionality} is more than {name}'s {n_embd}")
        if self.spec is None or not self.spec.matryoshka_dims:
            raise ValueError(f"{name} was not trained for a smaller dimensionality (Matryoshka); its vectors have "
                             f"{n_embd} values")
        return dimensionality

    def _prefix_tokens(self, prefix: Optional[str]) -> List[int]:
        spec = self.spec
        if prefix is None:
            prefix = spec.document_prefix if spec is not None else ""
        elif not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str or None, not {type(prefix).__name__}")
        elif spec is not None and prefix and prefix not in spec.prefixes:
            allowed = ", ".join(repr(p) for p in spec.prefixes) or "none (it takes no prefix)"
            raise ValueError(f"{prefix!r} is not a valid task type for model {self.model_name}; its task types: "
                             f"{allowed}")
        if not prefix:
            return []
        return self._tokenize(prefix + ":")

    def _tokenize(self, text: str) -> List[int]:
        if self._wordpiece is not None:
            return self._wordpiece.encode(text)
        return self.gpt4all.model.tokenize(text, add_special=False, parse_special=False)


def _chunks(tokens: List[int], room: int, all_of_it: bool) -> List[List[int]]:
    """The text's chunks of at most room tokens; consecutive ones overlap."""
    if len(tokens) <= room or not all_of_it:
        return [tokens[:room]]
    step = room - CHUNK_OVERLAP
    out = []
    for start in range(0, len(tokens), step):
        out.append(tokens[start:start + room])
        if start + room >= len(tokens):
            break
    return out


def _step_sizes(chunks: List[List[int]], embedder: Embedder) -> List[int]:
    """The tokens of each engine step, packed as the engine packs them."""
    sizes: List[int] = []
    n_batch, n_seq = embedder.n_batch, embedder.n_seq_max
    tokens = count = 0
    for c in chunks:
        if count and (count == n_seq or tokens + len(c) > n_batch):
            sizes.append(tokens)
            tokens = count = 0
        tokens += len(c)
        count += 1
    if count:
        sizes.append(tokens)
    return sizes


def _normalized(v: List[float]) -> List[float]:
    norm = math.sqrt(math.fsum(x * x for x in v))
    return [x / norm for x in v] if norm > 0 else v


def _combine(vectors: List[List[float]], owner: List[Tuple[int, int]], n_texts: int,
             spec: Optional[EmbeddingSpec], dims: Optional[int]) -> List[List[float]]:
    """One vector per text: its chunks averaged (weighted by their tokens),
    then truncated for a Matryoshka size."""
    sums: List[Optional[List[float]]] = [None] * n_texts
    weights = [0] * n_texts
    for v, (i, n) in zip(vectors, owner):
        n = max(n, 1)  # an empty text is its special tokens alone
        acc = sums[i]
        if acc is None:
            sums[i] = [x * n for x in v]
        else:
            for k, x in enumerate(v):
                acc[k] += x * n
        weights[i] += n
    out = []
    for i in range(n_texts):
        acc = sums[i]
        assert acc is not None
        v = [x / weights[i] for x in acc]
        if dims is not None:
            # Matryoshka models are trained on layer-normalized vectors: center, cut, normalize
            mean = math.fsum(v) / len(v)
            v = [x - mean for x in v[:dims]]
        out.append(_normalized(v))
    return out
