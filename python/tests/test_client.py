"""The Python client against a real gateway and agent (see conftest.py)."""

import asyncio
import threading

import pytest

import switchyard_fleet as sf


def test_a_call_returns_the_payload_the_node_and_timings(client):
    result = client.call("echo", b"hello")
    assert result.data == b"hello"
    assert result.text == "hello"
    assert len(result) == 5
    assert result.node_id == "node-a"
    assert result.policy
    assert result.total_ms >= result.node_ms >= 0
    assert result.attempts == 1
    assert not result.cached
    assert result.request_id
    assert "node-a" in repr(result)


def test_payloads_are_bytes_bytearray_memoryview_or_text(client):
    assert client.call("echo", "héllo").data == "héllo".encode()
    assert client.call("echo", bytearray(b"ab")).data == b"ab"
    assert client.call("echo", memoryview(b"cd")).data == b"cd"
    assert client.call("echo").data == b""
    with pytest.raises(TypeError):
        client.call("echo", 42)


def test_explain_and_hints_reach_the_policy(client):
    result = client.call("echo", b"x", explain=True, hints={"tier": "a"}, priority=3)
    assert result.explain and "node-a" in result.explain


def test_an_unknown_service_is_its_own_exception(client):
    with pytest.raises(sf.UnknownService) as raised:
        client.call("no-such-service", b"x")
    err = raised.value
    assert isinstance(err, sf.SwitchyardError)
    assert err.kind == "unknown service"
    assert err.retry_safe is False
    assert "no-such-service" in str(err)


def test_a_deadline_is_a_timeout(client):
    with pytest.raises(sf.Timeout) as raised:
        client.call("sleep", b"3000", timeout=0.3)
    assert raised.value.kind == "timeout"
    with pytest.raises(ValueError):
        client.call("sleep", b"1", timeout=-1)


def test_a_failing_service_is_service_failed_and_names_its_node(client):
    with pytest.raises(sf.ServiceFailed) as raised:
        client.call("fail", b"x")
    err = raised.value
    assert err.kind == "service failed"
    assert err.node_id == "node-a"
    assert err.retry_safe is False


def test_nodes_and_policies_are_plain_python_values(client):
    nodes = client.nodes()
    assert [n["spec"]["id"] for n in nodes] == ["node-a"]
    services = {s["name"] for s in nodes[0]["spec"]["services"]}
    assert {"echo", "sleep", "fail", "lines", "forever"} <= services
    policies = client.policies()
    assert isinstance(policies, dict)
    assert "round-robin" in str(policies)


def test_set_policy_needs_the_admin_token(client, gateway, ca):
    assert client.set_policy("echo", "round-robin")
    assert client.call("echo", b"x").policy == "round-robin"
    with sf.Client(gateway, ca) as anonymous:
        with pytest.raises(ValueError):
            anonymous.set_policy("echo", "round-robin")


def test_one_client_serves_many_threads_at_once(client):
    errors = []

    def work(i):
        try:
            for j in range(20):
                payload = f"{i}-{j}".encode()
                assert client.call("echo", payload).data == payload
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_the_async_client_runs_calls_concurrently(gateway, ca):
    async def main():
        client = await sf.AsyncClient.connect(gateway, ca)
        try:
            # 8 sleeps of 200 ms at once take far less than 8 × 200 ms.
            loop = asyncio.get_running_loop()
            start = loop.time()
            results = await asyncio.gather(*(client.call("sleep", b"200") for _ in range(8)))
            took = loop.time() - start
            assert all(r.text == "slept 200 ms" for r in results)
            assert took < 1.2, took
            with pytest.raises(sf.UnknownService):
                await client.call("no-such-service")
            nodes = await client.nodes()
            assert nodes[0]["spec"]["id"] == "node-a"
        finally:
            await client.close()

    asyncio.run(main())


def test_no_gateway_is_a_connect_error_safe_to_retry(ca):
    with pytest.raises(sf.ConnectError) as raised:
        sf.Client("127.0.0.1:1", ca)
    assert raised.value.retry_safe is True
    assert raised.value.kind is None
    with pytest.raises(ValueError):
        sf.Client([], ca)
