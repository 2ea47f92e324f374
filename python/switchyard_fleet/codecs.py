"""How Python values travel as payloads, both ways: ``"bytes"`` (as they
are), ``"json"`` and ``"msgpack"`` (the ``msgpack`` package, imported when
first used). No pickle: a node never runs code a caller sends."""

import json
from typing import Any, Callable, Dict

__all__ = ["CODECS", "decoder", "encoder", "policy_name"]

CODECS = ("bytes", "json", "msgpack")


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if value is None:
        return b""
    raise TypeError(
        f"with codec='bytes' a payload or result is bytes or str, not {type(value).__name__} "
        "(use codec='json' or 'msgpack' for other values)"
    )


def _msgpack() -> Any:
    try:
        import msgpack  # type: ignore[import-not-found]
    except ImportError as error:  # pragma: no cover - depends on the venv
        raise ImportError(
            "codec='msgpack' needs the msgpack package: pip install 'switchyard-fleet[msgpack]'"
        ) from error
    return msgpack


def encoder(codec: str) -> Callable[[Any], bytes]:
    """The function turning a value into a payload under ``codec``.

    Raises ``ValueError`` for an unknown codec."""
    if codec == "bytes":
        return _to_bytes
    if codec == "json":
        return lambda value: json.dumps(value, separators=(",", ":")).encode()
    if codec == "msgpack":
        packb = _msgpack().packb
        return lambda value: packb(value, use_bin_type=True)
    raise ValueError(f"codec must be one of {CODECS}, not {codec!r}")


def decoder(codec: str) -> Callable[[bytes], Any]:
    """The function turning a payload into a value under ``codec`` (an
    empty payload is ``None`` under json and msgpack).

    Raises ``ValueError`` for an unknown codec."""
    if codec == "bytes":
        return lambda data: data
    if codec == "json":
        return lambda data: json.loads(data) if data else None
    if codec == "msgpack":
        unpackb = _msgpack().unpackb
        return lambda data: unpackb(data, raw=False) if data else None
    raise ValueError(f"codec must be one of {CODECS}, not {codec!r}")


_POLICY_ALIASES: Dict[str, str] = {
    "round_robin": "round-robin",
    "resource_aware": "resource-aware",
    "latency_based": "latency",
    "cost_aware": "cost",
    "smart_adaptive": "adaptive",
    "least_request": "least-request",
    "least_loaded": "least-request",
}


def policy_name(strategy: str) -> str:
    """The Switchyard policy a load-balancing strategy name means:
    ``round_robin`` → ``round-robin``, ``resource_aware`` →
    ``resource-aware``, ``latency_based`` → ``latency``, ``cost_aware`` →
    ``cost``, ``smart_adaptive`` → ``adaptive``; any other name as it is
    (a policy loaded from the plugins folder)."""
    return _POLICY_ALIASES.get(strategy, strategy)
