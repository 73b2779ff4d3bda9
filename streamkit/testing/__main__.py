"""``python -m streamkit.testing``: the mock server in its own process, e.g. for benchmarks.

Each request can still choose its reply with the ``x-streamkit-mock-reply`` header; a
fixture is named, and looked up in the ``--fixtures`` directories, then in the ones
streamkit ships.  Only requests addressed to a loopback name (or an ``--allow-host``)
are answered.

Rate limits are off unless one of their options is given; the options map one to one
onto ``RateLimiter`` and the objects it takes, whose own checks judge the values.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import anyio

from ._lorem import lorem
from ._ratelimit import Acceleration, Generation, Limits, Overload, RateLimiter
from ._replies import Reply
from ._server import MockServer

_TEXT_LENGTH = 100_000
_CHUNK_SIZE = 8


async def _serve(server: MockServer) -> None:
    # Signals are received as values rather than raised, so SIGINT and SIGTERM
    # both leave through the server's normal exit path and close every socket.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with server:
            server._record = False  # serving forever: keep no history
            print(f"streamkit mock server listening on {server.base_url}", flush=True)
            async for _ in signals:
                return


class _SetField(argparse.Action):
    """Sets one field (or none, with ``field=None``) of the dataclass held at ``dest``, made
    with its defaults first, so that the dataclass judges the value and a bad one is reported
    as this option's error."""

    def __init__(
        self, option_strings: Sequence[str], dest: str, *, kind: type[Any], field: str | None, **kw: Any
    ) -> None:
        super().__init__(option_strings, dest, **kw)
        self.kind = kind
        self.field = field

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        current = self._current(namespace) or self.kind()
        try:
            updated = replace(current, **({} if self.field is None else {self.field: values}))
        except ValueError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None
        self._store(namespace, updated)

    def _current(self, namespace: argparse.Namespace) -> Any:
        return getattr(namespace, self.dest)

    def _store(self, namespace: argparse.Namespace, value: Any) -> None:
        setattr(namespace, self.dest, value)


class _SetLimit(_SetField):
    """A field of the ``Limits`` being parsed: every model's before any ``--model``, else the last named one's."""

    def _current(self, namespace: argparse.Namespace) -> Any:
        return (namespace.limits or {}).get(namespace.model)

    def _store(self, namespace: argparse.Namespace, value: Any) -> None:
        namespace.limits = {**(namespace.limits or {}), namespace.model: value}


class _StartModel(_SetLimit):
    """``--model NAME``: the limits that follow are NAME's (a model named with none after it is unlimited)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        namespace.model = values
        super().__call__(parser, namespace, values, option_string)


def _overload(spec: str) -> Overload:
    """``START:DURATION[:PHASE[:FRACTION]]`` as an ``Overload``; PHASE is before, after or after=EVENTS."""
    parts = spec.split(":")
    try:
        if not 2 <= len(parts) <= 4:
            raise ValueError("expected START:DURATION[:PHASE[:FRACTION]]")
        start, duration = float(parts[0]), float(parts[1])
        if not math.isfinite(start):  # an episode that would never begin
            raise ValueError(f"START must be a finite number of seconds, not {parts[0]}")
        options: dict[str, Any] = {}
        phase, _, events = (parts[2] if len(parts) > 2 else "before").partition("=")
        if phase not in ("before", "after") or (events and phase == "before"):
            raise ValueError(f"the phase is before, after or after=EVENTS, not {parts[2]!r}")
        if phase == "after":
            options["in_stream"] = True
        if events:
            options["after"] = int(events)
        if len(parts) == 4:
            options["fraction"] = float(parts[3])
        return Overload(start=start, end=start + duration, **options)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{spec!r}: {exc}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streamkit.testing", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (printed)")
    parser.add_argument(
        "--text-length",
        type=int,
        metavar="CHARACTERS",
        help=f"characters in the default reply (default {_TEXT_LENGTH:,})",
    )
    parser.add_argument(
        "--chunk-size", type=int, metavar="CHARACTERS", help=f"characters per text delta (default {_CHUNK_SIZE})"
    )
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--fixtures",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory of .sse transcripts that replies may name (repeatable)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="a Host header to answer besides loopback names (repeatable)",
    )
    parser.add_argument(
        "--batch-poll-seconds",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="virtual seconds each batch retrieve moves the batches' clock (a request takes 1), so polls see progress",
    )
    _add_limits(parser)
    return parser


def _add_limits(parser: argparse.ArgumentParser) -> None:
    limits = parser.add_argument_group(
        "rate limits (RateLimiter, Limits)",
        "Token buckets refilled continuously, with the anthropic-ratelimit-* headers and 429s. The limits "
        "before any --model apply to every model not named; those after --model NAME to NAME alone, "
        "instead (a dimension it does not limit is unlimited). The counts are printed when the server stops.",
    )
    for dimension, unit in (("requests", "REQUESTS"), ("input_tokens", "TOKENS"), ("output_tokens", "TOKENS")):
        field = f"{dimension}_per_minute"
        limits.add_argument(
            f"--{field.replace('_', '-')}",
            dest="limits",
            metavar=unit,
            type=int,
            action=_SetLimit,
            kind=Limits,
            field=field,
            help=f"{dimension.replace('_', ' ')} per minute, per model",
        )
    limits.add_argument(
        "--model", metavar="NAME", action=_StartModel, kind=Limits, field=None, help="the limits after it are NAME's"
    )

    rule = parser.add_argument_group(
        "acceleration limit (Acceleration)",
        "429s for a sharp rise in a model's request rate: a window may admit FACTOR times the requests "
        "the trailing rate gives in a window, plus FLOOR. Any of these options turns it on.",
    )
    rule.add_argument(
        "--acceleration", nargs=0, action=_SetField, kind=Acceleration, field=None, help="on, with the defaults below"
    )
    for field, unit, kind, what in (
        ("window", "SECONDS", float, "the window counted"),
        ("trailing", "SECONDS", float, "the period before the window giving the trailing rate"),
        ("factor", "FACTOR", float, "how much a window may exceed the trailing rate"),
        ("floor", "REQUESTS", int, "requests a window may admit from a standstill"),
    ):
        default = getattr(Acceleration, field)
        rule.add_argument(
            f"--acceleration-{field}",
            dest="acceleration",
            metavar=unit,
            type=kind,
            action=_SetField,
            kind=Acceleration,
            field=field,
            help=f"{what} (default {default:g})",
        )

    episodes = parser.add_argument_group("overload episodes (Overload)")
    episodes.add_argument(
        "--overload",
        dest="overloads",
        action="append",
        type=_overload,
        metavar="START:DURATION[:PHASE[:FRACTION]]",
        help="from START to START+DURATION seconds after the server starts (DURATION may be inf), a FRACTION "
        "of the requests (default 1; 0.5: every second one) are overloaded: PHASE before (default) "
        "answers 529 overloaded_error; after sends a 200 whose stream ends in an error event after "
        "message_start, or after EVENTS events with after=EVENTS (repeatable)",
    )

    generation = parser.add_argument_group(
        "generated replies (Generation)",
        "Replies of max_tokens tokens (4 characters each), paced like the real service's, in place of the "
        "default reply (so not with --text-length or --chunk-size). Any of these options turns them on.",
    )
    generation.add_argument(
        "--generate",
        dest="generation",
        nargs=0,
        action=_SetField,
        kind=Generation,
        field=None,
        help="on, with the defaults below",
    )
    for field, unit, kind, what in (
        ("output_tokens", "TOKENS", int, "tokens in every reply instead of max_tokens"),
        (
            "tokens_per_second",
            "TOKENS",
            float,
            f"tokens generated per second (default {Generation.tokens_per_second:g})",
        ),
        ("tokens_per_event", "TOKENS", int, f"tokens per text delta (default {Generation.tokens_per_event})"),
    ):
        generation.add_argument(
            f"--{field.replace('_', '-')}",
            dest="generation",
            metavar=unit,
            type=kind,
            action=_SetField,
            kind=Generation,
            field=field,
            help=what,
        )
    parser.set_defaults(model=None)


def _limiter(args: argparse.Namespace) -> RateLimiter | None:
    """The limiter the options describe, or None when none was given."""
    sections: dict[str | None, Limits] = args.limits or {}
    if not sections and args.acceleration is None and not args.overloads and args.generation is None:
        return None
    return RateLimiter(
        sections.get(None, Limits()),
        models={name: limits for name, limits in sections.items() if name is not None},
        acceleration=args.acceleration,
        overloads=args.overloads or (),
        generation=args.generation,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve until interrupted, return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.generation is not None and (args.text_length is not None or args.chunk_size is not None):
        parser.error("generated replies take the place of the default reply that --text-length and --chunk-size shape")
    limiter = _limiter(args)
    length = _TEXT_LENGTH if args.text_length is None else args.text_length
    chunk_size = _CHUNK_SIZE if args.chunk_size is None else args.chunk_size
    try:
        default = None if args.generation is not None else Reply.text(lorem(length), chunk_size=chunk_size)
        server = MockServer(
            default=default,
            host=args.host,
            port=args.port,
            fixture_dirs=args.fixtures,
            allowed_hosts=args.allow_host,
            limits=limiter,
        )
    except ValueError as exc:
        parser.error(str(exc))
    server.batches.advance_per_poll = args.batch_poll_seconds
    # A Ctrl-C before the signal receiver is installed still exits quietly.
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(_serve, server, backend=args.backend)
    if limiter is not None:
        counts = {**limiter.counts, "output_tokens": limiter.output_tokens}
        print(f"streamkit mock server counts: {json.dumps(counts, sort_keys=True)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
