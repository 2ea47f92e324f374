"""Look-aside from Python: a lease from the gateway, then calls straight
to the node's direct port (node-a has one)."""

import asyncio
import time

import pytest

import switchyard_fleet as sf


def test_a_lease_serves_its_calls_directly_then_ends(client):
    lease = client.lease("echo", max_calls=2, ttl=30)
    assert lease.node_id == "node-a"
    assert lease.direct_address
    assert lease.max_calls == 2
    assert lease.expires_unix_ms > time.time() * 1000
    assert lease.policy
    first = lease.call(b"one")
    assert first.data == b"one" and first.node_id == "node-a"
    assert lease.call("two").data == b"two"
    # Used up: the node refuses a third call with its typed error.
    with pytest.raises(sf.LeaseEnded) as raised:
        lease.call(b"three")
    assert raised.value.retry_safe is True
    assert "node-a" in repr(lease)


def test_a_lease_streams_and_is_released_on_exit(client):
    with client.lease("lines", max_calls=5) as lease:
        chunks = list(lease.stream())
        assert chunks == [b"one\n", b"two\n"]
        lease_id = lease.lease_id
    # Released: the gateway lists it no more and the node refuses it.
    with pytest.raises(sf.LeaseEnded):
        lease.call()
    assert lease_id


def test_a_look_aside_call_leases_and_calls_the_node(client):
    result = client.call("echo", b"aside", look_aside=True)
    assert result.data == b"aside"
    assert result.node_id == "node-a"


def test_an_async_lease_calls_streams_and_is_released(gateway, ca):
    async def main():
        client = await sf.AsyncClient.connect([gateway], ca)
        try:
            lease = await client.lease("echo", max_calls=3)
            assert lease.node_id == "node-a"
            assert (await lease.acall(b"one")).data == b"one"
            async with await client.lease("lines", max_calls=5) as streamed:
                chunks = [c async for c in await streamed.astream()]
                assert chunks == [b"one\n", b"two\n"]
            with pytest.raises(sf.LeaseEnded):
                await streamed.acall()
            await lease.arelease()
            with pytest.raises(sf.LeaseEnded):
                await lease.acall(b"two")
        finally:
            await client.close()

    asyncio.run(main())
