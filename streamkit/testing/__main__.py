"""``python -m streamkit.testing``: the mock server in its own process, e.g. for benchmarks.

Each request can still choose its reply with the ``x-streamkit-mock-reply`` header; a
fixture is named, and looked up in the ``--fixtures`` directories, then in the ones
streamkit ships.  Only requests addressed to a loopback name (or an ``--allow-host``)
are answered.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

import anyio

from ._lorem import lorem
from ._replies import Reply
from ._server import MockServer


async def _serve(server: MockServer) -> None:
    # Signals are received as values rather than raised, so SIGINT and SIGTERM
    # both leave through the server's normal exit path and close every socket.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with server:
            server._record = False  # serving forever: keep no history
            print(f"streamkit mock server listening on {server.base_url}", flush=True)
            async for _ in signals:
                return


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve until interrupted, return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m streamkit.testing", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (printed)")
    parser.add_argument(
        "--text-length",
        type=int,
        default=100_000,
        help="characters in the default reply",
    )
    parser.add_argument("--chunk-size", type=int, default=8, help="characters per text delta")
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
        help="virtual seconds each batch retrieve moves the batches' clock (a request takes 1), so polls see progress",
    )
    args = parser.parse_args(argv)
    default = Reply.text(lorem(args.text_length), chunk_size=args.chunk_size)
    try:
        server = MockServer(
            default=default,
            host=args.host,
            port=args.port,
            fixture_dirs=args.fixtures,
            allowed_hosts=args.allow_host,
        )
    except ValueError as exc:
        parser.error(str(exc))
    server.batches.advance_per_poll = args.batch_poll_seconds
    # A Ctrl-C before the signal receiver is installed still exits quietly.
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(_serve, server, backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
