"""Streamed results from Python: chunks as the service writes them, and
cancelling by closing the stream (see conftest.py for the services)."""

import asyncio
import time

import pytest

import switchyard_fleet as sf


def in_flight(client, service):
    node = client.nodes()[0]
    return next(s["in_flight"] for s in node["services"] if s["name"] == service)


def test_a_stream_yields_the_chunks_as_the_command_writes_them(client):
    stream = client.stream("lines")
    assert stream.node_id == "node-a"
    assert stream.policy
    start = time.monotonic()
    first = next(stream)
    first_at = time.monotonic() - start
    rest = b"".join(stream)
    assert first == b"one\n"
    assert rest == b"two\n"
    # The first chunk came before the command slept.
    assert first_at < 0.3, first_at
    with pytest.raises(StopIteration):
        next(stream)


def test_a_service_failing_midway_raises_after_its_chunks(client):
    chunks = []
    with pytest.raises(sf.ServiceFailed):
        for chunk in client.stream("partial"):
            chunks.append(chunk)
    assert chunks == [b"partial\n"]


def test_closing_a_stream_cancels_the_call_and_frees_its_slot(client):
    with client.stream("forever") as stream:
        assert next(stream) == b"started\n"
        assert in_flight(client, "forever") == 1
    deadline = time.monotonic() + 2
    while in_flight(client, "forever") != 0:
        assert time.monotonic() < deadline, "the cancelled call still holds its slot"
        time.sleep(0.02)
    # Its one slot is free: a new call starts at once.
    again = client.stream("forever", timeout=2)
    assert next(again) == b"started\n"
    again.close()
    with pytest.raises(StopIteration):
        next(again)


def test_the_async_stream_iterates_and_closes(gateway, ca):
    async def main():
        client = await sf.AsyncClient.connect(gateway, ca)
        try:
            stream = await client.stream("lines")
            chunks = [chunk async for chunk in stream]
            assert chunks == [b"one\n", b"two\n"]
            stream = await client.stream("forever")
            assert await stream.__anext__() == b"started\n"
            await stream.aclose()
            with pytest.raises(StopAsyncIteration):
                await stream.__anext__()
        finally:
            await client.close()

    asyncio.run(main())
