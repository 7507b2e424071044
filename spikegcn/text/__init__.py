"""Text GCN data pipeline: corpora, cleaning and the document-word graph (Yao et al., AAAI 2019).

>>> from spikegcn.text import build_text_graph
>>> g = build_text_graph("demo")          # or "20ng", "R8", "R52", "ohsumed", "mr" (any case)
>>> g.adj_norm                            # scipy CSR, float32, int32 indices: D^-1/2 (A + I) D^-1/2
>>> g.train_idx, g.val_idx, g.test_idx    # node indices; g.labels[n] is the class of document node n
"""
from .clean import (
    NLTK_ENGLISH_STOP_WORDS,
    STOP_WORDS,
    CleanSettings,
    check_nltk_stop_words,
    clean_documents,
    clean_settings_for,
    clean_str,
    encode_documents,
    encode_tokens,
    tokenize,
)
from .corpus import (
    DATASETS,
    TEXTGCN_SHA256,
    TEXTGCN_URL,
    TextCorpus,
    canonical_name,
    dataset_files,
    load_corpus,
    read_corpus,
)
from .graph import (
    GRAPH_CODE_VERSION,
    TextGraph,
    build_text_graph,
    graph_cache_dir,
    graph_cache_key,
    graph_from_ids,
    graph_from_tokens,
    train_val_split,
)

__all__ = [
    "DATASETS",
    "GRAPH_CODE_VERSION",
    "NLTK_ENGLISH_STOP_WORDS",
    "STOP_WORDS",
    "TEXTGCN_SHA256",
    "TEXTGCN_URL",
    "CleanSettings",
    "TextCorpus",
    "TextGraph",
    "build_text_graph",
    "canonical_name",
    "check_nltk_stop_words",
    "clean_documents",
    "clean_settings_for",
    "clean_str",
    "dataset_files",
    "encode_documents",
    "encode_tokens",
    "graph_cache_dir",
    "graph_cache_key",
    "graph_from_ids",
    "graph_from_tokens",
    "load_corpus",
    "read_corpus",
    "tokenize",
    "train_val_split",
]
