"""A small synthetic corpus shipped with spikegcn, so that the Text GCN pipeline runs with no data at all.

400 short English-like documents in four classes (sport, weather, cooking, computing), in the file layout of the
Text GCN release (``demo_corpus/demo.txt``: ``name<TAB>split<TAB>label``; ``demo_corpus/corpus/demo.txt``: one
document per line), so the same loader reads it: ``load_corpus("demo")`` / ``build_text_graph("demo")``.

The documents are drawn from topic word lists by a seeded generator (:func:`generate_demo_corpus`; run
``python -m spikegcn.text.demo`` to rewrite the files). The classes share many words (``cloud``, ``server``,
``season``, ``hot``, ``chip``, ``record``, ...), every document carries words from other topics, and about one in
eight is written largely about a second topic, so a Text GCN learns it well (about 95 % test accuracy, 120 test
documents) but not perfectly. It is written for this project; no real text is included.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

from ..fileio import write_text

__all__ = ["DEMO_CLASSES", "demo_corpus_dir", "generate_demo_corpus", "write_demo_corpus"]

log = logging.getLogger(__name__)

DEMO_CLASSES: tuple[str, ...] = ("computing", "cooking", "sport", "weather")

_TOPIC_WORDS: dict[str, list[str]] = {
    "sport": (
        "match team goal player coach league striker referee stadium tournament championship defender midfielder "
        "penalty fans victory trophy tennis football basketball racket sprint marathon athlete medal goalkeeper "
        "scored captain injury transfer kickoff halftime olympic cyclist swimmer rugby cricket umpire wicket "
        "tackle"
    ).split(),
    "weather": (
        "rain forecast storm wind snow humidity thunder drizzle frost fog pressure celsius breeze hail heatwave "
        "umbrella showers meteorologist sunshine rainfall gusts flooding drought lightning overcast mild chilly "
        "icy blizzard tornado hurricane degrees warning coastal inland sleet dew mist monsoon barometer"
    ).split(),
    "cooking": (
        "recipe oven flour butter garlic onion simmer bake sauce pepper salt knife pan stir dough roast chicken "
        "soup vegetables boil chop spoon kitchen tomato cheese pasta grill fry herbs lemon sugar dessert bread "
        "chef tablespoon minutes tender crispy marinade flavour"
    ).split(),
    "computing": (
        "software code compiler database network laptop keyboard processor bug python linux kernel program "
        "algorithm disk install update firmware browser password encryption router bandwidth debug terminal "
        "script binary developer api backup virtual graphics monitor upload download compile library crashed "
        "reboot"
    ).split(),
}

# Words that belong to two or three topics: they link the classes in the word graph and make documents ambiguous.
_SHARED_WORDS: dict[str, list[str]] = {
    "sport": "record score run fast speed season court field net serve bowl pitch training power crash".split(),
    "weather": "cloud season temperature hot cool heat cold dry wet spring front power pressure".split(),
    "cooking": "bowl serve hot cool heat cold dry chip cookie cloud pitch spring fast mouse plate".split(),
    "computing": "cloud server cookie chip memory cache mouse record run speed crash net power training fast".split(),
}

_GENERIC_WORDS: list[str] = (
    "day time week people good great new today morning evening really first last long big small make take "
    "get see think report year later city home night weekend local news people usual nearly again everyone "
    "expected plan early change quite around"
).split()

_FUNCTION_WORDS: list[str] = "the a the and of in on to with for is was it this that at".split()
_PUNCT: tuple[str, ...] = (".", ".", ",", "!", "?")
_OPENERS: tuple[str, ...] = ("It's", "We", "They", "I", "Today", "Yesterday", "Our", "Don't", "Note:")

_N_PER_CLASS = 100
_TEST_FRACTION = 0.3


def demo_corpus_dir() -> Path:
    """Folder holding ``demo.txt`` and ``corpus/demo.txt`` inside the installed package."""
    return Path(__file__).resolve().parent / "demo_corpus"


def _choice(rng: random.Random, seq: tuple[str, ...] | list[str]) -> str:
    # only rng.random() is used: its stream is guaranteed stable across Python versions, choice() is not
    return seq[int(rng.random() * len(seq))]


def _document(rng: random.Random, topic: str, second: str | None) -> str:
    """One document of 10-24 content words plus function words and punctuation."""
    others = [c for c in DEMO_CLASSES if c != topic]
    n_content = 10 + int(rng.random() * 15)
    words: list[str] = [_choice(rng, _OPENERS)]
    for _ in range(n_content):
        u = rng.random()
        if second is not None and u < 0.4:  # a document mostly about two topics
            src = _TOPIC_WORDS[second] if rng.random() < 0.7 else _SHARED_WORDS[second]
        elif u < 0.62:
            src = _TOPIC_WORDS[topic]
        elif u < 0.77:
            src = _SHARED_WORDS[topic]
        elif u < 0.83:
            src = _TOPIC_WORDS[_choice(rng, others)]  # stray word of another topic
        else:
            src = _GENERIC_WORDS
        words.append(_choice(rng, src))
        v = rng.random()
        if v < 0.35:
            words.append(_choice(rng, _FUNCTION_WORDS))
        elif v < 0.45:
            words[-1] += _choice(rng, _PUNCT)
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def generate_demo_corpus(seed: int = 2024) -> tuple[list[str], list[str]]:
    """Generate the demo corpus deterministically.

    Args:
        seed (int, optional): Generator seed; the shipped files use the default.

    Returns:
        tuple[list[str], list[str]]: The lines of ``demo.txt`` (``name<TAB>split<TAB>label``) and of
        ``corpus/demo.txt`` (one document each).
    """
    rng = random.Random(seed)
    docs: list[tuple[str, str]] = []
    for topic in DEMO_CLASSES:
        others = [c for c in DEMO_CLASSES if c != topic]
        for _ in range(_N_PER_CLASS):
            second = _choice(rng, others) if rng.random() < 0.12 else None
            docs.append((topic, _document(rng, topic, second)))
    # interleave the classes, then mark a random 30 % as test
    keyed = sorted((rng.random(), i) for i in range(len(docs)))
    order = [i for _, i in keyed]
    n_test = round(_TEST_FRACTION * len(docs))
    test_pick = {i for _, i in sorted((rng.random(), i) for i in order)[:n_test]}
    meta, text = [], []
    for k, i in enumerate(order):
        label, doc = docs[i]
        meta.append(f"demo_{k:04d}\t{'test' if i in test_pick else 'train'}\t{label}")
        text.append(doc)
    return meta, text


def write_demo_corpus(out_dir: str | Path | None = None, seed: int = 2024) -> tuple[Path, Path]:
    """Write ``demo.txt`` and ``corpus/demo.txt`` (default: the package's ``demo_corpus`` folder)."""
    out = Path(out_dir) if out_dir is not None else demo_corpus_dir()
    meta, text = generate_demo_corpus(seed)
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    meta_path, text_path = out / "demo.txt", out / "corpus" / "demo.txt"
    write_text(meta_path, "\n".join(meta) + "\n", encoding="ascii", newline="\n")
    write_text(text_path, "\n".join(text) + "\n", encoding="ascii", newline="\n")
    return meta_path, text_path


if __name__ == "__main__":  # python -m spikegcn.text.demo: rewrite the shipped files
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for p in write_demo_corpus():
        log.info("wrote %s", p)
