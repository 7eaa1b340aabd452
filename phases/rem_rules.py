"""REM's pair rules: is a candidate pair a duplicate, a supersession, or neither.

Every candidate pair (phases/rem.py finds them) goes through a lexical
check on its *content words* (tokens minus stopwords, Porter-stemmed: the
store's own stemmer), its *values* (tokens with a digit: ports, versions,
dates, amounts) and its *negation* (not, no, never, n't...). Two words that
are one edit apart (typos) count as the same word. Then:

* duplicate: cosine >= `duplicate_threshold`, same values, same negation,
  and the word sets differ only by added words on one side (no word
  substituted for another), at most `max(1, added_fraction * |union|)`;
* supersession: cosine >= `supersede_threshold`, same kind, same negation,
  the same content words (no word added), at least `min_subject_words` of
  them, and exactly one value changed (one value on each side that the
  other lacks): "the billing API listens on port 8080" then "... on port
  9090". The older one (observed_at, then id) is superseded by the newer.
  Two changed values ("Incident 3: ... release r103" / "Incident 9: ...
  release r109") read as two records, not an update.

A word substituted ("Alice prefers tea" / "Alice prefers coffee") is a
different fact, and neither rule fires: without a model of meaning, the
safe reading of a changed word is "another fact", and a wrong merge hides a
memory from search while a missed one only leaves a near-copy visible.

The same content words confirm REM's clusters (rem.py, rem_clusters.py).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from reverie.phases.settings import RemConfig
from reverie.store.embed_lexical import IRREGULAR, STOPWORDS, porter_stem, tokens

_VALUE = re.compile(r"[\w.:/@+-]*\d[\w.:/@+-]*")
_NEGATION = re.compile(r"\b(?:not|no|never|nor|none|nothing|without|cannot|\w+n['\u2019]t)\b", re.I)


@dataclass(frozen=True, slots=True)
class Features:
    words: frozenset[str]
    values: frozenset[str]
    negated: bool


@functools.lru_cache(maxsize=65536)
def features(text: str) -> Features:
    """Content-word stems, values and negation parity of a text."""
    values = frozenset(v.strip(".:/-+").lower() for v in _VALUE.findall(text))
    rest = _VALUE.sub(" ", text)
    words = frozenset(porter_stem(IRREGULAR.get(t, t)) for t in tokens(rest) if t not in STOPWORDS)
    return Features(words, values, len(_NEGATION.findall(text)) % 2 == 1)


def _one_edit(a: str, b: str) -> bool:
    """Whether a and b (>= 4 chars) are one substitution, insertion or deletion apart."""
    if min(len(a), len(b)) < 4 or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1 :]


def word_diff(a: frozenset[str], b: frozenset[str]) -> tuple[set[str], set[str]]:
    """Words only in a, only in b, after pairing off typos (one edit apart)."""
    only_a, only_b = set(a - b), set(b - a)
    for x in sorted(only_a):
        y = next((y for y in sorted(only_b) if _one_edit(x, y)), None)
        if y is not None:
            only_a.discard(x)
            only_b.discard(y)
    return only_a, only_b


def classify(fa: Features, fb: Features, cos: float, same_kind: bool, cfg: RemConfig) -> str | None:
    """'duplicate', 'supersede' or None for one candidate pair (see the module doc)."""
    if fa.negated != fb.negated:
        return None
    only_a, only_b = word_diff(fa.words, fb.words)
    if only_a and only_b:
        return None  # a word substituted: another fact
    added = len(only_a) + len(only_b)
    if added > max(1, int(cfg.added_fraction * len(fa.words | fb.words))):
        return None
    if fa.values == fb.values:
        return "duplicate" if cos >= cfg.duplicate_threshold else None
    if (
        same_kind
        and cos >= cfg.supersede_threshold
        and len(fa.values - fb.values) == 1
        and len(fb.values - fa.values) == 1
        and added == 0
        and len(fa.words) >= cfg.min_subject_words
    ):
        return "supersede"
    return None
