"""``python -m streamkit demo``: stream a long reply live, and watch it survive faults.

Without ``ANTHROPIC_API_KEY`` the reply comes from the built-in mock server, which is
told to fail twice mid-generation (an ``overloaded_error`` event, then a cut
connection); streamkit resumes each time and the text reads as one reply.  With the
key set, the same code streams from the real API.
"""

from __future__ import annotations

import argparse
import os
import sys

import anyio

from . import DEFAULT_MODEL, AsyncClient, ResumeInfo, RetryInfo, StreamkitError
from .testing import Fault, MockServer, Reply, lorem

PROMPT = "Write a long, calm essay about how rivers shape the land."


def _say(line: str) -> None:
    dim, reset = ("\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "")
    sys.stdout.write(f"\n{dim}[streamkit] {line}{reset}\n")
    sys.stdout.flush()


def _on_text(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _on_resume(info: ResumeInfo) -> None:
    dropped = f", dropped an unfinished {info.dropped_block} block" if info.dropped_block else ""
    _say(
        f"resume {info.attempt}: {type(info.cause).__name__}: {info.cause.message} -> "
        f"{info.strategy}, kept {info.kept_chars} characters{dropped} ({info.request_id})"
    )


def _on_retry(info: RetryInfo) -> None:
    _say(f"retry {info.attempt} in {info.delay:.2f} s after {type(info.error).__name__}: {info.error.message}")


async def _stream(client: AsyncClient, model: str, max_tokens: int) -> None:
    async with client.messages.stream(
        model=model,
        max_tokens=max_tokens,
        messages=[{"role": "user", "content": PROMPT}],
        on_text=_on_text,
        on_resume=_on_resume,
        on_retry=_on_retry,
    ) as stream:
        message = await stream.get_final_message()
    _say(
        f"done: stop_reason={message.stop_reason}, {len(message.text)} characters, "
        f"{message.usage.output_tokens} output tokens over {len(stream.resumes) + 1} request(s)"
    )


async def demo(args: argparse.Namespace) -> int:
    if os.environ.get("ANTHROPIC_API_KEY") and not args.mock:
        _say(f"streaming from the API ({args.model})")
        async with AsyncClient() as client:
            await _stream(client, args.model, args.max_tokens)
        return 0
    text = lorem(args.length, seed=7)
    replies = [
        Reply.text(text, fault=Fault(kind="error", after=args.length // 24), delay=args.delay),
        Reply.text(text, fault=Fault(kind="cut", after=args.length // 16), delay=args.delay),
        Reply.text(text, delay=args.delay),
    ]
    async with MockServer(*replies) as server:
        _say(f"mock server at {server.base_url}: it will send overloaded_error, then cut the connection")
        async with AsyncClient(api_key="demo", base_url=server.base_url) as client:
            await _stream(client, "claude-mock-1", args.max_tokens)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamkit", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="stream a long reply with live output")
    run.add_argument("--mock", action="store_true", help="use the mock server even if ANTHROPIC_API_KEY is set")
    run.add_argument(
        "--model",
        default=os.environ.get("STREAMKIT_MODEL", DEFAULT_MODEL),
        help=f"model for the real API (default: $STREAMKIT_MODEL, else {DEFAULT_MODEL})",
    )
    run.add_argument("--max-tokens", type=int, default=4096)
    run.add_argument("--length", type=int, default=6000, help="mock reply length in characters")
    run.add_argument("--delay", type=float, default=0.002, help="mock delay between events, seconds")
    run.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    try:
        return anyio.run(demo, args, backend=args.backend)
    except StreamkitError as exc:
        _say(f"failed: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
