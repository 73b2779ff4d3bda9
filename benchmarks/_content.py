"""What the benchmark's streams carry, written as SSE transcripts that the mock server replays.

Two contents. ``realistic`` (the default): English prose of the kind a model writes (sentences, markdown headings
and bullets, commas, parentheses, quotes, numbers, inline code) in deltas of 3 to 5 word-or-punctuation tokens
(about 15 characters), with the occasional em-dash, curly quote, accented word or emoji; and a tool input of nested
JSON (keys, prose strings, numbers, booleans, arrays) sent as raw UTF-8 in slices of about 15 characters. One emoji
anywhere makes a CPython ``str`` of 4 bytes per character, one em-dash or curly quote 2 (an é keeps 1), so a client
that copies its text per delta pays for that; 4-character ASCII deltas hide it. ``ascii``:
``streamkit.testing.lorem`` in 4-character deltas, and the tool input ``{"path", "content"}`` in equal slices (the
benchmark's content before).

A transcript is written once by the manager into the work directory (the server's ``--fixtures`` directory) and
each request names it, so the request header stays small and every contender receives the same bytes.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Iterator
from typing import Any

CONTENTS = ("realistic", "ascii")
ASCII_CHARS_PER_DELTA, REALISTIC_CHARS_PER_DELTA = 4, 15
TOKENS_PER_DELTA = (3, 5)  # inclusive
TOOL_NAME, TOOL_ID, MESSAGE_ID, MODEL = "write_file", "toolu_01BenchmarkToolUse00000", "msg_bench", "claude-mock-1"
SIGNATURE = "sig_bench"

_VOCABULARY = (
    "the a an and or but of to in on for with from by as at into over under about after before between through "
    "is are was were be been has have had do does can could should would will may might must not no more most "
    "this that these those it its they them their we our you your which what when where while if then than so "
    "client server stream streams request response event events delta deltas token tokens buffer parser message "
    "reply connection socket retry timeout error errors header headers body chunk chunks text tool input output "
    "value values field fields list lists string strings number numbers object function method class module test "
    "tests file files line lines data cache memory time latency cost result results user users model models "
    "first second last next each every other same different simple small large fast slow safe clear whole "
    "read write send receive parse build check keep return close open start stop wait call run use make take "
    "give find show handle raise catch store load count measure compare update change fix add remove move copy "
    "usually often always never only also still already just even quite rather exactly roughly probably"
)
_WORDS = _VOCABULARY.split()
_NAMES = ("Alice", "Bob", "Python", "HTTP", "JSON", "Linux", "SSE", "API", "Tuesday", "March", "London", "Claude")
_ACCENTED = ("café", "naïve", "résumé", "façade", "déjà vu", "Zürich", "São Paulo", "entrée", "jalapeño", "coöperate")
_EMOJI = ("🙂", "🚀", "✅", "👍", "✨", "📌", "🎉", "⚠️", "🔍", "💡")
_CODE = ("get_final_message()", "current_message", "json.loads", "max_tokens", "None", "stream=True", "aiter_bytes")
_TOKEN = re.compile(r" ?\w{1,5}| ?[^\w\s]+|\s+")  # words of over 5 letters in pieces, as BPE splits them


class Prose:
    """A deterministic generator of a model's reply: paragraphs, headings, bullet lists, as one text stream."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def word(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.005:
            return rng.choice(_ACCENTED)
        if roll < 0.04:
            return rng.choice(_NAMES)
        if roll < 0.07:
            return str(rng.choice((rng.randint(2, 99), rng.randint(100, 9999), round(rng.uniform(0, 10), 1))))
        if roll < 0.08:
            return f"`{rng.choice(_CODE)}`"
        return rng.choice(_WORDS)

    def clause(self, low: int = 3, high: int = 9) -> str:
        return " ".join(self.word() for _ in range(self.rng.randint(low, high)))

    def sentence(self) -> str:
        rng = self.rng
        parts = [self.clause(4, 10)]
        for _ in range(rng.choice((0, 0, 1, 1, 2))):
            roll = rng.random()
            if roll < 0.04:
                parts.append(f" — {self.clause(2, 6)}")
            elif roll < 0.22:
                parts.append(f" ({self.clause(2, 6)})")
            elif roll < 0.3:
                quote = ("“", "”") if rng.random() < 0.3 else ('"', '"')
                parts.append(f", {quote[0]}{self.clause(2, 5)}{quote[1]}")
            else:
                parts.append(f", {self.clause(3, 8)}")
        text = "".join(parts)
        return text[0].upper() + text[1:] + rng.choice(".....?!:") if text else "."

    def paragraph(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.12:
            return f"## {self.clause(2, 5).title()}"
        if roll < 0.3:
            marker = rng.choice(("- ", "* ", "1. "))
            items = (f"{marker}**{self.word()}**: {self.clause(3, 10)}." for _ in range(rng.randint(2, 5)))
            return "\n".join(items)
        text = " ".join(self.sentence() for _ in range(rng.randint(2, 6)))
        return text + f" {rng.choice(_EMOJI)}" if rng.random() < 0.2 else text

    def tokens(self) -> Iterator[str]:
        """Word and punctuation tokens, each with its leading space, and the paragraph breaks."""
        first = True
        while True:
            if not first:
                yield "\n\n"
            first = False
            yield from _TOKEN.findall(self.paragraph())


def prose_deltas(count: int, seed: int) -> list[str]:
    """``count`` deltas of 3 to 5 tokens of a reply (the first token's leading space dropped)."""
    rng, tokens = random.Random(seed + 1_000_003), Prose(seed).tokens()
    deltas = ["".join(next(tokens) for _ in range(rng.randint(*TOKENS_PER_DELTA))) for _ in range(count)]
    if deltas:
        deltas[0] = deltas[0].lstrip() or "I"
    return deltas


def tool_input(chars: int, seed: int) -> dict[str, Any]:
    """A document-writing tool call whose JSON (``json.dumps(..., ensure_ascii=False)``) has at least ``chars``."""
    prose, rng = Prose(seed), random.Random(seed + 2_000_003)
    document: dict[str, Any] = {"path": "notes/Überblick \u2013 draft.md", "title": prose.sentence(), "sections": []}
    size = len(json.dumps(document, ensure_ascii=False))
    while size < chars:
        section = {
            "heading": prose.clause(2, 5).title(),
            "paragraphs": [
                " ".join(prose.sentence() for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))
            ],
            "tags": [prose.word() for _ in range(rng.randint(1, 4))],
            "metrics": {"words": rng.randint(20, 900), "score": round(rng.random(), 3), "reviewed": rng.random() < 0.5},
            "links": [{"label": prose.clause(1, 3), "url": f"https://example.com/{rng.randint(1, 999)}"}],
        }
        document["sections"].append(section)
        size += len(json.dumps(section, ensure_ascii=False)) + 2
    return document


def slices(text: str, count: int, jitter: int) -> list[str]:
    """``text`` in ``count`` consecutive pieces of about equal length, each cut moved by up to ``jitter``."""
    rng = random.Random(len(text))
    step = len(text) / count if count else 0
    jitter = max(0, min(jitter, int((step - 1) / 2)))
    cuts = [0, *(round(k * step) + rng.randint(-jitter, jitter) for k in range(1, count)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(cuts)]


def text_deltas(count: int, seed: int, content: str) -> list[str]:
    if content == "ascii":
        from streamkit.testing import lorem

        text = lorem(ASCII_CHARS_PER_DELTA * count, seed=seed)
        return [text[i : i + ASCII_CHARS_PER_DELTA] for i in range(0, len(text), ASCII_CHARS_PER_DELTA)]
    return prose_deltas(count, seed)


def tool_deltas(count: int, seed: int, content: str) -> tuple[dict[str, Any], list[str]]:
    if content == "ascii":
        from streamkit.testing import lorem

        data = {"path": "notes/draft.md", "content": lorem(ASCII_CHARS_PER_DELTA * count, seed=seed)}
        return data, slices(json.dumps(data), count, 0)
    data = tool_input(REALISTIC_CHARS_PER_DELTA * count, seed)
    return data, slices(json.dumps(data, ensure_ascii=False), count, 5)


def _event(data: dict[str, Any]) -> str:
    return f"event: {data['type']}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def transcript(kind: str, size: int, content: str) -> tuple[bytes, dict[str, Any]]:
    """The SSE body of a text, tool or mixed (thinking + text + tool, a third each) stream, and what it holds."""
    if content not in CONTENTS:
        raise ValueError(f"content {content!r}: choose from {', '.join(CONTENTS)}")
    n = max(1, size // 3) if kind == "mixed" else size
    names = ("thinking", "text", "tool") if kind == "mixed" else (kind,)
    start: dict[str, Any] = {"id": MESSAGE_ID, "type": "message", "role": "assistant", "model": MODEL, "content": []}
    start |= {"stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1}}
    events = [_event({"type": "message_start", "message": start})]
    outcome: dict[str, Any] = {"deltas": 0, "stop_reason": "tool_use" if "tool" in names else "end_turn"}
    for index, name in enumerate(names):
        if name == "tool":
            data, pieces = tool_deltas(n, 1, content)
            block: dict[str, Any] = {"type": "tool_use", "id": TOOL_ID, "name": TOOL_NAME, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
            outcome["tool_input"] = data
        else:
            field, seed = ("thinking", 2) if name == "thinking" else ("text", 3 if kind == "mixed" else 0)
            pieces = text_deltas(n, seed, content)
            block = {"type": name, name: ""} | ({"signature": ""} if name == "thinking" else {})
            deltas = [{"type": f"{field}_delta", field: piece} for piece in pieces]
            deltas += [{"type": "signature_delta", "signature": SIGNATURE}] if name == "thinking" else []
            outcome[field] = "".join(pieces)
        events.append(_event({"type": "content_block_start", "index": index, "content_block": block}))
        events += (_event({"type": "content_block_delta", "index": index, "delta": delta}) for delta in deltas)
        events.append(_event({"type": "content_block_stop", "index": index}))
        outcome["deltas"] += len(deltas)
    final = {"stop_reason": outcome["stop_reason"], "stop_sequence": None}
    events.append(_event({"type": "message_delta", "delta": final, "usage": {"output_tokens": outcome["deltas"]}}))
    events.append(_event({"type": "message_stop"}))
    return "".join(events).encode(), outcome
