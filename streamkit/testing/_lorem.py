"""Deterministic filler text, so long replies need no fixture files."""

from __future__ import annotations

import random

from ._cache import BoundedCache

__all__ = ["lorem"]

_VOCABULARY = (
    "the of and to in is that it was for on are as with his they at be this have "
    "from or one had by word but not what all were we when your can said there use "
    "an each which she do how their if will up other about out many then them these "
    "so some her would make like him into time has look two more write go see number "
    "no way could people my than first water been call who oil its now find long "
    "down day did get come made may part stream signal river window garden morning "
    "letter question answer small large early quiet simple careful bright patient "
    "steady gentle"
)
_WORDS = _VOCABULARY.split()
# Tests and benchmarks ask for the same long texts again and again; the text is ASCII, so
# its length is its size: a benchmark's 100,000 deltas are 400,000 characters, and nothing
# stops a caller asking for a billion.
_CACHE: BoundedCache[tuple[int, int], str] = BoundedCache(32, 64 * 1024 * 1024)


def lorem(n_chars: int, seed: int = 0) -> str:
    """Return exactly ``n_chars`` characters of English-looking prose.

    Words are separated by single spaces; sentences start with a capital and end
    with a period, some carry a comma, and paragraphs are separated by ``"\\n\\n"``.
    The same arguments always give the same text (a seeded ``random.Random``),
    and the text never ends in whitespace, so any prefix a test strips of
    trailing whitespace is still a prefix of it.
    """
    if n_chars < 0:
        raise ValueError("n_chars must be >= 0")
    text = _CACHE.get((n_chars, seed))
    if text is None:
        text = _CACHE.put((n_chars, seed), _generate(n_chars, seed), n_chars)
    return text


def _generate(n_chars: int, seed: int) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_chars:
        for sentence in range(rng.randint(3, 6)):
            n_words = rng.randint(5, 14)
            words = rng.choices(_WORDS, k=n_words)
            words[0] = words[0].capitalize()
            if n_words > 8 and rng.random() < 0.4:
                comma_at = rng.randint(2, n_words - 3)
                words[comma_at] += ","
            text = " ".join(words) + "."
            if sentence:
                text = " " + text
            parts.append(text)
            size += len(text)
        parts.append("\n\n")
        size += 2
    out = "".join(parts)[:n_chars]
    if out and out[-1].isspace():
        out = out[:-1] + "."
    return out
