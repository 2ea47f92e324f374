"""Switchyard from Python.

``Client`` calls services on the fleet through a gateway and blocks the
calling thread (the interpreter is released meanwhile); ``AsyncClient``
does the same for asyncio (``client = await AsyncClient.connect(...)``).
Both speak QUIC to the gateway through the Rust SDK. A failed call raises
a subclass of ``SwitchyardError`` named after its kind (``Overloaded``,
``Timeout``, ...), carrying ``kind``, ``retry_safe``, ``node_id`` and
``request_id``.
"""

from ._native import (
    AsyncClient,
    AsyncStream,
    BadRequest,
    CallResult,
    Client,
    ConfigError,
    ConnectError,
    Forbidden,
    GatewayLost,
    InternalError,
    LeaseEnded,
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
    "AsyncStream",
    "BadRequest",
    "CallResult",
    "Client",
    "ConfigError",
    "ConnectError",
    "Forbidden",
    "GatewayLost",
    "InternalError",
    "LeaseEnded",
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
]
