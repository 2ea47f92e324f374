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
import json
from typing import Any, Callable, Optional

from . import _native
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
    "remote",
]


_CODECS = ("bytes", "json")


def _encode(codec: str, value: Any) -> Any:
    if codec == "json":
        return json.dumps(value, separators=(",", ":")).encode()
    return value


def _decode(codec: str, data: bytes) -> Any:
    if codec == "json":
        return json.loads(data) if data else None
    return data


def remote(
    client: Any, service: Optional[str] = None, *, codec: str = "bytes", **options: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turns a stub into a call of ``service`` (default: the stub's name)
    through ``client``, a ``Client`` (the stub becomes a function) or an
    ``AsyncClient`` (the stub becomes a coroutine function).

    The decorated function's body never runs: calling it with one
    argument calls the service with that argument as the payload and
    returns the result. ``codec="bytes"`` (the default) sends bytes or
    text and returns bytes; ``codec="json"`` sends the argument as JSON
    and returns the result's JSON value. ``options`` are ``call``'s
    (``timeout``, ``priority``, ``hints``, ``policy``, ``explain``,
    ``look_aside``).
    """
    if codec not in _CODECS:
        raise ValueError(f"codec must be one of {_CODECS}, not {codec!r}")

    def wrap(stub: Callable[..., Any]) -> Callable[..., Any]:
        name = service or stub.__name__
        if isinstance(client, _native.AsyncClient):

            @functools.wraps(stub)
            async def call_async(payload: Any = None) -> Any:
                result = await client.call(name, _encode(codec, payload), **options)
                return _decode(codec, result.data)

            return call_async

        @functools.wraps(stub)
        def call(payload: Any = None) -> Any:
            result = client.call(name, _encode(codec, payload), **options)
            return _decode(codec, result.data)

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
