"""Python functions served as nodes (``switchyard_fleet.Node``) against a
real gateway: sync, async and generator functions, exceptions, deadlines,
two nodes sharing one function under round-robin and latency, and a node
process drained by SIGTERM."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import pytest

import switchyard_fleet as sf


def _ids(client):
    return {n["spec"]["id"] for n in client.nodes()}


def _wait(check, what, limit=15.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@contextlib.contextmanager
def serving(client, *nodes):
    """Serves each node on a thread of its own until the block ends, then
    drains them and waits until the gateway has let them go."""
    threads = []
    errors = []

    def run(node):
        try:
            node.serve()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    for node in nodes:
        thread = threading.Thread(target=run, args=(node,), daemon=True)
        thread.start()
        threads.append(thread)
    ids = {n.node_id for n in nodes}
    try:
        _wait(lambda: errors or ids <= _ids(client), f"nodes {ids} to register")
        assert not errors, errors
        yield
    finally:
        for node in nodes:
            node.stop()
        for thread in threads:
            thread.join(timeout=40)
        _wait(lambda: not ids & _ids(client), f"nodes {ids} to leave")
    assert not errors, errors


def make_node(gateway, ca, agent_token, node_id, **options):
    return sf.Node(
        gateway,
        ca=ca,
        token=agent_token,
        node_id=node_id,
        stats_interval_ms=200,
        shutdown_grace_s=10,
        **options,
    )


def test_sync_async_and_generator_functions_answer(client, gateway, ca, agent_token):
    node = make_node(gateway, ca, agent_token, "py-kinds")

    @node.register(codec="json", max_concurrent=4)
    def py_add(data):
        return {"sum": data["a"] + data["b"], "thread": threading.current_thread().name}

    @node.register
    async def py_upper(data):
        await asyncio.sleep(0.01)
        return data.upper()

    @node.register(stream=True)
    def py_count(data):
        for i in range(int(data)):
            yield f"{i};"

    @node.register(codec="msgpack")
    async def py_letters(data):
        for letter in data:
            await asyncio.sleep(0)
            yield letter

    assert node.functions == ["py_add", "py_upper", "py_count", "py_letters"]
    # Still callable locally.
    assert py_add({"a": 1, "b": 2})["sum"] == 3
    with serving(client, node):
        add = sf.remote(client, "py_add", codec="json")(lambda data: None)
        got = add({"a": 2, "b": 40})
        assert got["sum"] == 42
        assert got["thread"] != threading.current_thread().name
        result = client.call("py_upper", b"shout")
        assert result.data == b"SHOUT" and result.node_id == "py-kinds"
        with client.stream("py_count", b"5") as chunks:
            assert b"".join(chunks) == b"0;1;2;3;4;"
        import msgpack

        with client.stream("py_letters", msgpack.packb("abc")) as chunks:
            assert [msgpack.unpackb(c) for c in chunks] == ["a", "b", "c"]
        # The node registered as node-agent does: stats, its services' slots.
        view = next(n for n in client.nodes() if n["spec"]["id"] == "py-kinds")
        services = {s["name"]: s["max_concurrent"] for s in view["spec"]["services"]}
        assert services == {"py_add": 4, "py_upper": 1, "py_count": 1, "py_letters": 1}
        _wait(
            lambda: next(n for n in client.nodes() if n["spec"]["id"] == "py-kinds").get("stats"),
            "the node's stats",
        )


def test_a_function_that_raises_fails_the_call_with_its_traceback(client, gateway, ca, agent_token):
    node = make_node(gateway, ca, agent_token, "py-raise")

    @node.register
    def py_raise(data):
        raise ValueError(f"cannot train on {data.decode()}")

    @node.register
    def py_fine(data):
        return b"still here"

    with serving(client, node):
        for _ in range(3):
            with pytest.raises(sf.ServiceFailed) as raised:
                client.call("py_raise", b"nothing")
            message = str(raised.value)
            assert "ValueError: cannot train on nothing" in message
            assert "Traceback (most recent call last)" in message
            assert "in py_raise" in message
            assert raised.value.node_id == "py-raise"
        # The node lives on.
        assert client.call("py_fine").data == b"still here"
        # A job's call carries the traceback in its log too.
        job = client.submit_job("py_raise", b"a job")
        lines = [e["line"] for e in client.follow_log(job["id"])]
        assert client.job(job["id"])["state"] == "failed"
        assert any("ValueError: cannot train on a job" in line for line in lines), lines
        assert any("Traceback" in line for line in lines), lines


def test_a_function_past_its_deadline_is_abandoned_and_its_place_kept(
    client, gateway, ca, agent_token
):
    node = make_node(gateway, ca, agent_token, "py-hang")
    ran = threading.Event()
    stopped = threading.Event()

    @node.register
    def py_hang(data):
        ran.set()
        try:
            while True:  # pure Python: CallAbandoned reaches it
                time.sleep(0.01)
        finally:
            stopped.set()

    @node.register
    async def py_hang_async(data):
        await asyncio.sleep(60)

    @node.register
    def py_other(data):
        return b"other"

    with serving(client, node):
        started = time.monotonic()
        with pytest.raises(sf.Timeout):
            client.call("py_hang", b"", timeout=0.5)
        assert time.monotonic() - started < 5
        assert ran.is_set()
        # The thread was told to stop, and did.
        assert stopped.wait(5)
        with pytest.raises(sf.Timeout):
            client.call("py_hang_async", b"", timeout=0.3)
        assert client.call("py_other").data == b"other"


def _spread(client, service, calls, **options):
    return Counter(client.call(service, b"x", **options).node_id for _ in range(calls))


def test_two_nodes_share_a_function_by_round_robin_and_by_latency(
    client, gateway, ca, agent_token
):
    fast = make_node(gateway, ca, agent_token, "py-fast")
    slow = make_node(gateway, ca, agent_token, "py-slow")

    @fast.register("train_model", policy="round-robin")
    def train_fast(data):
        return b"fast"

    @slow.register("train_model", policy="round-robin")
    def train_slow(data):
        time.sleep(0.05)
        return b"slow"

    with serving(client, fast, slow):
        spread = _spread(client, "train_model", 20)
        assert spread == {"py-fast": 10, "py-slow": 10}, spread
        # The nodes asked for round-robin: the gateway lists it as active.
        table = client.policies()
        active = {s["service"]: s["active"] for s in table["services"]}
        assert active["train_model"] == "round-robin"
        # Latency (EWMA of each node's time): the slow node gets less.
        _spread(client, "train_model", 10, policy="latency")
        spread = _spread(client, "train_model", 40, policy="latency")
        assert spread["py-fast"] > 3 * spread["py-slow"], spread


SIGNALLED_NODE = textwrap.dedent(
    """
    import sys, time
    import switchyard_fleet as sf

    gateway, ca, token, node_id, service = sys.argv[1:6]
    node = sf.Node(gateway, ca=ca, token=token, node_id=node_id, shutdown_grace_s=20)

    @node.register(service)
    def slow(data):
        time.sleep(float(data))
        return b"finished " + data

    print("serving", flush=True)
    try:
        node.serve()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    print("drained", flush=True)
    """
)


def _signal_mid_call(client, gateway, ca, agent_token, sig, node_id, service, seconds):
    """Runs a node process serving ``service`` (sleeps ``seconds``), sends
    it ``sig`` while a call is in flight; returns the call's result and the
    process's output words once it exited 0."""
    process = subprocess.Popen(
        [sys.executable, "-c", SIGNALLED_NODE, gateway, ca, agent_token, node_id, service],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait(lambda: node_id in _ids(client), "the node process to register")
        results = []
        caller = threading.Thread(
            target=lambda: results.append(client.call(service, seconds.encode(), timeout=30)),
        )
        caller.start()
        time.sleep(0.5)
        process.send_signal(sig)
        caller.join(30)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        return results, out.decode().split()
    finally:
        if process.poll() is None:
            process.kill()


def test_sigterm_drains_a_python_node_without_losing_its_call(client, gateway, ca, agent_token):
    results, words = _signal_mid_call(
        client, gateway, ca, agent_token, signal.SIGTERM, "py-term", "py_slow", "1.5"
    )
    assert results and results[0].data == b"finished 1.5", results
    assert words == ["serving", "drained"]
    # Drained: no node serves it any more.
    with pytest.raises((sf.UnknownService, sf.NoNodeAvailable)):
        client.call("py_slow", b"0", timeout=2)


def test_ctrl_c_drains_a_python_node_then_raises_keyboard_interrupt(
    client, gateway, ca, agent_token
):
    results, words = _signal_mid_call(
        client, gateway, ca, agent_token, signal.SIGINT, "py-int", "py_slow_int", "1.0"
    )
    assert results and results[0].data == b"finished 1.0", results
    assert words == ["serving", "interrupted", "drained"]
    _wait(lambda: "py-int" not in _ids(client), "the node to leave")


def test_registration_errors_are_clear(gateway, ca, agent_token):
    node = make_node(gateway, ca, agent_token, "py-bad")
    with pytest.raises(ValueError):
        node.serve()  # nothing registered

    @node.register
    def py_once(data):
        return data

    with pytest.raises(ValueError):
        node.register("py_once")(lambda data: data)
    with pytest.raises(ValueError):
        node.register(stream=True)(lambda data: data)
    with pytest.raises(ValueError):
        node.register(codec="pickle")
    wrong = sf.Node(gateway, ca=ca, token="wrong-token", node_id="py-wrong")
    wrong.register(lambda data: data)
    with pytest.raises(sf.ConnectError) as raised:
        wrong.serve()
    assert "token" in str(raised.value)


def test_a_job_of_a_python_function_logs_its_progress(client, gateway, ca, agent_token):
    node = make_node(gateway, ca, agent_token, "py-jobs")

    @node.register(codec="json")
    def py_train(data):
        logged = [sf.log("epoch", epoch, "loss", 1.0 / (epoch + 1)) for epoch in range(data["epochs"])]
        return {"epochs": data["epochs"], "logged": all(logged)}

    with serving(client, node):
        job = client.submit_job("py_train", b'{"epochs": 3}')
        lines = [e["line"] for e in client.follow_log(job["id"])]
        assert client.job(job["id"])["state"] == "succeeded"
        assert [line for line in lines if line.startswith("epoch")] == [
            "epoch 0 loss 1.0",
            "epoch 1 loss 0.5",
            "epoch 2 loss 0.3333333333333333",
        ], lines
        assert json.loads(client.job_result(job["id"])) == {"epochs": 3, "logged": True}
        # A plain call asked for no log: nothing is written.
        assert json.loads(client.call("py_train", b'{"epochs": 1}').data)["logged"] is False


def test_an_idempotent_function_is_run_again_on_another_node(client, gateway, ca, agent_token):
    broken = make_node(gateway, ca, agent_token, "py-broken")
    healthy = make_node(gateway, ca, agent_token, "py-healthy")
    for node, works in [(broken, False), (healthy, True)]:

        def answer(data, works=works, node=node):
            if not works:
                raise RuntimeError("this GPU is broken")
            return node.node_id

        node.register("py_retried", idempotent=True, policy="round-robin")(answer)
        node.register("py_once", policy="round-robin")(answer)

    with serving(client, broken, healthy):
        view = next(n for n in client.nodes() if n["spec"]["id"] == "py-broken")
        asks = {s["name"]: (s.get("policy"), s.get("idempotent")) for s in view["spec"]["services"]}
        assert asks == {"py_retried": ("round-robin", True), "py_once": ("round-robin", False)}, asks
        # Idempotent: a call that failed on the broken node runs again on the
        # other (3 calls: the retry budget's tokens for one second).
        results = [client.call("py_retried", b"") for _ in range(3)]
        assert {r.data for r in results} == {b"py-healthy"}
        assert max(r.attempts for r in results) == 2, [r.attempts for r in results]
        # Not idempotent: the failure is the caller's.
        outcomes = []
        for _ in range(6):
            try:
                outcomes.append(client.call("py_once", b"").data)
            except sf.ServiceFailed as error:
                assert "this GPU is broken" in str(error)
                outcomes.append("failed")
        assert outcomes.count("failed") == 3, outcomes


def test_dropping_a_stream_stops_the_generator_on_the_node(client, gateway, ca, agent_token):
    node = make_node(gateway, ca, agent_token, "py-endless")
    closed = threading.Event()
    produced = []

    @node.register
    def py_endless(data):
        try:
            i = 0
            while True:
                produced.append(i)
                yield f"{i};"
                i += 1
        finally:
            closed.set()

    with serving(client, node):
        stream = client.stream("py_endless", b"")
        chunks = [next(stream) for _ in range(3)]
        assert chunks == [b"0;", b"1;", b"2;"]
        stream.close()
        assert closed.wait(10), "the generator was not closed"
        # It ran ahead of the reader only as far as the windows let it
        # (backpressure: bytes in flight, not chunks), and no further.
        count = len(produced)
        time.sleep(0.3)
        assert len(produced) == count


def test_serve_async_runs_on_the_callers_loop(client, gateway, ca, agent_token):
    node = make_node(gateway, ca, agent_token, "py-async-serve")
    loops = []

    @node.register
    async def py_where(data):
        loops.append(asyncio.get_running_loop())
        return b"here"

    async def main():
        task = asyncio.ensure_future(node.serve_async())
        aclient = await sf.AsyncClient.connect([gateway], ca)
        try:
            for _ in range(200):
                if "py-async-serve" in {n["spec"]["id"] for n in await aclient.nodes()}:
                    break
                await asyncio.sleep(0.05)
            assert (await aclient.call("py_where", b"")).data == b"here"
        finally:
            await aclient.close()
        node.stop()
        await asyncio.wait_for(task, 30)
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert loops == [loop]
    _wait(lambda: "py-async-serve" not in _ids(client), "the node to leave")


def test_a_generator_that_raises_midway_fails_the_stream_after_its_chunks(
    client, gateway, ca, agent_token
):
    node = make_node(gateway, ca, agent_token, "py-midway")

    @node.register
    def py_midway(data):
        yield b"one;"
        yield b"two;"
        raise KeyError("the third")

    with serving(client, node):
        got = []
        with pytest.raises(sf.ServiceFailed) as raised:
            with client.stream("py_midway", b"") as chunks:
                for chunk in chunks:
                    got.append(chunk)
        assert got == [b"one;", b"two;"]
        assert "KeyError: 'the third'" in str(raised.value)
        # A serving node's functions are fixed; it serves once.
        with pytest.raises(RuntimeError):
            node.register("py_late")(lambda data: data)
        with pytest.raises(RuntimeError):
            node.serve()


def test_load_balancing_options_reach_the_policies(client, gateway, ca, agent_token):
    cheap = make_node(gateway, ca, agent_token, "py-cheap", cost_per_hour=0.5)
    dear = make_node(gateway, ca, agent_token, "py-dear", cost_per_hour=4.0)
    for node in (cheap, dear):
        node.register("py_priced")(lambda data, node=node: node.node_id)

    with serving(client, cheap, dear):

        @client.remote(function_name="py_priced", load_balancing={"strategy": "cost_aware"})
        def priced(data): ...

        assert {priced(b"") for _ in range(4)} == {b"py-cheap"}

        @client.remote(
            function_name="py_priced",
            load_balancing={"strategy": "resource_aware", "requirements": {"mem_free_mib": ">=1"}},
        )
        def roomy(data): ...

        assert roomy(b"") in (b"py-cheap", b"py-dear")

        @client.remote(
            function_name="py_priced",
            load_balancing={"strategy": "resource_aware", "requirements": {"mem_free_mib": ">=999999999"}},
        )
        def impossible(data): ...

        with pytest.raises(sf.Rejected) as raised:
            impossible(b"")
        assert "mem_free_mib>=999999999" in str(raised.value)
