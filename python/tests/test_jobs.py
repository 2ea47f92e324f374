"""Durable jobs from Python: submit, follow the log, read the result,
list, cancel, restart and delete (the ``sh`` service runs its payload)."""

import pytest

import switchyard_fleet as sf


def test_a_job_is_submitted_followed_and_read(client):
    job = client.submit_job(
        "sh", b"echo one; echo two >&2; sleep 0.2; echo three", idempotent=True, labels={"team": "a"}
    )
    assert job["id"] and job["state"] in ("waiting", "running")
    lines = [f'{e["stream"]}: {e["line"]}' for e in client.follow_log(job["id"])]
    for want in ["stdout: one", "stderr: two", "stdout: three"]:
        assert want in lines, lines
    done = client.job(job["id"])
    assert done["state"] == "succeeded", done
    assert client.job_result(job["id"]) == b"one\nthree\n"
    stored = [e["line"] for e in client.job_log(job["id"])]
    assert "one" in stored and "three" in stored
    page = client.jobs(service="sh")
    assert any(j["id"] == job["id"] for j in page["jobs"])
    assert client.jobs(state="succeeded", limit=500)["jobs"]
    with pytest.raises(ValueError):
        client.jobs(state="no-such-state")
    again = client.restart_job(job["id"])
    assert again["state"] in ("waiting", "running", "succeeded")


def test_a_job_is_cancelled_and_deleted(client):
    stuck = client.submit_job("sh", b"sleep 1000")
    cancelled = client.cancel_job(stuck["id"])
    assert cancelled["state"] == "cancelled"
    client.delete_job(stuck["id"])
    with pytest.raises(sf.SwitchyardError) as raised:
        client.job(stuck["id"])
    assert raised.value.kind == "unknown service"


def test_a_job_without_a_service_is_a_bad_request(client):
    with pytest.raises(sf.BadRequest):
        client.submit_job(payload=b"x")
    with pytest.raises(sf.BadRequest):
        client.job_result(client.submit_job("sh", b"sleep 5")["id"])


def test_remote_turns_a_stub_into_a_call(client):
    @client.remote("echo", codec="json", timeout=5)
    def echo(data):
        raise AssertionError("the stub's body never runs")

    assert echo({"epochs": 3, "lr": 0.1}) == {"epochs": 3, "lr": 0.1}
    assert echo.__name__ == "echo"

    @client.remote()
    def sleep(ms):
        ...

    assert sleep(b"1") == b"slept 1 ms"
    with pytest.raises(ValueError):
        client.remote(codec="pickle")


def test_the_async_client_submits_and_reads_jobs(gateway, ca, admin_token):
    import asyncio

    async def main():
        client = await sf.AsyncClient.connect(gateway, ca, admin_token=admin_token)
        try:
            job = await client.submit_job("sh", b"echo async; sleep 0.1; echo done")
            log = await client.follow_log(job["id"])
            lines = [e["line"] async for e in log if e["stream"] == "stdout"]
            assert lines == ["async", "done"]
            assert (await client.job(job["id"]))["state"] == "succeeded"
            assert await client.job_result(job["id"]) == b"async\ndone\n"
            stdout = [e["line"] for e in await client.job_log(job["id"]) if e["stream"] == "stdout"]
            assert stdout == ["async", "done"]
            page = await client.jobs(service="sh", limit=5)
            assert page["jobs"]
            stuck = await client.submit_job("sh", b"sleep 1000")
            assert (await client.cancel_job(stuck["id"]))["state"] == "cancelled"
            await client.delete_job(stuck["id"])
            with pytest.raises(sf.SwitchyardError):
                await client.job(stuck["id"])
        finally:
            await client.close()

    asyncio.run(main())


def test_remote_works_with_the_async_client_too(gateway, ca):
    import asyncio

    async def main():
        client = await sf.AsyncClient.connect(gateway, ca)
        try:

            @sf.remote(client, "echo", codec="json")
            async def echo(data):
                ...

            assert await echo([1, "two"]) == [1, "two"]
        finally:
            await client.close()

    asyncio.run(main())
