"""Text GCN corpus cleaning: Kim (2014) ``clean_str``, the NLTK English stop list and the frequency filter.

Following these rules reproduces the cleaned corpora of the Text GCN release (Yao et al., AAAI 2019) exactly,
and with them the vocabulary sizes of the paper's Table 1 (R8 7,688; R52 8,892; Ohsumed 14,157; MR 18,764;
20NG 42,757).
"""
from __future__ import annotations

import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

__all__ = [
    "NLTK_ENGLISH_STOP_WORDS",
    "STOP_WORDS",
    "CleanSettings",
    "check_nltk_stop_words",
    "clean_documents",
    "clean_settings_for",
    "clean_str",
    "encode_documents",
    "encode_tokens",
    "tokenize",
]

# NLTK's English stop list (the 179-word version Text GCN used), in NLTK's order. It lives here because the
# ``nltk`` package ships no corpora and cannot download them offline; the older 127-word list does not reproduce
# the R8 vocabulary, and the newer 198-word nltk_data list would not either.
NLTK_ENGLISH_STOP_WORDS: tuple[str, ...] = tuple(
    """
    i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
    himself she she's her hers herself it it's its itself they them their theirs themselves what which who whom this
    that that'll these those am is are was were be been being have has had having do does did doing a an the and but
    if or because as until while of at by for with about against between into through during before after above
    below to from up down in out on off over under again further then once here there when where why how all any
    both each few more most other some such no nor not only own same so than too very s t can will just don don't
    should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn
    hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn
    wasn't weren weren't won won't wouldn wouldn't
    """.split()
)
STOP_WORDS: frozenset[str] = frozenset(NLTK_ENGLISH_STOP_WORDS)

_NOT_KEPT = re.compile(r"[^A-Za-z0-9(),!?\'\`]")
# The same substitution as a translation table for code points < 256 (all of a latin-1 decoded corpus): 8x faster
# than the regex on 20NG. Anything outside the table is left to the regex.
_NOT_KEPT_TABLE = str.maketrans({i: " " for i in range(256) if _NOT_KEPT.match(chr(i))})
_MULTI_SPACE = re.compile(r"\s{2,}")
# After the first substitution every remaining pattern of Kim's clean_str is a literal, so ``str.replace`` (also
# left-to-right, non-overlapping) gives the same result as ``re.sub`` and is several times faster. The ``(``, ``)``
# and ``?`` replacements keep a literal backslash: in the original ``re.sub(r"\(", " \( ", s)`` the template escape
# ``\(`` is unknown and so left alone, which makes ``\(``, ``\)`` and ``\?`` the real tokens.
_LITERAL_STEPS: tuple[tuple[str, str], ...] = (
    ("'s", " 's"),
    ("'ve", " 've"),
    ("n't", " n't"),
    ("'re", " 're"),
    ("'d", " 'd"),
    ("'ll", " 'll"),
    (",", " , "),
    ("!", " ! "),
    ("(", " \\( "),
    (")", " \\) "),
    ("?", " \\? "),
)


def _replace_not_kept(text: str) -> str:
    text = text.translate(_NOT_KEPT_TABLE)
    return text if text.isascii() else _NOT_KEPT.sub(" ", text)


def _split_off(text: str) -> str:
    for old, new in _LITERAL_STEPS:
        text = text.replace(old, new)
    return text


def clean_str(text: str) -> str:
    r"""Kim (2014) tokenisation/cleaning as used by Text GCN, quirks included.

    Every character outside ``[A-Za-z0-9(),!?'`]`` becomes a space, clitics (``'s``, ``'ve``, ``n't``, ``'re``,
    ``'d``, ``'ll``) and ``, ! ( ) ?`` are split off, runs of whitespace collapse, and the result is stripped and
    lower-cased. ``(``, ``)`` and ``?`` become the tokens ``\(``, ``\)`` and ``\?`` (with the backslash).

    Args:
        text (str): One raw document.

    Returns:
        str: The cleaned document, tokens separated by single spaces.

    Example:
        >>> print(clean_str("Isn't it (really) great?!"))
        is n't it \( really \) great \? !
    """
    return _MULTI_SPACE.sub(" ", _split_off(_replace_not_kept(text))).strip().lower()


def tokenize(text: str) -> list[str]:
    """``clean_str(text).split()``: the tokens Text GCN counts."""
    # split() already collapses and strips whitespace, so the last regex of clean_str is not needed here
    return _split_off(_replace_not_kept(text)).lower().split()


@dataclass(frozen=True)
class CleanSettings:
    """How documents are filtered after :func:`clean_str`.

    Args:
        remove_stop_words (bool): Drop tokens in :data:`STOP_WORDS`.
        min_freq (int): Keep a token only if it occurs at least this often in the whole corpus (train and test).
    """

    remove_stop_words: bool = True
    min_freq: int = 5


def clean_settings_for(name: str) -> CleanSettings:
    """Text GCN's settings for a dataset: MR keeps every token, all other corpora drop stop words and tokens
    seen fewer than 5 times."""
    if name.lower() == "mr":
        return CleanSettings(remove_stop_words=False, min_freq=1)
    return CleanSettings(remove_stop_words=True, min_freq=5)


def clean_documents(
    texts: Iterable[str],
    settings: CleanSettings = CleanSettings(),
) -> list[list[str]]:
    """Clean and filter a corpus (Text GCN's ``remove_words`` step).

    Token frequencies are counted over all documents, train and test, after :func:`clean_str`.

    Args:
        texts (Iterable[str]): Raw documents.
        settings (CleanSettings, optional): Stop-word and frequency filter.

    Returns:
        list[list[str]]: The kept tokens of each document, in order.
    """
    docs = [tokenize(t) for t in texts]
    keep = _kept_words(docs, settings)
    if keep is None:
        return docs
    return [[w for w in doc if w in keep] for doc in docs]


def encode_documents(
    texts: Iterable[str],
    settings: CleanSettings = CleanSettings(),
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Clean and filter a corpus like :func:`clean_documents`, returning word ids instead of strings.

    Args:
        texts (Iterable[str]): Raw documents.
        settings (CleanSettings, optional): Stop-word and frequency filter.

    Returns:
        tuple: ``(vocab, ids, lengths)``: the sorted vocabulary of kept words, the int32 word id of every kept
        token of every document (concatenated in document order) and the int64 number of kept tokens per document.
    """
    docs = [tokenize(t) for t in texts]
    return encode_tokens(docs, _kept_words(docs, settings))


def encode_tokens(
    docs: Sequence[Sequence[str]], keep: set[str] | frozenset[str] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Map token lists to ids over a sorted vocabulary, dropping tokens not in ``keep`` (``None``: keep all).

    Returns:
        tuple: ``(vocab, ids, lengths)`` as in :func:`encode_documents`.
    """
    flat = chain.from_iterable(docs)
    raw_lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    words = set(chain.from_iterable(docs)) if keep is None else set(keep)
    vocab = sorted(words)
    # one C-level dict lookup per token; a dropped word maps to -1 (stored on its first miss) and is removed below
    word_id: dict[str, int] = defaultdict(lambda: -1)
    word_id.update((w, j) for j, w in enumerate(vocab))
    ids = np.fromiter(map(word_id.__getitem__, flat), dtype=np.int32, count=int(raw_lengths.sum()))
    if keep is None:
        return vocab, ids, raw_lengths
    kept = ids >= 0
    doc_of = np.repeat(np.arange(len(docs)), raw_lengths)
    lengths = np.bincount(doc_of[kept], minlength=len(docs)).astype(np.int64)
    return vocab, ids[kept], lengths


def _kept_words(docs: Sequence[Sequence[str]], settings: CleanSettings) -> set[str] | None:
    """The words that survive the filter, or ``None`` when the filter keeps everything."""
    if not settings.remove_stop_words and settings.min_freq <= 1:
        return None
    freq: Counter[str] = Counter(chain.from_iterable(docs))
    drop = STOP_WORDS if settings.remove_stop_words else frozenset()
    return {w for w, c in freq.items() if c >= settings.min_freq and w not in drop}


def check_nltk_stop_words(ours: Sequence[str] = NLTK_ENGLISH_STOP_WORDS) -> bool | None:
    """Compare our stop list with NLTK's English list, when the NLTK corpus happens to be installed.

    Returns:
        bool | None: ``None`` when ``nltk`` or its ``stopwords`` corpus is not available, ``True`` when NLTK's list
        equals ours, ``False`` (with a warning naming the differences) otherwise. Recent ``nltk_data`` releases
        ship a longer list; Text GCN's counts need exactly ours.
    """
    try:
        from nltk.corpus import stopwords

        theirs = stopwords.words("english")
    except (ImportError, LookupError, OSError):
        return None
    missing, extra = set(ours) - set(theirs), set(theirs) - set(ours)
    if missing or extra or len(theirs) != len(ours):
        warnings.warn(
            f"NLTK's English stop list ({len(theirs)} words) differs from Text GCN's {len(ours)}-word list: "
            f"missing {sorted(missing)}, extra {sorted(extra)}; spikegcn uses its own copy",
            stacklevel=2,
        )
        return False
    return True
