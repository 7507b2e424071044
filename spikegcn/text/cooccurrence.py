"""The counts behind the Text GCN graph, vectorised: sliding windows, word pairs, PMI, TF-IDF and ``Â``.

Windows are never materialised. Within one document of length ``L`` the windows start at
``s = 0 .. n_w - 1`` with ``n_w = max(1, L - w + 1)`` and cover positions ``s .. s + w - 1``. Hence

* the position pair ``p < q`` (``q - p < w``) lies in ``min(p, n_w - 1) - max(0, q - w + 1) + 1`` windows, so the
  pair counts are a weighted sum over the ``w - 1`` position offsets, one vector operation each;
* position ``p`` is the first occurrence of its word in window ``s`` iff ``s > prev(p)`` (the previous position of
  the same word in the document), so ``#W(word)`` is a sum of clipped interval lengths.

This gives exactly the counts of the original loop over windows (20NG: 3,811,767 windows, 11,206,623 word-word
edges, 26,990,597 non-zeros in ``Â``) in seconds instead of minutes. The rules are in ``docs/textgcn.md``,
section 3; :func:`spikegcn.text.graph.graph_from_ids` runs the steps below in order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class Tokens:
    """The corpus as one token stream in node order (train documents, then test documents, each in file order)."""

    tok: np.ndarray  # int32 word id of every token
    lengths: np.ndarray  # int64 tokens per document, node order
    doc_of: np.ndarray  # int32 document rank (node order) of every token
    pos: np.ndarray  # int32 position of every token inside its document
    last_start: np.ndarray  # int32 last window start of each token's document
    room: np.ndarray  # int32 tokens from this one to the end of its document
    n_windows: int


def node_order_tokens(ids: np.ndarray, lengths: np.ndarray, order: np.ndarray, w: int) -> Tokens:
    """Renumber the documents into node order (``order``: file index of each node-order document) and index every
    token by document, position and window. Windows and pair counts do not depend on the order, TF-IDF rows do."""
    n_docs = len(lengths)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    tok = np.concatenate([ids[starts[i] : ends[i]] for i in order]) if n_docs else ids[:0]
    tok = tok.astype(np.int32, copy=False)
    lengths = lengths[order]
    del starts, ends
    n_tok = len(tok)
    doc_of = np.repeat(np.arange(n_docs, dtype=np.int32), lengths)  # document rank (node order) of each token
    pos = (np.arange(n_tok, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)).astype(np.int32)
    # An empty document still counts as one (empty) window, as in the original loop.
    n_win_doc = np.maximum(1, lengths - w + 1)
    n_windows = int(n_win_doc.sum())
    last_start = (n_win_doc - 1).astype(np.int32)[doc_of]  # last window start of each token's document
    room = (lengths.astype(np.int32)[doc_of] - pos)  # tokens from this one to the end of its document
    return Tokens(tok, lengths, doc_of, pos, last_start, room, n_windows)


def word_window_counts(t: Tokens, n_words: int, w: int) -> np.ndarray:
    """``#W(i)``, the windows containing word ``i``: position ``p`` starts counting in window ``s`` iff
    ``s > prev(p)``, the previous position of the same word."""
    key = t.doc_of.astype(np.int64) * n_words + t.tok
    srt = np.argsort(key, kind="stable")  # stable: positions stay increasing inside a (doc, word) group
    same = key[srt[1:]] == key[srt[:-1]]
    prev = np.full(len(t.tok), -1, dtype=np.int32)
    prev[srt[1:][same]] = t.pos[srt[:-1][same]]
    del key, srt, same
    first = np.maximum(t.pos - w + 1, prev + 1)
    n_win_tok = np.clip(np.minimum(t.pos, t.last_start) - first + 1, 0, None)
    return np.bincount(t.tok, weights=n_win_tok, minlength=n_words).round().astype(np.int64)


def pair_counts(t: Tokens, n_words: int, w: int, bar) -> sp.csr_matrix:
    """``#W(i, j)`` on unordered pairs ``i < j`` (upper triangle, duplicates summed).

    The pair of positions ``(p, p + d)`` lies in ``min(p, last_start) - max(0, p + d - w + 1) + 1`` windows. Slices
    instead of gathers keep each offset cheap. Worst case a pair count is ``#W * w (w - 1) / 2``, which int32 holds
    for every Text GCN corpus. ``bar`` advances once per offset."""
    tok, n_tok = t.tok, len(t.tok)
    count_dtype = np.int32 if t.n_windows * w * (w - 1) // 2 < 2**31 else np.int64
    lead = np.minimum(t.pos, t.last_start)  # last window start containing p
    trail = np.maximum(t.pos - w + 1, 0)  # first window start containing q
    pairs = sp.csr_matrix((n_words, n_words), dtype=count_dtype)
    for d in range(1, min(w, n_tok)):
        wa, wb = tok[:-d], tok[d:]
        valid = (t.room[:-d] > d) & (wa != wb)  # same document, different words
        weight = (lead[:-d] - trail[d:] + 1)[valid].astype(count_dtype, copy=False)
        lo = np.minimum(wa, wb)[valid]
        hi = np.maximum(wa, wb)[valid]
        del valid
        pairs = pairs + sp.coo_matrix((weight, (lo, hi)), shape=(n_words, n_words)).tocsr()  # sums duplicates
        del weight, lo, hi
        bar.update(1)
    return pairs


def pmi_edges(pairs: sp.csr_matrix, word_windows: np.ndarray, n_windows: int, n_words: int) -> tuple[sp.csr_matrix,
                                                                                                       int]:
    """The word-word block with its self-loops, symmetric, and the number of (undirected) PMI > 0 edges.

    PMI is computed in the original's operation order, so that "PMI > 0" is decided on the very same float64
    values."""
    pairs.sum_duplicates()
    row = np.repeat(np.arange(n_words, dtype=np.int64), np.diff(pairs.indptr))
    pmi = np.log(
        (pairs.data / float(n_windows))
        / (word_windows[row].astype(np.float64) * word_windows[pairs.indices] / float(n_windows**2))
    )
    keep = pmi > 0
    n_ww = int(keep.sum())
    ww = sp.csr_matrix((pmi[keep], pairs.indices[keep], _indptr(row[keep], n_words)), shape=(n_words, n_words))
    del row, pmi, keep
    return (ww + ww.T.tocsr() + sp.identity(n_words, format="csr")).tocsr(), n_ww


def tfidf(doc_of: np.ndarray, tok: np.ndarray, n_docs: int, n_words: int) -> sp.csr_matrix:
    """Doc-word weights: raw count times ``log(n_docs / df)``; a word in every document gets idf 0 and no edge."""
    tf = sp.coo_matrix(
        (np.ones(len(tok), dtype=np.float64), (doc_of, tok)), shape=(n_docs, n_words)
    ).tocsr()  # sums duplicates
    df = np.bincount(tf.indices, minlength=n_words)
    idf = np.log(n_docs / np.maximum(df, 1))
    tf.data *= idf[tf.indices]
    tf.eliminate_zeros()
    return tf


def normalized_adjacency(ww: sp.csr_matrix, dw_train: sp.csr_matrix, dw_test: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1/2 (A + I) D^-1/2`` in node order (train docs, words, test docs) from the word-word block (self-loops
    included) and the doc-word blocks; float32 values and int32 indices (CPU spmm is 2-4x faster with them).

    Symmetrising by the element-wise ``max(A, A^T)`` is a union of both directions here: the PMI block is symmetric
    already and the doc-word block has no entry in the transposed position. All blocks are CSR, so ``bmat`` stacks
    them without a COO round trip and the column indices stay sorted."""
    n_train, n_test = dw_train.shape[0], dw_test.shape[0]
    adj = sp.bmat(
        [
            [sp.identity(n_train, format="csr"), dw_train, sp.csr_matrix((n_train, n_test))],
            [dw_train.T.tocsr(), ww, dw_test.T.tocsr()],
            [sp.csr_matrix((n_test, n_train)), dw_test, sp.identity(n_test, format="csr")],
        ],
        format="csr",
    )
    deg = np.asarray(adj.sum(axis=1)).ravel()  # >= 1 thanks to the self-loop
    d_inv_sqrt = 1.0 / np.sqrt(deg)
    n_nodes = adj.shape[0]
    adj.data *= np.repeat(d_inv_sqrt, np.diff(adj.indptr))
    adj.data *= d_inv_sqrt[adj.indices]
    adj = sp.csr_matrix(
        (adj.data.astype(np.float32), adj.indices.astype(np.int32), adj.indptr.astype(np.int32)),
        shape=(n_nodes, n_nodes),
        copy=False,
    )
    adj.has_sorted_indices = True
    return adj


def _indptr(sorted_rows: np.ndarray, n: int) -> np.ndarray:
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(sorted_rows, minlength=n), out=indptr[1:])
    return indptr
