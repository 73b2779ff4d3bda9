"""PartialJSON: tool input parsed as it streams equals a whole re-parse of every prefix."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from pydantic_core import from_json

from streamkit._partial import MAX_DEPTH, MAX_TOKEN, PartialJSON

STRINGS = ["", "a", "é", "😀", '\n\t"\\/', "\x00\x1f", "𝄞x", "two words", "\u2028", "ünï😀cødé"]
# Inserted into valid documents: each leaves strict JSON somewhere (or is a valid piece in the wrong place).
GARBAGE = [
    "x", "}", "]", ",", ":", "\\", "\\u", "\\ud83d", "\\ude00", "\\ud83d\\ud8", "\\udc", "\\x", "01", "-", "1.",
    "1e+", ".5", "-0", "NaN", "-Infinity", "tru", "nul", " ", "\x0b", "\x01", '"', "e5", "{", "[", "\ufeff",
]  # fmt: skip


def reference(text: str) -> tuple[str, Any]:
    """What a whole re-parse gives: ("ok", value) or ("error", None)."""
    try:
        return "ok", from_json(text, allow_partial=True)
    except ValueError:
        return "error", None


def incremental(parser: PartialJSON, text: str) -> tuple[str, Any]:
    """Feed the parser what ``text`` adds to what it has read."""
    try:
        return "ok", parser.read(text[parser.length :], lambda: text)
    except ValueError:
        return "error", None


def assert_every_prefix(text: str, steps: list[int]) -> PartialJSON:
    """Read ``text`` growing by ``steps`` (cycled) and compare each read with the reference."""
    parser = PartialJSON()
    end, turn = 0, 0
    while True:
        prefix = text[:end]
        want, got = reference(prefix), incremental(parser, prefix)
        # repr: nan and -0.0 compare as they print; dict order counts too.
        assert (got[0], repr(got[1])) == (want[0], repr(want[1])), f"after {prefix!r}"
        if end == len(text):
            return parser
        end = min(len(text), end + steps[turn % len(steps)])
        turn += 1


def document(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 4 or roll < 0.4:
        return rng.choice(
            [
                rng.choice(STRINGS) + rng.choice(STRINGS),
                rng.randint(-(10**6), 10**6),
                rng.choice([0.5, -0.0, 1e300, 1.5e-7, 123.456, -2.0]),
                rng.choice([True, False, None]),
                10 ** rng.randint(15, 30),
            ]
        )
    if roll < 0.7:
        return {rng.choice([*STRINGS, "k"]) + str(rng.randrange(3)): document(rng, depth + 1) for _ in range(4)}
    return [document(rng, depth + 1) for _ in range(rng.randrange(4))]


def render(rng: random.Random, value: Any) -> str:
    indent = rng.choice([None, 1])
    separators = (",", ":") if indent is None and rng.random() < 0.5 else None
    text = json.dumps({"input": value}, ensure_ascii=rng.random() < 0.5, indent=indent, separators=separators)
    return text.replace("e+", "E+").replace("\\ud", "\\uD") if rng.random() < 0.3 else text


def documents(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [render(rng, document(rng)) for _ in range(count)]


@pytest.mark.parametrize("seed", range(3))
def test_every_prefix_of_valid_documents_matches_a_whole_reparse(seed: int) -> None:
    rng = random.Random(seed)
    for text in documents(seed, 20):
        parser = assert_every_prefix(text, [rng.choice([1, 1, 2, 3, 7]) for _ in range(5)])
        assert not parser._fallback  # a valid document never needs the whole re-parse


@pytest.mark.parametrize("seed", range(3))
def test_every_prefix_of_broken_documents_matches_a_whole_reparse(seed: int) -> None:
    rng = random.Random(seed + 100)
    for text in documents(seed + 100, 25):
        cut = rng.randrange(len(text) + 1)
        assert_every_prefix(text[:cut] + rng.choice(GARBAGE) + text[cut:], [1, 2, 5])


@pytest.mark.parametrize(
    "text",
    [
        '{"emoji": "\\ud83d\\ude00 and \\uD83D\\uDE00", "n": 1}',  # a surrogate pair, split at every character
        '{"word": "caf\\u00e9", "quote": "\\"\\\\\\/\\b\\f\\n\\r\\t"}',
        '{"a": -12.5e-3, "b": 0, "c": 1E+10, "d": -0, "e": 12345678901234567890123}',  # numbers split anywhere
        '{"t": true, "f": false, "n": null, "l": [true, false, null]}',  # literals split anywhere
        '{"deep": [[{"x": [1, {"y": {}}]}, []], {}], "after": "z"}',
        '{"dup": 1, "other": 2, "dup": [3, {"dup": 4}]}',  # a repeated key keeps its place, takes the last value
        '{ "spaced" :\n\t[ 1 ,\r\n 2 ] , "x" : { } }  ',
    ],
)
def test_every_split_of_tricky_documents(text: str) -> None:
    assert_every_prefix(text, [1])
    assert_every_prefix(text, [3])


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 300])
def test_nesting_up_to_and_past_the_limit(depth: int) -> None:
    """Past MAX_DEPTH it re-parses whole, which refuses deep nesting as it always did."""
    parser = assert_every_prefix('{"a":' + "[" * depth + "]" * depth + "}", [1, 4])
    assert parser._fallback is (depth >= MAX_DEPTH)


def test_a_value_that_is_not_an_object_is_left_to_the_whole_reparse() -> None:
    for text in ('["a", 1]', '"text"', "12", "  true"):
        assert_every_prefix(text, [1])


def test_each_read_copies_only_open_containers() -> None:
    """A complete nested value is shared by later reads; what is still open is a fresh copy each time."""
    parser = PartialJSON()
    first = incremental(parser, '{"done": {"k": [1]}, "open": [1')[1]
    second = incremental(parser, '{"done": {"k": [1]}, "open": [1, 2')[1]
    assert first == {"done": {"k": [1]}, "open": [1]} and second == {"done": {"k": [1]}, "open": [1, 2]}
    assert first["done"] is second["done"]
    assert first is not second and first["open"] is not second["open"]


def never(kind: str = "the whole text") -> str:
    raise AssertionError(f"{kind} was asked for")


def test_a_long_string_is_scanned_once() -> None:
    """A string streamed in 20,000 pieces: each read scans the new piece only, and holds back no more than an escape."""
    parser = PartialJSON()
    assert parser.read('{"path": "a.md", "content": "', never) == {"path": "a.md"}
    for _ in range(20_000):
        assert parser.read("word \\", never) == {"path": "a.md"}
        assert parser._buffer == "\\"  # an escape cut short waits for its next character
        assert parser.read("n ", never) == {"path": "a.md"}
        assert parser._buffer == ""
    assert parser.read('"}', never) == {"path": "a.md", "content": "word \n " * 20_000}


def test_a_number_longer_than_any_real_one_is_left_to_the_whole_reparse() -> None:
    digits = "1" * (MAX_TOKEN + 1)
    assert_every_prefix('{"n": ' + digits + "}", [MAX_TOKEN // 4])
    parser = PartialJSON()
    parser.read('{"n": ' + digits[:MAX_TOKEN], never)
    assert not parser._fallback
    assert parser.read("1", lambda: '{"n": ' + digits) == {"n": int(digits)}
    assert parser._fallback


def containers(value: Any) -> dict[int, Any]:
    """Every dict and list in ``value``, by identity (the values are kept so that no id is reused)."""
    found: dict[int, Any] = {}
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict | list):
            found[id(item)] = item
            pending.extend(item.values() if isinstance(item, dict) else item)
    return found


def test_an_earlier_snapshot_stays_what_it_was() -> None:
    """Later input goes into new containers: what a reader holds is never changed under it."""
    parser = PartialJSON()
    first = parser.read('{"a": [1, {"b": "x"}', never)
    second = parser.read(', 2], "c": {"d": [', never)
    third = parser.read('3]}, "a": null}', never)
    assert first == {"a": [1, {"b": "x"}]}
    assert second == {"a": [1, {"b": "x"}, 2], "c": {"d": []}}
    assert third == {"a": None, "c": {"d": [3]}}
    assert first["a"][1] is second["a"][1]  # complete: shared
    rng = random.Random(7)
    for text in documents(7, 10):
        parser, held = PartialJSON(), []
        for end in range(0, len(text) + 1, rng.choice([1, 2, 5])):
            value = incremental(parser, text[:end])[1]
            held.append((value, repr(value)))
        assert all(repr(value) == shown for value, shown in held)


def test_a_read_without_a_new_value_returns_the_last_one() -> None:
    """A string still streaming is not part of the value: the reads meanwhile build nothing."""
    parser = PartialJSON()
    first = parser.read('{"path": "a.md", "lines": [1, 2], "content": "', never)
    assert first == {"path": "a.md", "lines": [1, 2]}
    for piece in ("a long ", "string", " \\n ", "\\u00"):
        assert parser.read(piece, never) is first
    assert parser.read('e9"', never) == {"path": "a.md", "lines": [1, 2], "content": "a long string \n é"}
    done = parser.read("}", never)
    assert done == {"path": "a.md", "lines": [1, 2], "content": "a long string \n é"}
    assert parser.read(" ", never) is done


def test_a_read_renews_only_the_open_path() -> None:
    """Two reads of a long open array of objects: the second's new containers are the open path
    (the root, the array, the object still open), every complete member is the first's."""
    items = ", ".join(json.dumps({"n": n, "tags": ["a", "b"]}) for n in range(2_000))
    parser = PartialJSON()
    first = parser.read('{"title": "t", "items": [' + items + ', {"n": 2000', never)
    second = parser.read(', "tags": ["a"', never)
    assert first["items"][-1] == {"n": 2000} and second["items"][-1] == {"n": 2000, "tags": ["a"]}
    assert len(first["items"]) == len(second["items"]) == 2_001
    assert all(old is new for old, new in zip(first["items"][:-1], second["items"][:-1], strict=True))
    old, new = containers(first), containers(second)
    fresh = [value for key, value in new.items() if key not in old]
    assert fresh == [second, second["items"], second["items"][-1], second["items"][-1]["tags"]]
    assert len(new) == 2 + 2 * 2_000 + 2  # the root, the array, each member and its tags, the open object and its tags
