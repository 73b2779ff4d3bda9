"""The Message Batches endpoints of the mock server, on a clock the test moves.

A batch does nothing until the test says time has passed: ``advance(seconds)`` moves
the clock (each request takes ``seconds_per_request``, one after another; a batch not
done 24 hours after it was created expires), ``finish()`` ends batches now.  Which
outcome each request gets is scripted (``script``); results are produced line by line
while they are sent, so a synthetic batch can serve a gigabyte with flat memory.
"""

from __future__ import annotations

import fnmatch
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._answers import (
    Answer,
    ApiError,
    CutFault,
    LinesSource,
    byte_range,
    dumps,
    json_answer,
    page,
    parse_json_object,
    timestamp,
)
from ._lorem import lorem
from ._render import PrefillError, plan_for, random_id
from ._replies import Reply, default_error_message, default_error_type

__all__ = ["RESULTS_CONTENT_TYPE", "BatchStore", "Outcome", "OutcomeRule"]

Outcome = Reply | Literal["canceled", "expired"]
"""How one request of a batch ends: a Reply (200: succeeded with its Message; else errored), or not processed."""

OutcomeRule = Mapping[str, Outcome] | Callable[[str, dict[str, Any]], Outcome]
"""``custom_id`` glob patterns to outcomes (first match wins), or ``(custom_id, params) -> Outcome``."""

RESULTS_CONTENT_TYPE = "application/x-jsonl"
"""What the API sends results as (it once sent none; SDKs decode by this type)."""

_DAY = 24 * 60 * 60
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_PATH = re.compile(r"/v1/messages/batches(?:/(?P<id>[^/]+)(?:/(?P<action>cancel|results))?)?")
_MARK = "@@@@@@@@@@"  # where a synthetic line's index goes: ten digits, never in lorem text
_Result = (
    tuple[Literal["succeeded"], Reply] | tuple[Literal["errored"], str, str] | tuple[Literal["canceled", "expired"]]
)
MessageFor = Callable[[Reply, dict[str, Any], str], bytes]


@dataclass
class _Batch:
    id: str
    created_at: float
    seconds_per_request: float
    requests: list[tuple[str, dict[str, Any]]]
    results: list[_Result] = field(default_factory=list)  # one per processed request, in request order
    cancel_at: float | None = None
    ended_at: float | None = None
    source: LinesSource | None = None
    synthetic: int = 0  # requests of a synthetic batch, which keeps none
    size: int = 0  # bytes of the body that created it

    @property
    def expires_at(self) -> float:
        return self.created_at + _DAY


class BatchStore:
    """The batches a MockServer holds (``server.batches``), their clock, outcomes and result faults.

    ``seconds_per_request``: virtual time each request takes (0: a batch is done at once,
    on the next look).  ``cancel_seconds``: how long a batch stays ``canceling``.
    ``advance_per_poll``: seconds the clock moves on each retrieve, so a client's poll
    loop sees progress without the test stepping in.  ``results_bytes_sent`` and
    ``results_requests`` count what the results endpoint served.  The oldest batches are
    dropped past ``max_batches``, or ``max_bytes`` of creating bodies, so a long-running
    server does not grow without end.
    """

    def __init__(self, message_for: MessageFor, default_reply: Callable[[], Reply]) -> None:
        self.now = time.time()
        self.seconds_per_request = 1.0
        self.cancel_seconds = 1.0
        self.advance_per_poll = 0.0
        self.max_requests = 100_000
        self.max_batches = 1000
        self.max_bytes = 1024 * 1024 * 1024
        self.results_bytes_sent = 0
        self.results_requests = 0
        self._message_for = message_for
        self._default_reply = default_reply
        self._rule: OutcomeRule | None = None
        self._cut: CutFault | None = None
        self._batches: dict[str, _Batch] = {}
        self._rng = random.Random()

    # --- what tests call --------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the clock on; batches progress, end, or expire accordingly."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.now += seconds

    def finish(self, batch_id: str | None = None) -> None:
        """End one batch (all, if None) now: remaining requests are processed, or canceled if canceling."""
        for batch in [self._get(batch_id)] if batch_id is not None else list(self._batches.values()):
            self._settle(batch)
            if batch.ended_at is None:
                if batch.cancel_at is None:
                    self._process(batch, len(batch.requests))
                self._end(batch, self.now)

    def script(self, rule: OutcomeRule | None) -> None:
        """Choose each request's outcome from now on; None: succeeded with the server's default reply."""
        self._rule = rule

    def cut_results(self, after: int, *, every: int = 1, times: int | None = 1) -> None:
        """Close the connection after ``after`` body bytes of every ``every``-th results response, ``times`` times."""
        self._cut = CutFault(after, every, times)

    def synthetic(self, count: int, message_size: int) -> str:
        """An ended batch of ``count`` succeeded requests whose results lines all have the same length.

        Line ``i`` answers custom_id ``synthetic-{count - 1 - i:010d}`` with a text of
        ``message_size`` characters; nothing is stored, so ``count`` may be in the millions.
        """
        template = _synthetic_template(message_size)
        batch = _Batch(random_id("msgbatch_", self._rng), self.now, 0.0, [])
        batch.ended_at = self.now
        batch.source = LinesSource(count, lambda i: template(count - 1 - i), len(template(0)))
        batch.synthetic = count
        self._batches[batch.id] = batch
        return batch.id

    def results_size(self, batch_id: str) -> int:
        """The size in bytes of an ended batch's results file."""
        return self._source(self._get(batch_id)).size

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The batch as the API would show it now."""
        batch = self._get(batch_id)
        self._settle(batch)
        return self._json(batch, "")

    # --- the endpoints ----------------------------------------------------------

    def answer(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes, base_url: str
    ) -> Answer:
        match = _PATH.fullmatch(path)
        if match is None:
            raise ApiError(404, "not_found_error", "Not Found")
        batch_id, action = match.group("id"), match.group("action")
        if batch_id is None:
            if method == "POST":
                return json_answer(self._json(self._create(body), base_url))
            if method == "GET":
                for batch in self._batches.values():
                    self._settle(batch)
                listed = [(b.id, self._json(b, base_url)) for b in reversed(self._batches.values())]
                return json_answer(page(listed, query))
            raise ApiError(405, "invalid_request_error", f"method {method} is not allowed here")
        batch = self._get(batch_id)
        if method == "GET" and action is None:
            self.now += self.advance_per_poll
        self._settle(batch)
        if method == "GET" and action is None:
            return json_answer(self._json(batch, base_url))
        if method == "POST" and action == "cancel":
            if batch.ended_at is None and batch.cancel_at is None:
                batch.cancel_at = self.now
            return json_answer(self._json(batch, base_url))
        if method == "DELETE" and action is None:
            if batch.ended_at is None:
                message = f"Batch {batch.id} cannot be deleted while it is processing; cancel it first"
                raise ApiError(400, "invalid_request_error", message)
            del self._batches[batch.id]
            return json_answer({"id": batch.id, "type": "message_batch_deleted"})
        if method == "GET" and action == "results":
            return self._results(batch, headers.get("range"))
        raise ApiError(405, "invalid_request_error", f"method {method} is not allowed here")

    # --- inside -----------------------------------------------------------------

    def _get(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, "not_found_error", f"No message batch with id {batch_id!r}")
        return batch

    def _create(self, body: bytes) -> _Batch:
        payload = parse_json_object(body)
        requests = payload.get("requests")
        if not isinstance(requests, list) or not requests:
            raise ApiError(400, "invalid_request_error", "requests: a non-empty list of requests is required")
        if len(requests) > self.max_requests:
            message = f"requests: a batch holds at most {self.max_requests:,} requests, not {len(requests):,}"
            raise ApiError(400, "invalid_request_error", message)
        seen: set[str] = set()
        parsed: list[tuple[str, dict[str, Any]]] = []
        for index, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            params = item.get("params") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
                message = f"requests.{index}.custom_id: 1 to 64 letters, digits, '_' or '-' are required"
                raise ApiError(400, "invalid_request_error", message)
            if not isinstance(params, dict):
                raise ApiError(400, "invalid_request_error", f"requests.{index}.params: an object is required")
            if custom_id in seen:
                message = f"requests.{index}.custom_id: {custom_id!r} is used twice; custom_ids must be unique"
                raise ApiError(400, "invalid_request_error", message)
            seen.add(custom_id)
            parsed.append((custom_id, params))
        batch = _Batch(random_id("msgbatch_", self._rng), self.now, self.seconds_per_request, parsed, size=len(body))
        self._batches[batch.id] = batch
        while len(self._batches) > 1 and (
            len(self._batches) > self.max_batches or sum(b.size for b in self._batches.values()) > self.max_bytes
        ):
            del self._batches[next(iter(self._batches))]
        return batch

    def _outcome(self, custom_id: str, params: dict[str, Any]) -> Outcome:
        rule = self._rule
        if rule is None:
            return self._default_reply()
        if callable(rule):
            return rule(custom_id, params)
        for pattern, outcome in rule.items():
            if fnmatch.fnmatchcase(custom_id, pattern):
                return outcome
        return self._default_reply()

    def _process(self, batch: _Batch, count: int) -> None:
        """Decide the outcomes of the requests up to ``count`` not yet processed."""
        for custom_id, params in batch.requests[len(batch.results) : count]:
            outcome = self._outcome(custom_id, params)
            result: _Result
            if isinstance(outcome, str):
                result = (outcome,)
            elif outcome.status != 200:
                error_type = outcome.error_type or default_error_type(outcome.status)
                result = ("errored", error_type, outcome.error_message or default_error_message(error_type))
            else:
                try:
                    plan_for(outcome, params)
                except PrefillError as exc:
                    result = ("errored", "invalid_request_error", str(exc))
                else:
                    result = ("succeeded", outcome)
            batch.results.append(result)

    def _end(self, batch: _Batch, when: float) -> None:
        """End ``batch`` at ``when``: requests never processed were canceled, or expired."""
        unprocessed: _Result = ("canceled",) if batch.cancel_at is not None else ("expired",)
        batch.results += [unprocessed] * (len(batch.requests) - len(batch.results))
        batch.ended_at = when

    def _settle(self, batch: _Batch) -> None:
        """Bring a batch up to the clock."""
        if batch.ended_at is not None:
            return
        if batch.cancel_at is not None:
            if self.now >= batch.cancel_at + self.cancel_seconds:
                self._end(batch, batch.cancel_at + self.cancel_seconds)
            return
        total = len(batch.requests)
        per = batch.seconds_per_request
        cutoff = min(self.now, batch.expires_at)
        done = total if per <= 0 else min(total, int((cutoff - batch.created_at) / per))
        self._process(batch, done)
        if done == total:
            self._end(batch, batch.created_at + total * per)
        elif self.now >= batch.expires_at:
            self._end(batch, batch.expires_at)

    def _counts(self, batch: _Batch) -> dict[str, int]:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if batch.synthetic:
            counts["succeeded"] = batch.synthetic
        elif batch.ended_at is None:  # as in the API: requests move out of processing only when the batch ends
            counts["processing"] = len(batch.requests)
        else:
            for result in batch.results:
                counts[result[0]] += 1
        return counts

    def _json(self, batch: _Batch, base_url: str) -> dict[str, Any]:
        if batch.ended_at is not None:
            status = "ended"
        elif batch.cancel_at is not None:
            status = "canceling"
        else:
            status = "in_progress"
        ended = batch.ended_at is not None
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": self._counts(batch),
            "ended_at": timestamp(batch.ended_at) if batch.ended_at is not None else None,
            "created_at": timestamp(batch.created_at),
            "expires_at": timestamp(batch.expires_at),
            "archived_at": None,
            "cancel_initiated_at": timestamp(batch.cancel_at) if batch.cancel_at is not None else None,
            "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def _source(self, batch: _Batch) -> LinesSource:
        if batch.ended_at is None:
            raise ApiError(400, "invalid_request_error", f"Batch {batch.id} has not ended; its results are not ready")
        if batch.source is None:
            count = len(batch.results)
            batch.source = LinesSource(count, lambda i: self._line(batch, count - 1 - i))
        return batch.source

    def _line(self, batch: _Batch, index: int) -> bytes:
        """The results line of request ``index``: the same bytes every time, for resumed downloads."""
        custom_id, params = batch.requests[index]
        result = batch.results[index]
        head = b'{"custom_id":"' + custom_id.encode() + b'","result":'
        if result[0] == "succeeded":
            message_id = random_id("msg_", random.Random(f"{batch.id}/{custom_id}"))
            message = self._message_for(result[1], params, message_id)
            return head + b'{"type":"succeeded","message":' + message + b"}}\n"
        if result[0] == "errored":
            error = dumps({"type": "error", "error": {"type": result[1], "message": result[2]}})
            return head + b'{"type":"errored","error":' + error + b"}}\n"
        return head + b'{"type":"' + result[0].encode() + b'"}}\n'

    def _results(self, batch: _Batch, range_header: str | None) -> Answer:
        source = self._source(batch)
        headers = [("content-disposition", f"attachment; filename*=utf-8''{batch.id}_results.jsonl")]
        self.results_requests += 1
        span = byte_range(range_header, source.size)
        cut = self._cut.next_cut() if self._cut is not None else None
        return Answer(200, source, RESULTS_CONTENT_TYPE, headers, span, cut, self._count_sent)

    def _count_sent(self, size: int) -> None:
        self.results_bytes_sent += size


def _synthetic_template(message_size: int) -> Callable[[int], bytes]:
    """Line maker for a synthetic batch: JSON encoded once, the index spliced in three places."""
    text = _MARK + " " + lorem(max(0, message_size - len(_MARK) - 1))
    line = {
        "custom_id": f"synthetic-{_MARK}",
        "result": {
            "type": "succeeded",
            "message": {
                "id": f"msg_synthetic{_MARK}",
                "type": "message",
                "role": "assistant",
                "model": "claude-mock-1",
                "content": [{"type": "text", "text": text[:message_size]}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": max(1, message_size // 4)},
            },
        },
    }
    parts = (dumps(line) + b"\n").split(_MARK.encode())

    def template(index: int) -> bytes:
        return (b"%010d" % index).join(parts)

    return template
