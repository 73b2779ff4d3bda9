"""The contenders, the check of their output, and the time function pyperf calls in a worker process.

``TimeFunc``'s first call sets up the client and consumes a warm-up stream (at most 10k deltas) off the clock;
each call then consumes ``loops`` streams and returns the client's CPU seconds (``time.process_time()``), or the
seconds to the first text.  Every stream's final output is checked off the clock against the expected reply,
and the verdict appended to the ledger (``checks.jsonl`` in the work directory) that the manager reads.  The
worker's event loop is asyncio's own or uvloop's (``--loop``); either way the contenders run on asyncio.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._content import MODEL
from ._scenarios import BODY, HEADER, MAX_TOKENS, MESSAGES, Job, Outcome, load_reply, warmup_reply

API_KEY = "sk-benchmark"
REQUEST: dict[str, Any] = {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": MESSAGES}
FIELDS = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}


def check(got: Outcome, want: Outcome) -> str | None:
    """None when the outcome is the whole reply, else what differs."""
    names = [field.name for field in fields(want) if getattr(got, field.name) != getattr(want, field.name)]
    return "differs: " + "; ".join(f"{name} {getattr(got, name)!r:.40}" for name in names) if names else None


class Floor:
    """Decoded events gathered the least an accumulator can: a list of strings per block, joined at the end."""

    def __init__(self) -> None:
        self.parts: list[list[str]] = []
        self.kinds: list[str] = []
        self.outcome = Outcome()

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "content_block_delta":
            self.outcome.deltas += 1
            delta = event["delta"]
            if (field := FIELDS.get(delta["type"])) is not None:
                self.parts[event["index"]].append(delta[field])
        elif kind == "content_block_start":
            self.parts.append([])
            self.kinds.append(event["content_block"]["type"])
        elif kind == "message_delta":
            self.outcome.stop_reason = event["delta"]["stop_reason"]

    def finish(self) -> Outcome:
        for kind, pieces in zip(self.kinds, self.parts, strict=True):
            joined = "".join(pieces)
            if kind == "tool_use":
                self.outcome.tool_input = json.loads(joined) if joined else {}
            else:
                setattr(self.outcome, kind, joined)
        return self.outcome


def from_message(message: Any, deltas: int | None = None) -> Outcome:
    """The outcome of a final Message (streamkit's or the SDK's: the same attribute names)."""
    outcome = Outcome(stop_reason=message.stop_reason, deltas=message.usage.output_tokens if deltas is None else deltas)
    for block in message.content:
        if block.type in ("thinking", "text"):
            setattr(outcome, block.type, getattr(block, block.type))
        elif block.type == "tool_use":
            outcome.tool_input = block.input
    return outcome


def parse_body(body: bytes) -> Outcome:
    """The outcome of a whole event-stream body (the transport floors' reference)."""
    floor = Floor()
    for line in body.decode().split("\n"):
        if line.startswith("data: "):
            floor.apply(json.loads(line[6:]))
    return floor.finish()


# The contenders: setup(base_url, concurrent) -> client; consume(client, header, first) -> Outcome of the
# whole stream; ``first`` (time to first text only) gets time.perf_counter() at the first text delta;
# close(client) at the end of the worker.


class Tally:
    """A body's bytes counted as they come, and nothing more: ``first`` (time to first text only) gets
    time.perf_counter() when ``"text_delta"`` first shows; ``keep`` holds them for the one body parsed whole."""

    def __init__(self, first: list[float] | None, keep: bool) -> None:
        self.nbytes, self.first, self.tail = 0, first, b""
        self.body: list[bytes] | None = [] if keep else None

    def feed(self, chunk: bytes) -> None:
        if self.first is not None and not self.first:
            if b'"text_delta"' in self.tail + chunk:
                self.first.append(time.perf_counter())
            self.tail = chunk[-16:]
        self.nbytes += len(chunk)
        if self.body is not None:
            self.body.append(chunk)


class Transport:
    """httpx ``aiter_bytes``, on streamkit's pools so that concurrency compares the work per stream: the transport
    floor.  The body is byte-identical every time (fixed ids), so its length proves it whole once the first body
    has been parsed (in the warm-up, on the measured reply: ``WARM_ON_MEASURED``) into the reference outcome."""

    reference: tuple[int, Outcome] = (-1, Outcome())

    async def setup(self, base_url: str, concurrent: bool) -> Any:
        import httpx

        from streamkit._transport import ShardedTransport  # the benchmarks' one private import

        self.url = f"{base_url}/v1/messages"
        return httpx.AsyncClient(timeout=600, transport=ShardedTransport())

    async def close(self, client: Any) -> None:
        await client.aclose()

    async def consume(self, client: Any, header: str, first: list[float] | None = None) -> Outcome:
        async with client.stream("POST", self.url, json=BODY, headers={HEADER: header}) as response:
            return await self.tally(response.aiter_bytes(), first)

    def counter(self, first: list[float] | None) -> Tally:
        """A stream's tally: it keeps the body only until the reference has been parsed."""
        return Tally(first, self.reference[0] < 0)

    def verdict(self, tally: Tally, parse: Callable[[bytes], Outcome] = parse_body) -> Outcome:
        """The reference outcome if the body is as long as the reference's, else an empty one (a mismatch)."""
        if tally.body is not None:
            self.reference = (tally.nbytes, parse(b"".join(tally.body)))
        return self.reference[1] if tally.nbytes == self.reference[0] else Outcome()

    async def tally(self, chunks: AsyncIterator[bytes], first: list[float] | None) -> Outcome:
        """Read the body's bytes and nothing more; the first body read is parsed once, as the reference."""
        tally = self.counter(first)
        async for chunk in chunks:
            tally.feed(chunk)
        return self.verdict(tally)


class TransportAiohttp(Transport):
    """aiohttp's ``iter_any()`` on a plain session: the transport floor on asyncio, the one streamkit picks there."""

    async def setup(self, base_url: str, concurrent: bool) -> Any:
        import aiohttp

        self.url = f"{base_url}/v1/messages"
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))

    async def close(self, client: Any) -> None:
        await client.close()

    async def consume(self, client: Any, header: str, first: list[float] | None = None) -> Outcome:
        async with client.post(self.url, json=BODY, headers={HEADER: header}) as response:
            return await self.tally(response.content.iter_any(), first)


END = b"\r\n0\r\n\r\n"  # a chunked body's last chunk's CRLF, then the terminating chunk (the mock sends no trailers)


def dechunk(raw: bytes) -> bytes:
    """A chunked body's data (off the clock: the loop floor's reference body only)."""
    out, at = [], 0
    while size := int(raw[at : (eol := raw.index(b"\r\n", at))].split(b";")[0], 16):
        out.append(raw[eol + 2 : eol + 2 + size])
        at = eol + 4 + size
    return b"".join(out)


class Exchange(asyncio.Protocol):
    """One keep-alive connection of the loop floor: a response's head found and checked, its chunked body handed
    to a ``Tally`` as it comes, undecoded, until the terminating chunk ends it."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[bool] | None = None
        self.head: bytes | None = None  # the head so far; None in the body
        self.last, self.reuse = b"", False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("the server closed the connection before the end of the response"))
        self.closed.set_result(None)

    def exchange(self, request: bytes, tally: Tally) -> asyncio.Future[bool]:
        """Send the request; the future is True when the response ended whole and the connection may serve again."""
        self.tally, self.head, self.last = tally, b"", b""
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.done

    def data_received(self, data: bytes) -> None:
        if self.head is not None:
            head, blank, data = (self.head + data).partition(b"\r\n\r\n")
            if not blank:
                self.head = head
                return
            fields = head.lower() + b"\r\n"
            if not head.startswith(b"HTTP/1.1 200 ") or b"\r\ntransfer-encoding: chunked\r\n" not in fields:
                assert self.done is not None
                self.done.set_exception(ConnectionError(f"answered {head.splitlines()[0]!r}, or not chunked"))
                self.transport.close()
                return
            self.head, self.reuse = None, b"\r\nconnection: close\r\n" not in fields
            self.last = b"\r\n"  # the head's last CRLF: an empty body is the terminating chunk alone
        self.tally.feed(data)
        self.last = data if len(data) >= len(END) else self.last[-len(END) :] + data
        if self.last.endswith(END):
            assert self.done is not None
            self.done.set_result(self.reuse)


class TransportLoop(Transport):
    """The event loop's floor: a bare ``asyncio.Protocol`` that writes the request and counts the response's bytes,
    no HTTP parser but for finding the end of the head and of the chunked body; what any client on this loop pays
    to be handed each chunk.  Keep-alive connections, one per stream at a time, reused like the pools of the others.
    """

    async def setup(self, base_url: str, concurrent: bool) -> Any:
        url = urlsplit(base_url)
        self.address, body = (url.hostname or "", url.port or 80), json.dumps(BODY).encode()
        start = f"POST /v1/messages HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: keep-alive\r\n"
        start += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.request = (start.encode(), body)
        return []  # the idle connections

    async def close(self, client: Any) -> None:
        for exchange in client:
            exchange.transport.close()
        await asyncio.gather(*(exchange.closed for exchange in client))

    async def consume(self, client: Any, header: str, first: list[float] | None = None) -> Outcome:
        idle: list[Exchange] = client
        while idle and idle[-1].closed.done():
            idle.pop()
        if idle:
            exchange = idle.pop()
        else:
            _, exchange = await asyncio.get_running_loop().create_connection(Exchange, *self.address)
        start, body = self.request
        tally = self.counter(first)
        try:
            reuse = await exchange.exchange(start + f"{HEADER}: {header}\r\n\r\n".encode() + body, tally)
        except BaseException:
            exchange.transport.close()
            raise
        if reuse:
            idle.append(exchange)
        else:
            exchange.transport.close()
        return self.verdict(tally, lambda raw: parse_body(dechunk(raw)))


class Parser(Transport):
    """httpx-sse ``aiter_sse`` + ``json.loads`` per event: the parser floor (the denominator of the ratios)."""

    async def consume(self, client: Any, header: str, first: list[float] | None = None) -> Outcome:
        from httpx_sse import aconnect_sse

        loads, floor = json.loads, Floor()
        async with aconnect_sse(client, "POST", self.url, json=BODY, headers={HEADER: header}) as source:
            async for sse in source.aiter_sse():
                event = loads(sse.data)
                if first is not None and not first and event["type"] == "content_block_delta":
                    first.extend([time.perf_counter()] if event["delta"]["type"] == "text_delta" else [])
                floor.apply(event)
        return floor.finish()


def shown(message: Any) -> Any:
    """What a UI redraws after an event: the last block's text, thinking or tool input so far."""
    if not message.content:
        return None
    block = message.content[-1]
    return getattr(block, {"text": "text", "thinking": "thinking"}.get(block.type, "input"), None)


class Anthropic:
    """The official SDK: ``messages.stream(...)`` + ``get_final_message()``, on its own default client; or as a UI
    redraws (``ui``): reading ``stream.current_message_snapshot`` after every event, and its last block."""

    def __init__(self, ui: bool = False) -> None:
        self.ui = ui

    async def setup(self, base_url: str, concurrent: bool) -> Any:
        import anthropic

        return anthropic.AsyncAnthropic(api_key=API_KEY, base_url=base_url, max_retries=0, timeout=600)

    async def close(self, client: Any) -> None:
        await client.close()

    async def consume(self, client: Any, header: str, first: list[float] | None = None) -> Outcome:
        async with client.messages.stream(**REQUEST, extra_headers={HEADER: header}) as stream:
            while first is not None and not first:
                event = await stream.__anext__()
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    first.append(time.perf_counter())
            if self.ui:
                async for _ in stream:
                    self.shown = shown(stream.current_message_snapshot)
            return from_message(await stream.get_final_message())


class Streamkit:
    """streamkit, consumed as ``way`` says: get_final_message() ("final"), every text_stream piece first
    ("text", a chat printing tokens), ``async for event`` (typed events), or as a UI redraws ("ui": reading
    ``stream.current_message`` after every event, and its last block's text or tool input so far).
    ``transport="httpx"``: the default client's httpx transport even where it would pick aiohttp's."""

    def __init__(self, way: str = "final", resume: Any = "auto", transport: str = "") -> None:
        self.way, self.resume, self.transport = way, resume, transport

    async def setup(self, base_url: str, concurrent: bool) -> Any:
        import httpx

        import streamkit

        if self.transport:
            os.environ["STREAMKIT_TRANSPORT"] = self.transport  # read at the client's first request

        if not concurrent:
            return streamkit.AsyncClient(api_key=API_KEY, base_url=base_url)
        # 1,000 connects at once queue behind the server's listen backlog; no retries, so a failed stream counts.
        timeout = httpx.Timeout(600, connect=120)
        return streamkit.AsyncClient(api_key=API_KEY, base_url=base_url, timeout=timeout, max_retries=0)

    async def close(self, client: Any) -> None:
        await client.aclose()

    async def consume(self, client: Any, header: str, first: list[float] | None = None) -> Outcome:
        deltas = None
        async with client.messages.stream(**REQUEST, extra_headers={HEADER: header}, resume=self.resume) as stream:
            if first is not None or self.way == "text":
                async for _ in stream.text_stream:
                    if first is not None:
                        first.append(time.perf_counter())
                        break
            elif self.way == "events":
                deltas = 0
                async for event in stream:
                    deltas += event.type == "content_block_delta"
            elif self.way == "ui":
                deltas = 0
                async for event in stream:
                    deltas += event.type == "content_block_delta"
                    self.shown = shown(stream.current_message)
            return from_message(await stream.get_final_message(), deltas)


class StreamkitSync:
    """``streamkit.Client``, the sync client: get_final_message(), called from the worker's event loop (it blocks)."""

    async def setup(self, base_url: str, concurrent: bool) -> Any:
        import streamkit

        return streamkit.Client(api_key=API_KEY, base_url=base_url)

    async def close(self, client: Any) -> None:
        client.close()

    async def consume(self, client: Any, header: str, first: list[float] | None = None) -> Outcome:
        with client.messages.stream(**REQUEST, extra_headers={HEADER: header}) as stream:
            return from_message(stream.get_final_message())


CONTENDERS: dict[str, Any] = {"transport": Transport, "parser": Parser, "anthropic": Anthropic, "streamkit": Streamkit}
CONTENDERS["anthropic-ui"] = partial(Anthropic, ui=True)
CONTENDERS |= {"transport-aiohttp": TransportAiohttp, "transport-loop": TransportLoop}
CONTENDERS |= {"streamkit-httpx": partial(Streamkit, transport="httpx")}
CONTENDERS |= {f"streamkit-{way}": partial(Streamkit, way) for way in ("text", "events", "ui")}
CONTENDERS["streamkit-resume-off"] = partial(Streamkit, resume=False)
CONTENDERS["streamkit-sync"] = StreamkitSync


def peak_rss_mb() -> float:
    """This process's own peak RSS (Linux VmHWM: ru_maxrss would carry the manager's peak over at exec)."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in lines if line.startswith("VmHWM:")).split()[1]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): was the server the bottleneck?"""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def uvloop_new() -> asyncio.AbstractEventLoop:
    import uvloop  # a bench extra; --loop uvloop checks that it is installed

    return uvloop.new_event_loop()


class TimeFunc:
    """``runner.bench_time_func(name, TimeFunc(job, ...))``: set up on the first call, then ``loops`` timed runs."""

    def __init__(self, job: Job, base_url: str, workdir: str, server_pid: int) -> None:
        self.job, self.base_url, self.workdir, self.server_pid = job, base_url, workdir, server_pid
        self.loop: asyncio.AbstractEventLoop | None = None

    def note(self, phase: str, problem: str | None, **extra: Any) -> None:
        row = {"bench": self.job.name, "phase": phase, "problem": problem, "deltas": self.expected.deltas, **extra}
        row["rss"] = peak_rss_mb()
        with open(Path(self.workdir) / "checks.jsonl", "a") as ledger:
            ledger.write(json.dumps(row) + "\n")

    async def setup(self) -> None:
        self.impl = CONTENDERS[self.job.contender]()
        self.client = await self.impl.setup(self.base_url, self.job.kind == "concurrent")
        self.header, self.expected = load_reply(self.workdir, self.job.reply)
        header, expected = load_reply(self.workdir, warmup_reply(self.job))
        self.note("setup", check(await self.impl.consume(self.client, header), expected))

    async def consume(self, first: list[float] | None = None) -> Outcome | Exception:
        try:
            return await self.impl.consume(self.client, self.header, first)  # type: ignore[no-any-return]
        except Exception as exc:  # noted, and the row reports it; pyperf still gets a value
            return exc

    async def one(self) -> float:
        """One stream (``job.streams`` at once on the client for concurrency) on the clock, then each checked."""
        gc.collect()
        first: list[float] | None = [] if self.job.kind == "ttft" else None
        server, cpu, start = cpu_seconds(self.server_pid), time.process_time(), time.perf_counter()
        if self.job.kind == "concurrent":
            outcomes = await asyncio.gather(*(self.consume() for _ in range(self.job.streams)))
        else:
            outcomes = [await self.consume(first)]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - start
        server = cpu_seconds(self.server_pid) - server
        found = [repr(got) if isinstance(got, Exception) else check(got, self.expected) for got in outcomes]
        problems = [problem for problem in [*found, "no text delta" if first == [] else None] if problem]
        ttft, completed = first[0] - start if first else None, len(outcomes) - len(problems)
        problem = "; ".join(sorted(set(problems))[:3]) or None
        self.note("run", problem, wall=wall, ttft=ttft, server_cpu=server, completed=completed)
        return ttft or max(cpu, 1e-9)

    def __call__(self, loops: int) -> float:
        if self.loop is None:  # (the manager raised the open-file limit for one socket per concurrent stream)
            self.loop = uvloop_new() if self.job.loop == "uvloop" else asyncio.new_event_loop()
            self.loop.run_until_complete(self.setup())
        return sum(self.loop.run_until_complete(self.one()) for _ in range(loops))

    def close(self) -> None:
        """The worker is done: close the contender's client and the loop (nothing if it never ran here)."""
        if self.loop is None:
            return
        self.loop.run_until_complete(self.impl.close(self.client))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()
        self.loop = None
