"""The Text GCN heterogeneous document-word graph, built vectorised (numpy / scipy.sparse), with a disk cache.

Rules (Yao et al., AAAI 2019 and their ``build_graph.py``; see ``docs/textgcn.md``, section 3):

* nodes: train documents (file order), then the vocabulary (sorted), then test documents (file order);
* word-word edges: PMI over sliding windows of ``window_size`` tokens, kept only where PMI > 0;
* doc-word edges: ``tf * log(n_docs / df)``; a word present in every document gets no edge;
* ``A`` is symmetrised (element-wise maximum of ``A`` and ``A^T``) and normalised,
  ``Â = D^-1/2 (A + I) D^-1/2``.

The counts (windows, word pairs, PMI, TF-IDF, ``Â``) are computed vectorised, without materialising a single
window, in :mod:`spikegcn.text.cooccurrence`, whose docstring derives them.
"""
from __future__ import annotations

import hashlib
import json
import sys
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..datafiles import cache_dir, sha256_file
from ..fileio import atomic_open
from . import cooccurrence as cooc
from .clean import STOP_WORDS, CleanSettings, clean_settings_for, encode_documents, encode_tokens
from .corpus import TextCorpus, canonical_name, dataset_files, read_corpus

__all__ = [
    "GRAPH_CODE_VERSION",
    "TextGraph",
    "build_text_graph",
    "graph_cache_dir",
    "graph_cache_key",
    "graph_from_ids",
    "graph_from_tokens",
    "train_val_split",
]

#: Bump whenever a change to this module or to the cleaning rules changes the graph: it is part of the cache key.
GRAPH_CODE_VERSION = "1"


@dataclass(frozen=True, eq=False)
class TextGraph:
    """A built Text GCN graph.

    Node order: ``n_train`` train documents, ``n_words`` word nodes, ``n_test`` test documents.

    Attributes:
        name (str): Dataset name.
        adj_norm (scipy.sparse.csr_matrix): ``Â = D^-1/2 (A + I) D^-1/2``, float32 values, int32 indices, sorted
            column indices, shape ``[n_nodes, n_nodes]``. Features are ``X = I`` (featureless).
        n_train (int): Number of train documents (training + validation).
        n_test (int): Number of test documents.
        n_words (int): Vocabulary size.
        labels (np.ndarray): int64 class index per node, ``-1`` for word nodes.
        class_names (list[str]): Sorted class labels; ``labels`` index into it.
        vocab (list[str]): Word of each word node (sorted); word ``j`` is node ``n_train + j``.
        doc_names (list[str]): Name of each document node, in node order (train, then test).
        doc_file_index (np.ndarray): int64 line number in the corpus files of each document node (node order).
        train_idx (np.ndarray): int64 node indices used for training (the first 90 % of the shuffled train docs).
        val_idx (np.ndarray): int64 node indices of the validation docs (the last ``int(0.1 * n_train)`` of the
            shuffled train docs).
        test_idx (np.ndarray): int64 node indices of the test docs.
        seed (int): Seed of the train/validation shuffle.
        window_size (int): Sliding-window length used for PMI.
        n_windows (int): Number of sliding windows ``#W``.
        n_word_word_edges (int): Undirected word-word edges (PMI > 0).
        n_doc_word_edges (int): Doc-word edges with non-zero TF-IDF.
        cache_key (str): sha256 identifying the inputs, settings and code version ("" when not cached).
    """

    name: str
    adj_norm: sp.csr_matrix = field(repr=False)
    n_train: int
    n_test: int
    n_words: int
    labels: np.ndarray = field(repr=False)
    class_names: list[str] = field(repr=False)
    vocab: list[str] = field(repr=False)
    doc_names: list[str] = field(repr=False)
    doc_file_index: np.ndarray = field(repr=False)
    train_idx: np.ndarray = field(repr=False)
    val_idx: np.ndarray = field(repr=False)
    test_idx: np.ndarray = field(repr=False)
    seed: int
    window_size: int
    n_windows: int
    n_word_word_edges: int
    n_doc_word_edges: int
    cache_key: str = ""

    @property
    def n_docs(self) -> int:
        return self.n_train + self.n_test

    @property
    def n_nodes(self) -> int:
        return self.n_docs + self.n_words

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def nnz(self) -> int:
        """Non-zeros of ``Â``, self-loops included."""
        return int(self.adj_norm.nnz)

    @property
    def doc_nodes(self) -> np.ndarray:
        """Node index of every document, in node order (train, then test)."""
        return np.concatenate(
            [np.arange(self.n_train), np.arange(self.n_train + self.n_words, self.n_nodes)]
        ).astype(np.int64)

    def with_seed(self, seed: int) -> TextGraph:
        """The same graph with the train/validation split drawn from another seed (no rebuild)."""
        train_idx, val_idx = train_val_split(self.n_train, seed)
        return replace(self, train_idx=train_idx, val_idx=val_idx, seed=seed)

    def counts(self) -> dict[str, int]:
        """The sizes the Text GCN paper and ``docs/textgcn.md`` (section 3) tabulate."""
        return {
            "docs": self.n_docs,
            "train": self.n_train,
            "test": self.n_test,
            "words": self.n_words,
            "nodes": self.n_nodes,
            "classes": self.n_classes,
            "windows": self.n_windows,
            "word_word_edges": self.n_word_word_edges,
            "doc_word_edges": self.n_doc_word_edges,
            "nnz": self.nnz,
        }


def train_val_split(n_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle the ``n_train`` train-document nodes (``0 .. n_train - 1``) with ``seed`` and hold out the last
    ``int(0.1 * n_train)`` as validation, as Text GCN does. Returns sorted ``(train_idx, val_idx)``."""
    perm = np.random.default_rng(seed).permutation(n_train)
    n_val = int(0.1 * n_train)
    return np.sort(perm[: n_train - n_val]).astype(np.int64), np.sort(perm[n_train - n_val :]).astype(np.int64)


def graph_from_tokens(
    docs: Sequence[Sequence[str]],
    is_test: np.ndarray | Sequence[bool],
    labels: Sequence[str],
    *,
    name: str = "corpus",
    doc_names: Sequence[str] | None = None,
    window_size: int = 20,
    seed: int = 0,
    progress: bool = False,
) -> TextGraph:
    """Build the Text GCN graph from already cleaned documents (no cache).

    Args:
        docs (Sequence[Sequence[str]]): Tokens of each document, in file order.
        is_test (array of bool): Test flag of each document.
        labels (Sequence[str]): Class label of each document.
        name (str, optional): Name stored in the graph.
        doc_names (Sequence[str], optional): Document names (default: their file index).
        window_size (int, optional): PMI window length. (default: ``20``)
        seed (int, optional): Seed of the train/validation shuffle. (default: ``0``)
        progress (bool, optional): Show a tqdm progress bar. (default: ``False``)

    Returns:
        TextGraph
    """
    vocab, ids, lengths = encode_tokens(docs)
    return graph_from_ids(
        ids, lengths, vocab, is_test, labels,
        name=name, doc_names=doc_names, window_size=window_size, seed=seed, progress=progress,
    )


def graph_from_ids(
    ids: np.ndarray,
    lengths: np.ndarray,
    vocab: Sequence[str],
    is_test: np.ndarray | Sequence[bool],
    labels: Sequence[str],
    *,
    name: str = "corpus",
    doc_names: Sequence[str] | None = None,
    window_size: int = 20,
    seed: int = 0,
    progress: bool = False,
) -> TextGraph:
    """Build the Text GCN graph from encoded documents (see :func:`~spikegcn.text.encode_documents`).

    Args:
        ids (np.ndarray): Word id of every token, documents concatenated in file order.
        lengths (np.ndarray): Number of tokens of each document.
        vocab (Sequence[str]): The words; word ``j`` becomes node ``n_train + j``.
        is_test, labels, name, doc_names, window_size, seed, progress: As in :func:`graph_from_tokens`.

    Returns:
        TextGraph
    """
    if window_size < 2:
        raise ValueError(f"window_size must be at least 2, got {window_size}")
    is_test = np.asarray(is_test, dtype=bool)
    lengths = np.asarray(lengths, dtype=np.int64)
    n_docs, n_words, w = len(lengths), len(vocab), window_size
    if len(is_test) != n_docs or len(labels) != n_docs:
        raise ValueError(f"{n_docs} documents but {len(is_test)} split flags and {len(labels)} labels")
    bar = _progress_bar(progress, total=w + 3, desc=f"graph {name}")

    # node order: train documents, then test documents, each in file order
    order = np.concatenate([np.flatnonzero(~is_test), np.flatnonzero(is_test)]).astype(np.int64)
    n_train = int((~is_test).sum())
    t = cooc.node_order_tokens(ids, lengths, order, w)
    n_windows = t.n_windows
    bar.update(1)
    word_windows = cooc.word_window_counts(t, n_words, w)
    bar.update(1)
    pairs = cooc.pair_counts(t, n_words, w, bar)
    ww, n_ww = cooc.pmi_edges(pairs, word_windows, n_windows, n_words)
    del pairs
    bar.update(1)
    tf = cooc.tfidf(t.doc_of, t.tok, n_docs, n_words)
    del t
    n_dw = int(tf.nnz)
    adj = cooc.normalized_adjacency(ww, tf[:n_train], tf[n_train:])
    del ww, tf
    bar.update(1)
    bar.close()
    return _text_graph(adj, order, n_train, vocab, labels, doc_names, name=name, seed=seed, window_size=window_size,
                       counts=(n_windows, n_ww, n_dw))


def _text_graph(adj: sp.csr_matrix, order: np.ndarray, n_train: int, vocab: Sequence[str], labels: Sequence[str],
                doc_names: Sequence[str] | None, *, name: str, seed: int, window_size: int,
                counts: tuple[int, int, int]) -> TextGraph:
    """The :class:`TextGraph` of a normalised adjacency in node order: labels, names and the split by node.
    ``counts``: windows, word-word edges and doc-word edges."""
    n_nodes, n_words = adj.shape[0], len(vocab)
    n_test = n_nodes - n_words - n_train
    class_names = sorted(set(labels))
    cls = {c: k for k, c in enumerate(class_names)}
    node_labels = np.full(n_nodes, -1, dtype=np.int64)
    doc_nodes = np.concatenate([np.arange(n_train), np.arange(n_train + n_words, n_nodes)])
    node_labels[doc_nodes] = [cls[labels[i]] for i in order]
    names = [str(i) for i in order] if doc_names is None else [doc_names[i] for i in order]
    train_idx, val_idx = train_val_split(n_train, seed)
    return TextGraph(
        name=name,
        adj_norm=adj,
        n_train=n_train,
        n_test=n_test,
        n_words=n_words,
        labels=node_labels,
        class_names=class_names,
        vocab=list(vocab),
        doc_names=names,
        doc_file_index=order,
        train_idx=train_idx,
        val_idx=val_idx,
        test_idx=np.arange(n_train + n_words, n_nodes, dtype=np.int64),
        seed=seed,
        window_size=window_size,
        n_windows=counts[0],
        n_word_word_edges=counts[1],
        n_doc_word_edges=counts[2],
    )


# ----------------------------------------------------------------------------------------------------------- cache


def graph_cache_dir() -> Path:
    """``spikegcn.datafiles.cache_dir() / "textgcn_graphs"``."""
    return cache_dir() / "textgcn_graphs"


def graph_cache_key(file_sha256: Sequence[str], settings: CleanSettings, window_size: int) -> str:
    """sha256 over the input files' digests, the cleaning settings, the window and :data:`GRAPH_CODE_VERSION`."""
    payload = {
        "files": list(file_sha256),
        "settings": asdict(settings),
        "stop_words": hashlib.sha256(" ".join(sorted(STOP_WORDS)).encode()).hexdigest(),
        "window_size": window_size,
        "code_version": GRAPH_CODE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def build_text_graph(
    source: str | TextCorpus,
    *,
    window_size: int = 20,
    seed: int = 0,
    settings: CleanSettings | None = None,
    cache: bool = True,
    progress: bool | None = None,
) -> TextGraph:
    """Load (or build and cache) the Text GCN graph of a dataset.

    Args:
        source (str | TextCorpus): A dataset name (``"20ng"``, ``"R8"``, ``"r52"``, ``"ohsumed"``, ``"mr"``,
            ``"demo"``; case-insensitive) or a corpus read with :func:`~spikegcn.text.read_corpus`.
        window_size (int, optional): PMI window length. (default: ``20``)
        seed (int, optional): Seed of the train/validation shuffle; not part of the cache key. (default: ``0``)
        settings (CleanSettings, optional): Cleaning rules (default: Text GCN's for the dataset).
        cache (bool, optional): Read/write ``graph_cache_dir()/{name}-{key}.npz``. (default: ``True``)
        progress (bool, optional): tqdm progress bar; ``None`` shows it for large corpora on a terminal.

    Returns:
        TextGraph

    Raises:
        DataFileError: If a data file is missing, truncated or corrupted.

    Example:
        >>> g = build_text_graph("r8")
        >>> g.n_nodes, g.nnz
        (15362, 3504462)
    """
    if isinstance(source, str):
        name = canonical_name(source)
        files = dataset_files(name)  # verifies the sha256 of the real datasets
        corpus = None
    else:
        name, files, corpus = source.name, source.files, source
    settings = settings if settings is not None else clean_settings_for(name)
    digests = corpus.sha256 if corpus is not None else tuple(sha256_file(f) for f in files)
    key = graph_cache_key(digests, settings, window_size)
    path = graph_cache_dir() / f"{name}-{key[:32]}.npz"
    if cache and path.is_file():
        try:
            return _load_graph(path, key).with_seed(seed)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # rebuilt, never trusted
            warnings.warn(f"ignoring unreadable graph cache {path}: {exc}", stacklevel=2)
    if corpus is None:
        corpus = read_corpus(*files, name=name)
    if progress is None:
        progress = len(corpus) > 10_000 and sys.stderr.isatty()
    vocab, ids, lengths = encode_documents(corpus.texts, settings)
    graph = graph_from_ids(
        ids,
        lengths,
        vocab,
        corpus.is_test,
        corpus.labels,
        name=name,
        doc_names=corpus.doc_names,
        window_size=window_size,
        seed=seed,
        progress=progress,
    )
    graph = replace(graph, cache_key=key)
    if cache:
        try:
            _save_graph(graph, path)
        except OSError as exc:  # a read-only cache must not stop the run
            warnings.warn(f"could not write graph cache {path}: {exc}", stacklevel=2)
    return graph


_INT_FIELDS = ("n_train", "n_test", "n_words", "window_size", "n_windows", "n_word_word_edges", "n_doc_word_edges")


def _save_graph(g: TextGraph, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "indptr": g.adj_norm.indptr,
        "indices": g.adj_norm.indices,
        "data": g.adj_norm.data,
        "labels": g.labels,
        "doc_file_index": g.doc_file_index,
        # newline-joined: tokens and names never contain "\n", and one string avoids a huge fixed-width array
        "class_names": np.array("\n".join(g.class_names)),
        "vocab": np.array("\n".join(g.vocab)),
        "doc_names": np.array("\n".join(g.doc_names)),
        "name": np.array(g.name),
        "cache_key": np.array(g.cache_key),
        **{f: np.array(getattr(g, f), dtype=np.int64) for f in _INT_FIELDS},
    }
    with atomic_open(path, "wb") as f:  # a concurrent reader never sees half a file
        np.savez(f, **arrays)


def _load_graph(path: Path, key: str) -> TextGraph:
    with np.load(path, allow_pickle=False) as z:
        if str(z["cache_key"]) != key:
            raise ValueError("cache key mismatch")
        ints = {f: int(z[f]) for f in _INT_FIELDS}
        n = ints["n_train"] + ints["n_test"] + ints["n_words"]
        adj = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(n, n), copy=False)
        adj.has_sorted_indices = True

        def split(s):
            return s.split("\n") if s else []

        return TextGraph(
            name=str(z["name"]),
            adj_norm=adj,
            labels=z["labels"],
            class_names=split(str(z["class_names"])),
            vocab=split(str(z["vocab"])),
            doc_names=split(str(z["doc_names"])),
            doc_file_index=z["doc_file_index"],
            train_idx=np.empty(0, dtype=np.int64),
            val_idx=np.empty(0, dtype=np.int64),
            test_idx=np.arange(ints["n_train"] + ints["n_words"], n, dtype=np.int64),
            seed=-1,
            cache_key=key,
            **ints,
        )


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="step", leave=False)
