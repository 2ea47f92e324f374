"""Python functions served on the fleet: ``Node`` registers this process
with a gateway as a node (exactly as the ``node-agent`` program does: its
stats with GPU information, a slot count per function, drain on SIGTERM)
and runs the functions registered on it when the gateway sends calls.

    node = Node("gateway:4433", ca="ca.pem", token_file="agent-token")

    @node.register(codec="json", max_concurrent=2)
    def train_model(data):
        return {"loss": train(data)}

    node.serve()
"""

import asyncio
import contextvars
import ctypes
import inspect
import logging
import signal
import socket
import threading
import traceback
from typing import Any, Callable, Dict, List, Optional

from . import _native
from .codecs import CODECS, decoder, encoder, policy_name

__all__ = ["CallAbandoned", "Node", "log"]

_log = logging.getLogger("switchyard_fleet.node")

#: The call the running function serves (its thread's, or its task's).
_current: "contextvars.ContextVar[Any]" = contextvars.ContextVar("switchyard_call")


def log(*parts: Any, sep: str = " ") -> bool:
    """Writes a line (``parts`` joined by ``sep``, as ``print`` does) to
    the log of the call the running function serves, when its caller asked
    for it (a job's call: ``switchyard jobs logs``, ``follow_log``). Blocks
    while the caller is behind. Returns ``False`` when the caller did not
    ask, is gone, or no call is being served here."""
    call = _current.get(None)
    if call is None:
        return False
    text = sep.join(str(p) for p in parts)
    return bool(call.write_log(text if text.endswith("\n") else text + "\n"))


class CallAbandoned(BaseException):
    """Raised inside a function running on a thread when the node gave up
    on its call (its deadline passed, or the caller left). It derives from
    ``BaseException`` so that a function's ``except Exception`` does not
    swallow it; it reaches the function at its next Python instruction
    (not inside a blocking C call such as ``time.sleep``)."""


class _Running:
    """A function running on a thread for one call: ``abandon`` raises
    ``CallAbandoned`` there only while ``active`` (under ``lock``), so the
    exception never reaches a later call the same thread runs."""

    __slots__ = ("ident", "lock", "active")

    def __init__(self) -> None:
        self.ident = threading.get_ident()
        self.lock = threading.Lock()
        self.active = True


def _set_async_exc(ident: int, exception: Any) -> None:
    """Raises ``exception`` in thread ``ident`` at its next Python
    instruction (``None``: clears one set and not raised yet)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), exception)


class _Function:
    """A registered function and how it is served."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        max_concurrent: int,
        codec: str,
        policy: Optional[str],
        idempotent: bool,
        stream: bool,
    ) -> None:
        self.fn = fn
        self.name = name
        self.max_concurrent = max_concurrent
        self.decode = decoder(codec)
        self.encode = encoder(codec)
        self.policy = policy
        self.idempotent = idempotent
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        self.is_generator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        if stream and not self.is_generator:
            raise ValueError(
                f"{name}: stream=True needs a generator function (one that yields chunks)"
            )
        self.stream = self.is_generator

    def _failed(self, call: Any, error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}"
        tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        call.fail(message, tb)

    def thread_invoke(self, payload: bytes, call: Any) -> None:
        """Runs the function on this (blocking) thread and reports."""
        running = _Running()
        call.tag = running
        current = _current.set(call)
        try:
            value = self.fn(self.decode(payload))
            if self.is_generator:
                try:
                    for item in value:
                        if not call.streamed:
                            raise RuntimeError("a generator's call must stream")
                        if not call.send(self.encode(item)):
                            break
                finally:
                    value.close()
                call.end()
            else:
                call.finish(self.encode(value))
        except CallAbandoned:
            call.fail("CallAbandoned: the call was given up", "")
        except BaseException as error:  # noqa: BLE001 - every failure is the call's
            self._failed(call, error)
        finally:
            with running.lock:
                running.active = False
            _set_async_exc(running.ident, None)
            _current.reset(current)

    async def _run_async(self, payload: bytes, call: Any) -> None:
        _current.set(call)  # the task's own context
        try:
            if self.is_generator:
                agen = self.fn(self.decode(payload))
                try:
                    async for item in agen:
                        if not await call.send_async(self.encode(item)):
                            break
                finally:
                    await agen.aclose()
                call.end()
            else:
                call.finish(self.encode(await self.fn(self.decode(payload))))
        except asyncio.CancelledError:
            call.fail("CancelledError: the call was given up", "")
        except BaseException as error:  # noqa: BLE001 - every failure is the call's
            self._failed(call, error)

    def loop_invoke(self, loop: asyncio.AbstractEventLoop) -> Callable[[bytes, Any], None]:
        """An ``invoke`` that schedules the coroutine on ``loop``."""

        def invoke(payload: bytes, call: Any) -> None:
            call.tag = asyncio.run_coroutine_threadsafe(self._run_async(payload, call), loop)

        return invoke

    def abandon(self, call: Any) -> None:
        """Stops what it can of a call given up before it reported."""
        tag = call.tag
        _log.warning(
            "%s: call given up before the function returned (deadline of %.3f s, or the "
            "caller left); %s",
            self.name,
            call.timeout,
            "its coroutine is cancelled" if self.is_async else "CallAbandoned is raised in its thread",
        )
        if tag is None:
            return
        if self.is_async:
            tag.cancel()
            return
        with tag.lock:
            if tag.active:
                _set_async_exc(tag.ident, ctypes.py_object(CallAbandoned))


class Node:
    """This process as a node of the fleet, serving Python functions.

    ``gateway`` is the gateway's agent address (``host:port``, its QUIC
    port), ``ca`` the PEM file of the CA that signed its certificate (the
    gateway's ``ca.pem``), ``token`` or ``token_file`` its agent token.
    ``node_id`` defaults to the host name. ``gateways`` lists more members
    of a cluster to start from; ``region``, ``labels`` and
    ``cost_per_hour`` (the node's cost, which the ``cost`` policy weighs;
    default the largest a registered function names, else 0) describe the
    node; ``stats_interval_ms`` (default 1000) is how often it reports its
    CPU, memory and GPUs; ``shutdown_grace_s`` (default 30) how long the
    calls in flight may take to finish once it drains.
    """

    def __init__(
        self,
        gateway: str,
        *,
        ca: str,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        node_id: Optional[str] = None,
        gateways: Optional[List[str]] = None,
        server_name: Optional[str] = None,
        region: Optional[str] = None,
        labels: Optional[Dict[str, str]] = None,
        cost_per_hour: Optional[float] = None,
        stats_interval_ms: Optional[int] = None,
        shutdown_grace_s: Optional[int] = None,
        max_payload_bytes: Optional[int] = None,
    ) -> None:
        if token is None and token_file is None:
            raise ValueError("a node needs the gateway's agent token: token=... or token_file=...")
        self.node_id = node_id or socket.gethostname()
        self._settings: Dict[str, Any] = dict(
            ca=str(ca),
            node_id=self.node_id,
            token=token,
            token_file=None if token_file is None else str(token_file),
            gateways=gateways,
            server_name=server_name,
            region=region,
            labels=labels,
            stats_interval_ms=stats_interval_ms,
            shutdown_grace_s=shutdown_grace_s,
            max_payload_bytes=max_payload_bytes,
        )
        self._gateway = gateway
        self._cost_per_hour = cost_per_hour
        self._functions: Dict[str, _Function] = {}
        self._function_costs: List[float] = []
        self._core: Optional[Any] = None
        self._loop_thread: Optional[threading.Thread] = None

    @property
    def functions(self) -> List[str]:
        """The names of the registered functions."""
        return list(self._functions)

    def register(
        self,
        name: Any = None,
        *,
        max_concurrent: int = 1,
        stream: bool = False,
        codec: str = "bytes",
        cost_per_hour: Optional[float] = None,
        policy: Optional[str] = None,
        idempotent: bool = False,
        load_balancing: Any = None,
    ) -> Any:
        """Registers a function as the service ``name`` (default: the
        function's name). Use as ``@node.register`` or
        ``@node.register("name", max_concurrent=4, codec="json")``.

        A plain function runs on a thread, at most ``max_concurrent`` calls
        at once (default 1); an ``async def`` runs on the node's asyncio
        loop; a generator's (or async generator's) items stream to the
        caller as chunks (``stream=True`` only checks that it is one).
        ``codec`` turns payloads into the function's argument and its
        result back: ``"bytes"`` (default: bytes in; bytes or str out),
        ``"json"``, ``"msgpack"`` (needs the ``msgpack`` package). An
        exception fails the call as ``ServiceFailed`` with its message and
        traceback (also in the call's log when the caller asked for it); a
        call past its deadline fails as ``Timeout`` and the function is
        stopped where it can be (``CallAbandoned`` raised in its thread, its
        coroutine cancelled), its place among ``max_concurrent`` taken until
        it returns.

        ``policy`` names the policy the gateway uses for the service unless
        its operator set one; ``idempotent=True`` lets the gateway retry a
        call on another node when this one is lost mid-call;
        ``cost_per_hour`` sets the node's cost unless ``Node`` was given
        one. ``load_balancing`` is accepted for code written for other
        function gateways: ``True``/``False`` changes nothing (every
        service is balanced over the nodes that serve it), a string or a
        dict's ``"strategy"`` names the policy.

        Returns the function unchanged (still callable locally).

        Raises ``ValueError`` for a name registered twice, ``max_concurrent``
        below 1, an unknown codec, or ``stream=True`` on a plain function;
        ``RuntimeError`` once the node serves.
        """
        if callable(name):
            return self.register()(name)
        if self._core is not None:
            raise RuntimeError("register functions before serve(): a serving node's services are fixed")
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, not {codec!r}")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        policy = policy or _strategy(load_balancing)

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            service = name or fn.__name__
            if service in self._functions:
                raise ValueError(f"a function named {service!r} is registered already")
            self._functions[service] = _Function(
                fn, service, max_concurrent, codec, policy, idempotent, stream
            )
            if cost_per_hour is not None:
                self._function_costs.append(float(cost_per_hour))
            return fn

        return wrap

    def _core_for(self, loop: Optional[asyncio.AbstractEventLoop]) -> Any:
        if self._core is not None:
            raise RuntimeError("this node serves already (or did: make a new Node)")
        if not self._functions:
            raise ValueError("register at least one function before serving")
        cost = self._cost_per_hour
        if cost is None:
            cost = max(self._function_costs, default=0.0)
        core = _native.NodeCore(self._gateway, cost_per_hour=float(cost), **self._settings)
        for function in self._functions.values():
            if function.is_async:
                assert loop is not None
                invoke = function.loop_invoke(loop)
            else:
                invoke = function.thread_invoke
            core.add(
                function.name,
                invoke,
                function.abandon,
                max_concurrent=function.max_concurrent,
                on_loop=function.is_async,
                stream=function.stream,
                policy=function.policy,
                idempotent=function.idempotent,
            )
        self._core = core
        return core

    def serve(self) -> None:
        """Serves until SIGTERM, Ctrl-C or ``stop()``, then drains (no new
        calls; the calls in flight finish within ``shutdown_grace_s``) and
        returns; Ctrl-C's ``KeyboardInterrupt`` propagates after the drain.
        Async functions run on an asyncio loop in a thread of its own.

        Raises ``ValueError`` (no function registered, an invalid setting),
        ``RuntimeError`` (the node serves already, or did) or
        ``ConnectError`` (the gateway refused the registration, the CA is
        unusable).
        """
        loop = None
        if any(f.is_async for f in self._functions.values()):
            loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(
                target=loop.run_forever, name="switchyard-node-loop", daemon=True
            )
            self._loop_thread.start()
        try:
            core = self._core_for(loop)
        except BaseException:
            if loop is not None:
                loop.call_soon_threadsafe(loop.stop)
            raise
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: core.stop())
        try:
            core.serve()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if loop is not None:
                loop.call_soon_threadsafe(loop.stop)

    async def serve_async(self) -> None:
        """As ``serve``, on the running asyncio loop (async functions run on
        it); SIGTERM drains the node when the loop runs in the main thread.
        """
        loop = asyncio.get_running_loop()
        core = self._core_for(loop)
        handled = False
        try:
            loop.add_signal_handler(signal.SIGTERM, core.stop)
            handled = True
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        try:
            await core.serve_async()
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGTERM)

    def stop(self) -> None:
        """Drains the node: ``serve`` returns once its calls in flight are
        done (safe from any thread)."""
        if self._core is not None:
            self._core.stop()


def _strategy(load_balancing: Any) -> Optional[str]:
    """The policy a ``load_balancing=`` option names, if any (see
    ``policy_name``)."""
    if isinstance(load_balancing, dict):
        load_balancing = load_balancing.get("strategy")
    if isinstance(load_balancing, str) and load_balancing:
        return policy_name(load_balancing)
    return None
