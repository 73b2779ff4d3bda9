"""The mock server's Message Batches endpoints, over real sockets with plain httpx."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import httpx
import pytest

from streamkit.testing import RESULTS_CONTENT_TYPE, MockServer, Outcome, Reply

pytestmark = pytest.mark.anyio

BATCH_ID = re.compile(r"^msgbatch_[0-9A-Za-z]{24}$")
MESSAGE_ID = re.compile(r"^msg_[0-9A-Za-z]{24}$")
PATH = "/v1/messages/batches"


def params(text: str = "hi") -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": text}]}


def batch_body(*custom_ids: str) -> dict[str, Any]:
    return {"requests": [{"custom_id": custom_id, "params": params()} for custom_id in custom_ids]}


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def counts(
    processing: int = 0, succeeded: int = 0, errored: int = 0, canceled: int = 0, expired: int = 0
) -> dict[str, int]:
    return {
        "processing": processing,
        "succeeded": succeeded,
        "errored": errored,
        "canceled": canceled,
        "expired": expired,
    }


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.content.splitlines()]


async def create(client: httpx.AsyncClient, *custom_ids: str) -> dict[str, Any]:
    response = await client.post(PATH, json=batch_body(*custom_ids))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def error_of(response: httpx.Response, status: int) -> tuple[str, str]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    return error["type"], error["message"]


async def test_a_batch_is_created_in_progress_and_ends_on_the_test_clock() -> None:
    async with MockServer(Reply.text("unused")) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        created = await create(client, "a", "b", "c")
        assert BATCH_ID.match(created["id"])
        assert seconds(created["expires_at"]) - seconds(created["created_at"]) == 24 * 3600
        assert created == {
            "id": created["id"],
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": counts(processing=3),
            "ended_at": None,
            "created_at": created["created_at"],
            "expires_at": created["expires_at"],
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
        }
        url = f"{PATH}/{created['id']}"
        server.batches.advance(2.5)  # a request takes seconds_per_request (1 s): 2 of 3 done, counted only at the end
        assert (await client.get(url)).json() == created
        server.batches.advance(0.5)
        ended = (await client.get(url)).json()
        base_url = server.base_url
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"] == counts(succeeded=3)
    assert seconds(ended["ended_at"]) - seconds(created["created_at"]) == pytest.approx(3.0)
    assert ended["results_url"] == f"{base_url}{url}/results"


async def test_results_are_json_lines_in_reverse_request_order_with_stable_bytes() -> None:
    async with MockServer(default=Reply.text("Hello there")) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            batch_id = (await create(client, "first", "second"))["id"]
            server.batches.finish(batch_id)
            results_url = (await client.get(f"{PATH}/{batch_id}")).json()["results_url"]
            assert results_url == f"{server.base_url}{PATH}/{batch_id}/results"
            response = await client.get(results_url)
            again = await client.get(results_url)
    assert response.status_code == 200
    assert response.headers["content-type"] == RESULTS_CONTENT_TYPE == "application/x-jsonl"
    assert response.headers["content-disposition"] == f"attachment; filename*=utf-8''{batch_id}_results.jsonl"
    assert response.headers["content-length"] == str(len(response.content))
    assert again.content == response.content  # message ids too: a resumed download must see the same bytes
    parsed = lines(response)
    assert [line["custom_id"] for line in parsed] == ["second", "first"]
    message = parsed[0]["result"]["message"]
    assert MESSAGE_ID.match(message["id"])
    assert parsed[0]["result"] == {
        "type": "succeeded",
        "message": {
            "id": message["id"],
            "type": "message",
            "role": "assistant",
            "model": "claude-mock-1",
            "content": [{"type": "text", "text": "Hello there"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 2},
        },
    }
    assert parsed[1]["result"]["message"]["id"] != message["id"]


async def test_outcomes_are_scripted_by_custom_id_pattern() -> None:
    script: dict[str, Outcome] = {
        "ok-*": Reply.text("fine"),
        "bad-*": Reply.error(400, message="nope"),
        "slow-*": Reply.error(529),
        "gone-*": "expired",
        "stop-*": "canceled",
    }
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        server.batches.script(script)
        batch_id = (await create(client, "ok-1", "bad-1", "slow-1", "gone-1", "stop-1"))["id"]
        server.batches.finish()
        batch = (await client.get(f"{PATH}/{batch_id}")).json()
        results = {line["custom_id"]: line["result"] for line in lines(await client.get(batch["results_url"]))}
    assert batch["request_counts"] == counts(succeeded=1, errored=2, canceled=1, expired=1)
    assert results["ok-1"]["message"]["content"] == [{"type": "text", "text": "fine"}]
    assert results["bad-1"] == {
        "type": "errored",
        "error": {"type": "error", "error": {"type": "invalid_request_error", "message": "nope"}},
    }
    assert results["slow-1"] == {
        "type": "errored",
        "error": {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    }
    assert results["gone-1"] == {"type": "expired"}
    assert results["stop-1"] == {"type": "canceled"}


async def test_a_callable_script_sees_each_request_once_and_a_bad_prefill_errs() -> None:
    seen: list[tuple[str, str]] = []

    def outcome(custom_id: str, request_params: dict[str, Any]) -> Outcome:
        seen.append((custom_id, request_params["messages"][-1]["content"]))
        return Reply.text("The answer")

    prefill = {**params(), "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Nope"}]}
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        server.batches.script(outcome)
        body = {"requests": [{"custom_id": "plain", "params": params("x")}, {"custom_id": "pre", "params": prefill}]}
        batch_id = (await client.post(PATH, json=body)).json()["id"]
        server.batches.finish(batch_id)
        results_url = (await client.get(f"{PATH}/{batch_id}")).json()["results_url"]
        first = await client.get(results_url)
        await client.get(results_url)
    assert seen == [("plain", "x"), ("pre", "Nope")]
    results = {line["custom_id"]: line["result"] for line in lines(first)}
    assert results["pre"] == {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "mock server: the assistant prefill does not match the queued reply's text",
            },
        },
    }


async def test_cancel_goes_through_canceling_and_cancels_what_was_not_processed() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        batch_id = (await create(client, "a", "b", "c", "d"))["id"]
        server.batches.advance(1.5)
        canceling = (await client.post(f"{PATH}/{batch_id}/cancel")).json()
        server.batches.advance(0.5)
        still = (await client.get(f"{PATH}/{batch_id}")).json()
        server.batches.advance(0.5)  # cancel_seconds (1 s) after the cancel
        ended = (await client.get(f"{PATH}/{batch_id}")).json()
        results = lines(await client.get(ended["results_url"]))
    assert canceling["processing_status"] == still["processing_status"] == "canceling"
    assert canceling["request_counts"] == counts(processing=4)
    assert seconds(canceling["cancel_initiated_at"]) - seconds(canceling["created_at"]) == pytest.approx(1.5)
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"] == counts(succeeded=1, canceled=3)
    assert seconds(ended["ended_at"]) - seconds(canceling["cancel_initiated_at"]) == pytest.approx(1.0)
    assert [(line["custom_id"], line["result"]["type"]) for line in results] == [
        ("d", "canceled"),
        ("c", "canceled"),
        ("b", "canceled"),
        ("a", "succeeded"),
    ]


async def test_a_batch_not_done_in_24_hours_expires() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        server.batches.seconds_per_request = 3600.0
        created = await create(client, *(f"r{i}" for i in range(30)))
        server.batches.advance(48 * 3600)
        ended = (await client.get(f"{PATH}/{created['id']}")).json()
    assert ended["request_counts"] == counts(succeeded=24, expired=6)
    assert ended["ended_at"] == created["expires_at"]


async def test_advance_per_poll_lets_a_poll_loop_see_the_batch_end() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        server.batches.advance_per_poll = 1.0
        batch_id = (await create(client, "a", "b"))["id"]
        statuses = [(await client.get(f"{PATH}/{batch_id}")).json()["processing_status"] for _ in range(3)]
    assert statuses == ["in_progress", "ended", "ended"]


async def test_delete_only_an_ended_batch_and_unknown_ids_are_404() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        batch_id = (await create(client, "a"))["id"]
        refused = await client.delete(f"{PATH}/{batch_id}")
        not_ready = await client.get(f"{PATH}/{batch_id}/results")
        server.batches.finish(batch_id)
        deleted = await client.delete(f"{PATH}/{batch_id}")
        gone = await client.get(f"{PATH}/{batch_id}")
        gone_results = await client.get(f"{PATH}/{batch_id}/results")
    assert await error_of(refused, 400) == (
        "invalid_request_error",
        f"Batch {batch_id} cannot be deleted while it is processing; cancel it first",
    )
    assert await error_of(not_ready, 400) == (
        "invalid_request_error",
        f"Batch {batch_id} has not ended; its results are not ready",
    )
    assert deleted.json() == {"id": batch_id, "type": "message_batch_deleted"}
    assert await error_of(gone, 404) == ("not_found_error", f"No message batch with id {batch_id!r}")
    assert await error_of(gone_results, 404) == ("not_found_error", f"No message batch with id {batch_id!r}")


async def test_list_pages_newest_first_with_after_and_before_ids() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        ids = [(await create(client, "a"))["id"] for _ in range(5)]
        newest = ids[::-1]
        first = (await client.get(PATH, params={"limit": 2})).json()
        second = (await client.get(PATH, params={"limit": 2, "after_id": first["last_id"]})).json()
        last = (await client.get(PATH, params={"limit": 2, "after_id": second["last_id"]})).json()
        back = (await client.get(PATH, params={"limit": 2, "before_id": last["first_id"]})).json()
        everything = (await client.get(PATH)).json()
        bad_limit = await client.get(PATH, params={"limit": 1001})
        bad_cursor = await client.get(PATH, params={"after_id": "msgbatch_nope"})
    assert [b["id"] for b in first["data"]] == newest[:2]
    assert (first["has_more"], first["first_id"], first["last_id"]) == (True, newest[0], newest[1])
    assert [b["id"] for b in second["data"]] == newest[2:4]
    assert [b["id"] for b in last["data"]] == newest[4:]
    assert last["has_more"] is False
    assert [b["id"] for b in back["data"]] == newest[2:4]
    assert back["has_more"] is True
    assert [b["id"] for b in everything["data"]] == newest
    assert await error_of(bad_limit, 400) == ("invalid_request_error", "limit: Input should be between 1 and 1000")
    assert await error_of(bad_cursor, 400) == (
        "invalid_request_error",
        "no object with id 'msgbatch_nope' to page from",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"requests": []}, "requests: a non-empty list of requests is required"),
        (
            {"requests": [{"custom_id": "a", "params": {}}] * 2},
            "requests.1.custom_id: 'a' is used twice; custom_ids must be unique",
        ),
        (
            {"requests": [{"custom_id": "a b", "params": {}}]},
            "requests.0.custom_id: 1 to 64 letters, digits, '_' or '-' are required",
        ),
        ({"requests": [{"custom_id": "a", "params": []}]}, "requests.0.params: an object is required"),
        (
            {"requests": [{"custom_id": f"r{i}", "params": {}} for i in range(4)]},
            "requests: a batch holds at most 3 requests, not 4",
        ),
        ([], "mock server: the request body must be a JSON object"),
    ],
    ids=["empty", "duplicate", "custom-id", "params", "too-many", "not-an-object"],
)
async def test_a_malformed_batch_is_a_400(body: Any, message: str) -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        server.batches.max_requests = 3
        response = await client.post(PATH, json=body)
        listed = (await client.get(PATH)).json()
    assert await error_of(response, 400) == ("invalid_request_error", message)
    assert listed["data"] == []


async def test_a_range_request_gets_206_and_the_exact_tail() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        batch_id = (await create(client, "a", "b", "c"))["id"]
        server.batches.finish(batch_id)
        url = f"{PATH}/{batch_id}/results"
        whole = (await client.get(url)).content
        size = server.batches.results_size(batch_id)
        tail = await client.get(url, headers={"range": "bytes=100-"})
        middle = await client.get(url, headers={"range": "bytes=10-19"})
        suffix = await client.get(url, headers={"range": "bytes=-5"})
        past = await client.get(url, headers={"range": f"bytes={size}-"})
        ignored = await client.get(url, headers={"range": "lines=1-"})
        recorded = [request.headers.get("range") for request in server.requests]
    assert size == len(whole)
    assert tail.status_code == 206
    assert tail.content == whole[100:]
    assert tail.headers["content-range"] == f"bytes 100-{size - 1}/{size}"
    assert tail.headers["content-length"] == str(size - 100)
    assert (middle.status_code, middle.content, middle.headers["content-range"]) == (
        206,
        whole[10:20],
        f"bytes 10-19/{size}",
    )
    assert suffix.content == whole[-5:]
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{size}"
    assert (ignored.status_code, ignored.content) == (200, whole)
    assert recorded == [None, None, "bytes=100-", "bytes=10-19", "bytes=-5", f"bytes={size}-", "lines=1-"]


async def read_until_cut(client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> bytes:
    """The body bytes that arrived before the server cut the connection."""
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("GET", url, headers=headers) as response:
            assert response.headers["connection"] == "close"
            async for piece in response.aiter_raw():
                received += piece
    return received


async def test_a_cut_results_body_resumes_with_range_and_the_counters_add_up() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        batch_id = (await create(client, *(f"r{i}" for i in range(20))))["id"]
        server.batches.finish(batch_id)
        url = f"{PATH}/{batch_id}/results"
        whole = (await client.get(url)).content
        server.batches.cut_results(1000)
        head = await read_until_cut(client, url)
        rest = await client.get(url, headers={"range": f"bytes={len(head)}-"})
        await client.aclose()
        await server.wait_connections(0)  # the server counts a body once it is sent: after the client has it
        stats = (server.batches.results_requests, server.batches.results_bytes_sent)
    assert len(head) == 1000
    assert head + rest.content == whole
    assert stats == (3, 2 * len(whole))


async def test_every_other_results_response_is_cut() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        batch_id = (await create(client, "a", "b"))["id"]
        server.batches.finish(batch_id)
        url = f"{PATH}/{batch_id}/results"
        server.batches.cut_results(7, every=2, times=None)
        first = await client.get(url)
        second = await read_until_cut(client, url, {"range": "bytes=3-"})
        third = await client.get(url)
        fourth = await read_until_cut(client, url)
    assert second == first.content[3:10]
    assert third.content == first.content
    assert fourth == first.content[:7]


async def test_a_synthetic_batch_serves_fixed_width_lines_with_any_range() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        batch_id = server.batches.synthetic(count=1000, message_size=500)
        batch = (await client.get(f"{PATH}/{batch_id}")).json()
        whole = (await client.get(batch["results_url"])).content
        size = server.batches.results_size(batch_id)
        middle = await client.get(batch["results_url"], headers={"range": "bytes=123457-234567"})
    parsed = [json.loads(line) for line in whole.splitlines()]
    assert batch["request_counts"] == counts(succeeded=1000)
    assert len(whole) == size == 1000 * len(whole.splitlines(keepends=True)[0])
    assert [line["custom_id"] for line in parsed[:2]] == ["synthetic-0000000999", "synthetic-0000000998"]
    assert parsed[-1]["custom_id"] == "synthetic-0000000000"
    text = parsed[-1]["result"]["message"]["content"][0]["text"]
    assert len(text) == 500
    assert text.startswith("0000000000 ")
    assert middle.content == whole[123457:234568]


async def test_a_batch_body_over_its_limit_gets_the_cdn_413_and_is_not_kept() -> None:
    async with MockServer(size_limits={"batches": 1000}) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            too_big = await client.post(PATH, json=batch_body(*(f"r{i}" for i in range(50))))
            fits = await client.post(PATH, json=batch_body("a"))
    assert too_big.status_code == 413
    assert too_big.headers["content-type"] == "text/html"
    assert "request-id" not in too_big.headers
    assert "<title>413 Request Entity Too Large</title>" in too_big.text
    assert fits.status_code == 200
    assert [(r.status, r.path) for r in server.refused] == [(413, PATH)]
    assert [r.path for r in server.requests] == [PATH]


async def test_the_oldest_batches_go_past_the_stores_bounds() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        server.batches.max_batches = 2
        ids = [(await create(client, "a"))["id"] for _ in range(3)]
        listed = [b["id"] for b in (await client.get(PATH)).json()["data"]]
        server.batches.max_bytes = 1
        newest = (await create(client, "a"))["id"]
        after = [b["id"] for b in (await client.get(PATH)).json()["data"]]
    assert listed == [ids[2], ids[1]]
    assert after == [newest]
