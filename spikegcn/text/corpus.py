"""Loading the Text GCN corpora (20NG, R8, R52, Ohsumed, MR) and the bundled demo corpus.

A corpus is two files in the layout of the Text GCN release (github.com/yao8839836/text_gcn):

* ``data/{ds}.txt``: one line per document, ``name<TAB>split<TAB>label``;
* ``data/corpus/{ds}.txt``: the raw text, line *i* belonging to document *i*.

The files are located through :func:`spikegcn.datafiles.fetch` (``$SPIKEGCN_DATA/textgcn/...``, then the cache,
then a download from the original release) and checked against the sha256 sums in :data:`TEXTGCN_SHA256`
(the same sums as the project's ``datasets/textgcn/SHA256SUMS``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datafiles import DataFileError, fetch, sha256_file

__all__ = [
    "DATASETS",
    "TEXTGCN_SHA256",
    "TEXTGCN_URL",
    "TextCorpus",
    "canonical_name",
    "dataset_files",
    "load_corpus",
    "read_corpus",
]

#: The five Text GCN benchmarks, spelled as their (case-sensitive) file names.
DATASETS: tuple[str, ...] = ("20ng", "R8", "R52", "ohsumed", "mr")
#: Name of the small corpus shipped inside the package (see :mod:`spikegcn.text.demo`).
DEMO = "demo"

#: Base address of the original public release; files are ``{TEXTGCN_URL}data/{ds}.txt`` and
#: ``{TEXTGCN_URL}data/corpus/{ds}.txt``.
TEXTGCN_URL = "https://raw.githubusercontent.com/yao8839836/text_gcn/master/"

#: sha256 of every file, keyed by its path relative to ``textgcn/``. Kept in the package so an installed copy can
#: verify downloads; ``tests/test_text_data.py`` checks it equals ``datasets/textgcn/SHA256SUMS``.
TEXTGCN_SHA256: dict[str, str] = {
    "data/20ng.txt": "5ec2cc32d698f77f64abe8f9d6e2578b623d85a837d9f04b8387dfee7da83839",
    "data/R52.txt": "dd0c08ca54cb51be909f309525643fdc235efecf674a91d854306b939badd239",
    "data/R8.txt": "4ab8362c508bf7b1c591bca4e4d72ff6e9ff7a730a94cb0a5dfddf237a7cc025",
    "data/mr.txt": "184c1b3b7f9695174fcf949738a661ba9d798b0e500721d0644daab4d095e134",
    "data/ohsumed.txt": "724b8ed25eb3d99b90b86fdc4ef5e2450b386ff0ba348afe38f420cd61eccc16",
    "data/corpus/20ng.txt": "e56bbbaadc1283e4020d38dff5160381d93da04e68571b8bd0b70c47da9544b2",
    "data/corpus/R52.txt": "926453a3a242f0fe61a1a99ab1d3e4e193daf3bc926f3b61b9fc77718c137efc",
    "data/corpus/R8.txt": "c2758703ba8b3e29162e8e9f606e9a1f032c408cd9d76380f02c8ba16422cac7",
    "data/corpus/mr.txt": "2ce386f81c1ebd45fd2c0d2a41e8702e78f2dbeeb88fc8f3cff680211f303689",
    "data/corpus/ohsumed.txt": "c117cc9f36c3c121793f85955b47fba1bbb58a8eb051c638e3611544f11f5032",
}


@dataclass(frozen=True, repr=False)
class TextCorpus:
    """A raw document-classification corpus, in file order.

    Attributes:
        name (str): Dataset name (canonical spelling, e.g. ``"R8"``).
        doc_names (list[str]): First field of each line of the document list.
        is_test (np.ndarray): Boolean per document: ``True`` for test, ``False`` for train.
        labels (list[str]): Class label of each document.
        texts (list[str]): Raw text of each document (``line.strip().decode('latin1')``).
        files (tuple[Path, Path]): The document list and the text file that were read.
        sha256 (tuple[str, str]): Their sha256 digests (part of the graph cache key).
    """

    name: str
    doc_names: list[str]
    is_test: np.ndarray
    labels: list[str]
    texts: list[str]
    files: tuple[Path, Path] = field(repr=False)
    sha256: tuple[str, str] = field(repr=False)

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return (
            f"TextCorpus(name={self.name!r}, docs={len(self)}, train={self.n_train}, test={self.n_test}, "
            f"classes={len(set(self.labels))})"
        )

    @property
    def n_train(self) -> int:
        return int((~self.is_test).sum())

    @property
    def n_test(self) -> int:
        return int(self.is_test.sum())


def canonical_name(name: str) -> str:
    """Map a case-insensitive dataset name (``"r8"``, ``"20NG"``, ``"Ohsumed"``) to its file spelling.

    Raises:
        ValueError: If the name is not one of :data:`DATASETS` or ``"demo"``.
    """
    key = name.strip().lower()
    for ds in (*DATASETS, DEMO):
        if ds.lower() == key:
            return ds
    raise ValueError(f"unknown Text GCN dataset {name!r}; expected one of {', '.join((*DATASETS, DEMO))}")


def dataset_files(name: str) -> tuple[Path, Path]:
    """Locate (and if needed download) a dataset's document list and text file, verifying their sha256.

    Args:
        name (str): Dataset name, case-insensitive.

    Returns:
        tuple[Path, Path]: ``(data/{ds}.txt, data/corpus/{ds}.txt)``.

    Raises:
        DataFileError: If a file is missing and cannot be downloaded, or its sha256 does not match.
    """
    ds = canonical_name(name)
    if ds == DEMO:
        from .demo import demo_corpus_dir

        root = demo_corpus_dir()
        return root / f"{ds}.txt", root / "corpus" / f"{ds}.txt"
    out = []
    for rel in (f"data/{ds}.txt", f"data/corpus/{ds}.txt"):
        out.append(fetch(f"textgcn/{rel}", TEXTGCN_SHA256[rel], TEXTGCN_URL + rel, what=f"Text GCN {ds}"))
    return out[0], out[1]


def read_corpus(meta_path: str | os.PathLike, text_path: str | os.PathLike, name: str | None = None) -> TextCorpus:
    """Read a corpus in the Text GCN layout from two explicit files (no checksum).

    A document is test if its split field contains ``test``, else train if it contains ``train``
    (``20news-bydate-test``, ``training``, ...). Text lines are read in binary and decoded as latin-1, splitting
    only on ``\\n`` (a stray ``\\r`` inside a 20NG document stays part of it, as in the original).

    Args:
        meta_path (str | PathLike): The ``name<TAB>split<TAB>label`` file.
        text_path (str | PathLike): The raw text file, one document per line.
        name (str, optional): Dataset name; defaults to the stem of ``meta_path``.

    Raises:
        DataFileError: If the two files disagree in length or a line is malformed.
    """
    meta_path, text_path = Path(meta_path), Path(text_path)
    with open(meta_path, "rb") as f:
        meta = [line.strip().decode("latin1") for line in f]
    with open(text_path, "rb") as f:  # iterate, not splitlines(): only b"\n" ends a document
        texts = [line.strip().decode("latin1") for line in f]
    # a final newline does not make an extra document; tolerate trailing blank lines in the list only
    while meta and not meta[-1]:
        meta.pop()
    if len(texts) != len(meta):
        raise DataFileError(
            f"{meta_path} lists {len(meta)} documents but {text_path} has {len(texts)} lines; "
            "the files are truncated or do not belong together"
        )
    doc_names, labels, is_test = [], [], np.empty(len(meta), dtype=bool)
    for i, line in enumerate(meta):
        parts = line.split("\t")
        if len(parts) < 3:
            raise DataFileError(f"{meta_path}, line {i + 1}: expected 'name<TAB>split<TAB>label', got {line!r}")
        split = parts[1]
        if "test" in split:
            is_test[i] = True
        elif "train" in split:
            is_test[i] = False
        else:
            raise DataFileError(f"{meta_path}, line {i + 1}: split {split!r} contains neither 'train' nor 'test'")
        doc_names.append(parts[0])
        labels.append(parts[2])
    return TextCorpus(
        name=name if name is not None else meta_path.stem,
        doc_names=doc_names,
        is_test=is_test,
        labels=labels,
        texts=texts,
        files=(meta_path, text_path),
        sha256=(sha256_file(meta_path), sha256_file(text_path)),
    )


def load_corpus(name: str) -> TextCorpus:
    """Load one of the Text GCN corpora, or the bundled ``"demo"`` corpus, by (case-insensitive) name.

    Example:
        >>> corpus = load_corpus("r8")        # needs the data, see datasets/textgcn/README.md
        >>> len(corpus), corpus.n_train, corpus.n_test
        (7674, 5485, 2189)
    """
    ds = canonical_name(name)
    meta, text = dataset_files(ds)
    return read_corpus(meta, text, name=ds)
