"""The gateway the suite talks to, from the environment the end-to-end
suite sets (e2e/tests/e2e/python_package.rs starts a gateway and an agent
with the services below, then runs pytest):

- SWITCHYARD_GATEWAY: the gateway's QUIC address, host:port
- SWITCHYARD_CA: the CA file its certificate is signed by
- SWITCHYARD_ADMIN_TOKEN: its admin token
- SWITCHYARD_AGENT_TOKEN: its agent token (the suite's Python nodes)

Services on node ``node-a``: ``echo`` (returns the payload), ``sleep``
(payload: milliseconds), ``fail`` (a command that exits 3), ``lines``
(prints ``one``, sleeps 0.5 s, prints ``two``), ``partial`` (prints a
line, then exits 3), ``forever`` (prints ``started``, then sleeps 30 s;
one call at a time), ``sh`` (runs its payload with ``sh``: the jobs).
"""

import os

import pytest


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run this suite through `cargo test -p switchyard-e2e python_package`")
    return value


@pytest.fixture(scope="session")
def gateway() -> str:
    return _env("SWITCHYARD_GATEWAY")


@pytest.fixture(scope="session")
def ca() -> str:
    return _env("SWITCHYARD_CA")


@pytest.fixture(scope="session")
def admin_token() -> str:
    return _env("SWITCHYARD_ADMIN_TOKEN")


@pytest.fixture(scope="session")
def client(gateway: str, ca: str, admin_token: str):
    import switchyard_fleet

    with switchyard_fleet.Client([gateway], ca, admin_token=admin_token) as c:
        yield c


@pytest.fixture(scope="session")
def agent_token() -> str:
    return _env("SWITCHYARD_AGENT_TOKEN")
