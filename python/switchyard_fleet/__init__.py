"""Switchyard from Python.

``Client`` calls services on the fleet through a gateway and blocks the
calling thread (the interpreter is released meanwhile); ``AsyncClient``
does the same for asyncio (``client = await AsyncClient.connect(...)``).
Both speak QUIC to the gateway through the Rust SDK. A failed call raises
a subclass of ``SwitchyardError`` named after its kind (``Overloaded``,
``Timeout``, ...), carrying ``kind``, ``retry_safe``, ``node_id`` and
``request_id``.
"""

import functools
from typing import Any, Callable, Optional

from . import _native
from .codecs import CODECS, decoder, encoder, policy_name
from .node import CallAbandoned, Node, log
from ._native import (
    AsyncClient,
    AsyncLogFollow,
    AsyncStream,
    BadRequest,
    CallResult,
    ConfigError,
    ConnectError,
    Forbidden,
    GatewayLost,
    InternalError,
    Lease,
    LeaseEnded,
    LogFollow,
    NodeLost,
    NodeUnreachable,
    NoNodeAvailable,
    Occupied,
    Overloaded,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    Rejected,
    ServiceFailed,
    ShuttingDown,
    Stream,
    SwitchyardError,
    Timeout,
    Unauthorized,
    UnknownService,
)

__all__ = [
    "AsyncClient",
    "AsyncLogFollow",
    "AsyncStream",
    "BadRequest",
    "CallAbandoned",
    "CallResult",
    "Client",
    "ConfigError",
    "ConnectError",
    "Forbidden",
    "GatewayLost",
    "InternalError",
    "Lease",
    "LeaseEnded",
    "LogFollow",
    "Node",
    "NodeLost",
    "NodeUnreachable",
    "NoNodeAvailable",
    "Occupied",
    "Overloaded",
    "PayloadTooLarge",
    "ProtocolError",
    "RateLimited",
    "Rejected",
    "ServiceFailed",
    "ShuttingDown",
    "Stream",
    "SwitchyardError",
    "Timeout",
    "Unauthorized",
    "UnknownService",
    "log",
    "remote",
]


def remote(
    client: Any,
    service: Optional[str] = None,
    *,
    codec: str = "bytes",
    function_name: Optional[str] = None,
    load_balancing: Any = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turns a stub into a call of ``service`` (default: the stub's name)
    through ``client``, a ``Client`` (the stub becomes a function) or an
    ``AsyncClient`` (the stub becomes a coroutine function).

    The decorated function's body never runs: calling it with one
    argument calls the service with that argument as the payload and
    returns the result. ``codec="bytes"`` (the default) sends bytes or
    text and returns bytes; ``codec="json"`` sends the argument as JSON
    and returns the result's JSON value; ``codec="msgpack"`` the same in
    MessagePack. ``options`` are ``call``'s (``timeout``, ``priority``,
    ``hints``, ``policy``, ``explain``, ``look_aside``).

    For code written for other function gateways, ``function_name`` is
    ``service`` and ``load_balancing`` names the policy: a strategy name or
    a dict with ``"strategy"`` (``round_robin``, ``resource_aware``,
    ``latency_based``, ``cost_aware``, ``smart_adaptive`` or a policy's own
    name). The dict's other entries become the call's hints, a nested
    dict's entries one by one (``"requirements": {"gpu_mem_mib":
    ">=16000"}``, ``"budget": {"max_cost": 5.0}``), each value as text.

    Raises ``ValueError`` for an unknown codec.
    """
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, not {codec!r}")
    encode, decode = encoder(codec), decoder(codec)
    service = service or function_name
    if isinstance(load_balancing, dict):
        hints = dict(options.get("hints") or {})
        for key, value in load_balancing.items():
            if key == "strategy":
                continue
            for name, text in (value.items() if isinstance(value, dict) else [(key, value)]):
                hints.setdefault(name, str(text))
        if hints:
            options["hints"] = hints
        load_balancing = load_balancing.get("strategy")
    if isinstance(load_balancing, str) and load_balancing and "policy" not in options:
        options["policy"] = policy_name(load_balancing)

    def wrap(stub: Callable[..., Any]) -> Callable[..., Any]:
        name = service or stub.__name__
        if isinstance(client, _native.AsyncClient):

            @functools.wraps(stub)
            async def call_async(payload: Any = None) -> Any:
                result = await client.call(name, encode(payload), **options)
                return decode(result.data)

            return call_async

        @functools.wraps(stub)
        def call(payload: Any = None) -> Any:
            result = client.call(name, encode(payload), **options)
            return decode(result.data)

        return call

    return wrap


class Client(_native.Client):
    """A blocking client; see the package's docstring and ``_native.pyi``."""

    def remote(
        self, service: Optional[str] = None, *, codec: str = "bytes", **options: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """``remote(self, service, codec=codec, **options)``: a stub
        decorated with it calls ``service`` (default: the stub's name).

            @client.remote("train_model", codec="json", policy="cost")
            def train_model(data): ...

            model = train_model({"epochs": 3})
        """
        return remote(self, service, codec=codec, **options)
