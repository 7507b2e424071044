"""Text GCN data pipeline: cleaning, corpus files, graph counts, cache, demo corpus."""
from __future__ import annotations

import math
import os
import random
import re
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from spikegcn.datafiles import DataFileError, read_sums
from spikegcn.text import (
    DATASETS,
    NLTK_ENGLISH_STOP_WORDS,
    STOP_WORDS,
    TEXTGCN_SHA256,
    CleanSettings,
    build_text_graph,
    canonical_name,
    check_nltk_stop_words,
    clean_documents,
    clean_settings_for,
    clean_str,
    encode_documents,
    graph_from_tokens,
    load_corpus,
    read_corpus,
    tokenize,
)
from spikegcn.text import graph as graph_mod
from spikegcn.text.demo import demo_corpus_dir, generate_demo_corpus

ROOT = Path(__file__).resolve().parents[1]

# Table of docs/textgcn.md, section 3 (Text GCN paper, Table 1, plus the graph sizes of a faithful build).
_KEYS = ("docs", "train", "test", "words", "nodes", "classes", "windows", "word_word_edges", "doc_word_edges", "nnz")
SPEC = {
    ds: dict(zip(_KEYS, row))
    for ds, row in {
        "20ng": (18846, 11314, 7532, 42757, 61603, 20, 3811767, 11206623, 2257874, 26990597),
        "R8": (7674, 5485, 2189, 7688, 15362, 8, 367611, 1420880, 323670, 3504462),
        "R52": (9100, 6532, 2568, 8892, 17992, 52, 473225, 1787081, 407084, 4406322),
        "ohsumed": (7400, 3357, 4043, 14157, 21557, 23, 864473, 3433745, 588958, 8066963),
        "mr": (10662, 7108, 3554, 18764, 29426, 2, 53708, 752299, 196826, 1927676),
    }.items()
}
# The shipped demo corpus (spikegcn/text/demo_corpus), built with the same rules (stop words, min frequency 5).
DEMO_COUNTS = dict(zip(_KEYS, (400, 280, 120, 237, 637, 4, 959, 10727, 6690, 35471)))


def _have_textgcn() -> bool:
    root = os.environ.get("SPIKEGCN_DATA")
    return bool(root) and all((Path(root) / "textgcn" / rel).is_file() for rel in TEXTGCN_SHA256)


needs_data = pytest.mark.skipif(
    not _have_textgcn(),
    reason="Text GCN corpora not found: set SPIKEGCN_DATA to a folder holding textgcn/data/{ds}.txt "
    "and textgcn/data/corpus/{ds}.txt",
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets an empty cache, so no test reads a graph another one (or a user) cached."""
    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------------------ cleaning


def _kim_clean_str(string: str) -> str:
    """Kim (2014) clean_str written with re.sub, the form Text GCN used: the reference for ours."""
    string = re.sub(r"[^A-Za-z0-9(),!?\'\`]", " ", string)
    for pat, rep in [(r"\'s", " 's"), (r"\'ve", " 've"), (r"n\'t", " n't"), (r"\'re", " 're"), (r"\'d", " 'd"),
                     (r"\'ll", " 'll"), (r",", " , "), (r"!", " ! ")]:
        string = re.sub(pat, rep, string)
    string = re.sub(r"\(", r" \\( ", string)  # \\( in a template is a literal backslash + "(": the quirk
    string = re.sub(r"\)", r" \\) ", string)
    string = re.sub(r"\?", r" \\? ", string)
    string = re.sub(r"\s{2,}", " ", string)
    return string.strip().lower()


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("Isn't it (really) great?!", "is n't it \\( really \\) great \\? !"),
        ("(?)", "\\( \\? \\)"),
        ("It's we'd you'll they're I've", "it 's we 'd you 'll they 're i 've"),
        ("IT'S", "it's"),  # the clitic patterns are case-sensitive: 'S is not split off
        ("can't won't", "ca n't wo n't"),
        ("a\\b", "a b"),  # a backslash in the input is just dropped; only ( ) ? produce one
        ("café\tcrème\r\nÉté", "caf cr me t"),
        ("x-ray 3.5% e-mail@host.com", "x ray 3 5 e mail host com"),
        ("`quoted' ,,", "`quoted' , ,"),
        ("   ", ""),
    ],
)
def test_clean_str_tricky(raw, cleaned):
    assert clean_str(raw) == cleaned
    assert clean_str(raw) == _kim_clean_str(raw)
    assert tokenize(raw) == cleaned.split()


def test_clean_str_matches_regex_reference_on_random_text():
    rng = random.Random(0)
    alphabet = "aAzZ09 \t\r\n(),!?'`\\\"-.:;éü\xa0\x85€漢sntvedlrS"
    for _ in range(500):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        assert clean_str(raw) == _kim_clean_str(raw), repr(raw)
        assert tokenize(raw) == _kim_clean_str(raw).split(), repr(raw)


def test_stop_list_is_nltk_179():
    assert len(NLTK_ENGLISH_STOP_WORDS) == 179
    assert len(STOP_WORDS) == 179
    assert NLTK_ENGLISH_STOP_WORDS[:4] == ("i", "me", "my", "myself")
    assert NLTK_ENGLISH_STOP_WORDS[-1] == "wouldn't"
    assert {"that'll", "should've", "mightn't", "ain", "ma", "s", "t"} <= STOP_WORDS
    # words of the later 198-word NLTK list, which does not reproduce Text GCN
    assert not {"he'd", "i'm", "they'll", "we've"} & STOP_WORDS


def test_check_nltk_stop_words():
    result = check_nltk_stop_words()
    if result is None:
        pytest.skip("nltk's stopwords corpus is not installed (expected offline); the project keeps its own copy")
    from nltk.corpus import stopwords

    if len(stopwords.words("english")) == 179:
        assert result is True
    else:
        assert result is False


def test_clean_documents_filters():
    texts = ["The cat sat.", "the cat ran", "a cat", "Cat and dog", "cat dog dog dog dog"]
    # "cat" 5x, "dog" 5x; "the", "a", "and" are stop words; everything else is rare
    assert clean_documents(texts, CleanSettings(remove_stop_words=True, min_freq=5)) == [
        ["cat"], ["cat"], ["cat"], ["cat", "dog"], ["cat", "dog", "dog", "dog", "dog"]
    ]
    assert clean_documents(texts, clean_settings_for("MR"))[0] == ["the", "cat", "sat"]
    assert clean_settings_for("mr") == CleanSettings(False, 1)
    assert clean_settings_for("r8") == CleanSettings(True, 5)
    vocab, ids, lengths = encode_documents(texts, CleanSettings(True, 5))
    assert vocab == ["cat", "dog"]
    assert lengths.tolist() == [1, 1, 1, 2, 5]
    assert ids.tolist() == [0, 0, 0, 0, 1, 0, 1, 1, 1, 1]


# --------------------------------------------------------------------------------------------------- corpus files


def test_dataset_names_case_insensitive():
    assert [canonical_name(n) for n in ("r8", "20NG", "Ohsumed", "R52", "MR", "Demo")] == [
        "R8", "20ng", "ohsumed", "R52", "mr", "demo"
    ]
    with pytest.raises(ValueError, match="unknown Text GCN dataset"):
        canonical_name("r9")


def test_sums_in_package_equal_recipe_file():
    assert read_sums(ROOT / "datasets" / "textgcn" / "SHA256SUMS") == TEXTGCN_SHA256
    assert {k.split("/")[-1][:-4] for k in TEXTGCN_SHA256} == set(DATASETS)


def test_truncated_file_raises_naming_it(tmp_path, monkeypatch):
    data = tmp_path / "data"
    meta = data / "textgcn" / "data" / "R8.txt"
    meta.parent.mkdir(parents=True)
    src = Path(os.environ.get("SPIKEGCN_DATA", "/nonexistent")) / "textgcn" / "data" / "R8.txt"
    # a real copy cut in half when there is one, else a plausible first line
    meta.write_bytes(src.read_bytes()[: src.stat().st_size // 2] if src.is_file() else b"0\ttrain\tearn\n")
    monkeypatch.setenv("SPIKEGCN_DATA", str(data))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(DataFileError, match="corrupted or truncated") as err:
        load_corpus("r8")
    assert str(meta) in str(err.value)
    with pytest.raises(DataFileError, match="R8.txt"):
        build_text_graph("R8")


def _no_network(url, *args, **kwargs):
    _no_network.calls.append(url)
    raise urllib.error.URLError("network disabled in this test")


_no_network.calls = []


def test_missing_dataset_offline_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGCN_DATA", str(tmp_path / "empty_data"))
    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path / "empty_cache"))
    _no_network.calls.clear()
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(DataFileError) as err:
        load_corpus("Ohsumed")
    msg = str(err.value)
    assert "textgcn/data/ohsumed.txt" in msg
    assert str(tmp_path / "empty_data" / "textgcn" / "data" / "ohsumed.txt") in msg
    assert "SPIKEGCN_DATA" in msg and "download" in msg
    assert _no_network.calls == ["https://raw.githubusercontent.com/yao8839836/text_gcn/master/data/ohsumed.txt"]


def test_read_corpus_rejects_mismatched_files(tmp_path):
    (tmp_path / "x.txt").write_text("a\ttrain\tp\nb\ttest\tq\n")
    (tmp_path / "y.txt").write_text("only one line\n")
    with pytest.raises(DataFileError, match="lists 2 documents but .*y.txt has 1 lines"):
        read_corpus(tmp_path / "x.txt", tmp_path / "y.txt")
    (tmp_path / "y.txt").write_text("doc one\ndoc two\r\n")
    c = read_corpus(tmp_path / "x.txt", tmp_path / "y.txt")
    assert c.texts == ["doc one", "doc two"] and c.is_test.tolist() == [False, True] and c.labels == ["p", "q"]
    (tmp_path / "x.txt").write_text("a\tdev\tp\nb\ttest\tq\n")
    with pytest.raises(DataFileError, match="neither 'train' nor 'test'"):
        read_corpus(tmp_path / "x.txt", tmp_path / "y.txt")


# --------------------------------------------------------------------------------------------------------- graph


def _reference_adj(docs: list[list[str]], is_test: np.ndarray, window: int = 20) -> np.ndarray:
    """Dense Â by the literal rules (a loop over materialised windows), for small corpora only."""
    order = [i for i in range(len(docs)) if not is_test[i]] + [i for i in range(len(docs)) if is_test[i]]
    n_train = int((~is_test).sum())
    vocab = sorted({w for d in docs for w in d})
    v = len(vocab)
    wid = {w: j for j, w in enumerate(vocab)}
    windows = []
    for i in order:
        d = docs[i]
        windows += [d] if len(d) <= window else [d[s : s + window] for s in range(len(d) - window + 1)]
    w_freq = Counter(w for win in windows for w in set(win))
    pair = Counter()
    for win in windows:
        for q in range(1, len(win)):
            for p in range(q):
                if win[p] != win[q]:
                    pair[win[p], win[q]] += 1
                    pair[win[q], win[p]] += 1
    n = len(docs) + v
    a = np.zeros((n, n))
    for (x, y), c in pair.items():
        pmi = math.log(c * len(windows) / (w_freq[x] * w_freq[y]))
        if pmi > 0:
            a[n_train + wid[x], n_train + wid[y]] = pmi
    df = Counter(w for d in docs for w in set(d))
    for rank, i in enumerate(order):
        node = rank if rank < n_train else rank + v
        for w, tf in Counter(docs[i]).items():
            a[node, n_train + wid[w]] = tf * math.log(len(docs) / df[w])
    a = np.maximum(a, a.T) + np.eye(n)
    d = 1 / np.sqrt(a.sum(1))
    return a * d[:, None] * d[None, :]


def _check_against_reference(docs, is_test, labels, window=20):
    g = graph_from_tokens(docs, is_test, labels, window_size=window)
    ref = _reference_adj(docs, np.asarray(is_test), window)
    np.testing.assert_allclose(g.adj_norm.toarray(), ref, rtol=1e-5, atol=1e-7)
    assert g.nnz == np.count_nonzero(ref)
    return g


def test_graph_matches_window_loop_on_toy_corpus():
    docs = [["a", "b", "a", "c"], ["b", "c", "d"], ["a", "a", "a"], ["d", "e", "b", "a", "c", "e"], []]
    g = _check_against_reference(docs, np.array([False, True, False, False, True]), list("xyxyy"), window=3)
    # hand check: windows of size 3 -> 2 + 1 + 1 + 4 + 1 (the empty document still counts once)
    assert g.n_windows == 9
    assert g.n_train == 3 and g.n_test == 2 and g.n_words == 5
    assert g.labels.tolist() == [0, 0, 1, -1, -1, -1, -1, -1, 1, 1]
    assert g.doc_file_index.tolist() == [0, 2, 3, 1, 4]


def test_graph_matches_window_loop_on_demo_corpus():
    corpus = load_corpus("demo")
    docs = clean_documents(corpus.texts, clean_settings_for("demo"))
    assert max(map(len, docs)) > 20  # some documents have several windows
    _check_against_reference(docs, corpus.is_test, corpus.labels)


def test_demo_corpus_graph():
    corpus = load_corpus("Demo")
    assert len(corpus) == 400 and corpus.n_train == 280 and corpus.n_test == 120
    g = build_text_graph("demo", seed=3, cache=False)
    assert g.counts() == DEMO_COUNTS
    assert g.class_names == ["computing", "cooking", "sport", "weather"]
    assert np.bincount(g.labels[g.labels >= 0]).tolist() == [100, 100, 100, 100]
    a = g.adj_norm
    assert isinstance(a, sp.csr_matrix) and a.dtype == np.float32
    assert a.indices.dtype == np.int32 and a.indptr.dtype == np.int32 and a.has_sorted_indices
    assert abs(a - a.T).max() < 1e-7
    resorted = a.copy()
    resorted.has_sorted_indices = False
    resorted.sort_indices()
    assert np.array_equal(resorted.indices, a.indices)  # the sorted flag is true, not just set
    assert np.all(a.diagonal() > 0)
    # node order: train docs, words, test docs; the split is a partition of the train docs
    assert g.vocab == sorted(g.vocab) and len(g.val_idx) == 28 and len(g.train_idx) == 252
    assert np.array_equal(np.sort(np.concatenate([g.train_idx, g.val_idx])), np.arange(280))
    assert np.array_equal(g.test_idx, np.arange(280 + 237, 637))
    assert np.all(g.labels[g.test_idx] >= 0) and np.all(g.labels[280 : 280 + 237] == -1)
    same = build_text_graph("demo", seed=3, cache=False)
    assert np.array_equal(same.val_idx, g.val_idx)
    assert not np.array_equal(g.with_seed(4).val_idx, g.val_idx)


def test_demo_files_equal_generator_output():
    meta, text = generate_demo_corpus()
    root = demo_corpus_dir()
    assert (root / "demo.txt").read_text() == "\n".join(meta) + "\n"
    assert (root / "corpus" / "demo.txt").read_text() == "\n".join(text) + "\n"


def test_cache_hit_returns_identical_graph(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path / "c"))
    g1 = build_text_graph("demo", seed=1)
    files = list((tmp_path / "c" / "textgcn_graphs").glob("demo-*.npz"))
    assert len(files) == 1 and g1.cache_key and g1.cache_key[:32] in files[0].name

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt instead of reading the cache")

    monkeypatch.setattr(graph_mod, "graph_from_ids", no_build)
    g2 = build_text_graph("DEMO", seed=1)
    for f in ("indptr", "indices", "data"):
        a, b = getattr(g1.adj_norm, f), getattr(g2.adj_norm, f)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    for f in ("labels", "doc_file_index", "train_idx", "val_idx", "test_idx"):
        assert np.array_equal(getattr(g1, f), getattr(g2, f)), f
    for f in ("vocab", "class_names", "doc_names", "name", "seed", "cache_key"):
        assert getattr(g1, f) == getattr(g2, f), f
    assert g1.counts() == g2.counts() == DEMO_COUNTS
    # a corpus object read from the same files hits the same entry
    c = read_corpus(demo_corpus_dir() / "demo.txt", demo_corpus_dir() / "corpus" / "demo.txt", name="demo")
    assert build_text_graph(c, seed=1).cache_key == g1.cache_key
    # other settings are another key; a damaged entry is rebuilt with a warning
    monkeypatch.undo()
    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path / "c"))
    g3 = build_text_graph("demo", window_size=10)
    assert g3.cache_key != g1.cache_key and g3.n_windows != g1.n_windows
    files[0].write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable graph cache"):
        g4 = build_text_graph("demo", seed=1)
    assert g4.counts() == DEMO_COUNTS


# ----------------------------------------------------------------------------------------------- real corpora


@needs_data
@pytest.mark.parametrize("ds", ["R8", "mr"])
def test_real_graph_counts_match_spec(ds):
    g = build_text_graph(ds.lower(), cache=False)
    assert g.counts() == SPEC[ds]
    assert g.adj_norm.indices.dtype == np.int32 and g.adj_norm.dtype == np.float32
    assert len(g.val_idx) == int(0.1 * SPEC[ds]["train"])


@needs_data
def test_real_subset_matches_window_loop():
    corpus = load_corpus("R8")
    docs = clean_documents(corpus.texts, clean_settings_for("R8"))
    pick = list(range(0, 7674, 96))  # 80 documents, lengths from a few tokens to hundreds
    assert max(len(docs[i]) for i in pick) > 100
    _check_against_reference([docs[i] for i in pick], corpus.is_test[pick], [corpus.labels[i] for i in pick])


@needs_data
def test_real_corpus_loading():
    c = load_corpus("20NG")
    assert (len(c), c.n_train, c.n_test) == (18846, 11314, 7532)
    assert len(set(c.labels)) == 20
    assert any("\r" in t for t in c.texts)  # a bare CR does not end a 20NG document
