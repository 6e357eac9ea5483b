"""Run the HTTP server: bind, load the model in the background, handle signals, drain, exit.

- The socket is bound before the model loads, so /health answers 503 ("loading") at once.
- SIGTERM (or SIGINT): stop accepting, answer 503 to requests that still arrive on open
  connections, let admitted requests finish (up to --timeout), then exit 0 (130 for SIGINT).
- SIGHUP: load the model again (re-reading --model-file when given) beside the running one,
  blue/green: it takes traffic only after its health check passes.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from typing import Callable

from llmtools import errors
from llmtools.models.base import Backend


def serve_http(config, loader: Callable, on_ready: Callable[[str], None] | None = None) -> int:
    """Run the HTTP server until SIGTERM/SIGINT; returns the exit code (see run_http). Exits 4
    when starlette or uvicorn is missing."""
    errors.require("starlette", "serve", "llmtools serve")
    errors.require("uvicorn", "serve", "llmtools serve")
    return run_http(config, loader, on_ready=on_ready)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on
    # accepted sockets whose proto says TCP. With Nagle on, a response written as headers then
    # body waited for the client's delayed ACK, up to 40 ms per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise errors.UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def read_model_file(path: str) -> str:
    """The first non-blank, non-comment line of a pointer file."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    return line
    except OSError as exc:
        raise errors.UsageError(f"--model-file {path}: {exc.strerror or exc}") from None
    raise errors.UsageError(f"--model-file {path} names no model")


IDLE_TIMEOUT = 5  # seconds a connection may sit without a request (before one, or between two)
_PROTOCOL: type | None = None


def http_protocol() -> type:
    """uvicorn's h11 protocol with two changes for clients that misbehave:

    - a request uvicorn cannot parse (malformed, or a header section beyond h11's 16 KB) is
      answered in OpenAI's error shape, like every other error, not with plain text;
    - a connection that sends nothing, or stalls inside its header section, is closed after
      IDLE_TIMEOUT, as an idle keep-alive connection already was (uvicorn starts that timer only
      after a first response, so 200 silent connections stayed open for ever).
    """
    global _PROTOCOL
    if _PROTOCOL is not None:
        return _PROTOCOL
    import h11
    import orjson
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        def connection_made(self, transport) -> None:  # noqa: ANN001 - asyncio.Transport
            super().connection_made(transport)
            self._arm_idle_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm_idle_timer()  # still no complete header section: keep the clock running

        def _arm_idle_timer(self) -> None:
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

        def send_400_response(self, msg: str) -> None:
            body = orjson.dumps({"error": {
                "message": "invalid HTTP request: malformed, or a header section over 16 KB",
                "type": "invalid_request_error", "param": None, "code": "invalid_http_request"}})
            headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                          h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    _PROTOCOL = Protocol
    return Protocol


def run_http(config, loader: Callable[[str], Backend], on_ready: Callable[[str], None] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    import uvicorn

    from llmtools.ops.serve.app import ServeState, build_app

    state = ServeState(config, loader)
    ref = read_model_file(config.model_file) if config.model_file else config.model_ref
    sock = bind_socket(config.host, config.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    uv_config = uvicorn.Config(
        build_app(state),
        http=http_protocol(),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=IDLE_TIMEOUT,
        timeout_graceful_shutdown=int(config.timeout) + 5,
        server_header=False,
    )
    server = _Server(uv_config, state)

    def initial_load() -> None:
        try:
            state.load(ref)
            state.say(f"ready on {url}")
        except Exception as exc:  # the server cannot serve anything: stop it
            state.fatal = exc
            server.should_exit = True

    state.say(f"listening on {url} (loading {ref}; /health is 503 until it is ready)")
    if on_ready is not None:
        on_ready(url)
    loader_thread = threading.Thread(target=initial_load, name="llmtools-serve-load", daemon=True)
    loader_thread.start()
    try:
        server.run(sockets=[sock])
    finally:
        state.draining = True
        state.close()
        state.manager.join(timeout=5)
    if state.fatal is not None:
        exc = state.fatal
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        if isinstance(cause, errors.LLMToolsError):
            raise type(cause)(f"could not start: {cause.message}", cause.exit_code)
        raise errors.RuntimeFailure(f"could not start: {exc}")
    state.say("stopped")
    return errors.ExitCode.INTERRUPTED if server.interrupted else errors.ExitCode.OK


class _Server:
    """uvicorn.Server with our own signal handling: drain on SIGTERM/SIGINT without re-raising the
    signal afterwards (so a drained server exits 0), and SIGHUP for a blue/green reload."""

    def __new__(cls, config, state):
        import uvicorn

        class Server(uvicorn.Server):
            interrupted = False

            @contextlib.contextmanager
            def capture_signals(self):
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                handlers = {signal.SIGTERM: self.on_stop, signal.SIGINT: self.on_stop, signal.SIGHUP: self.on_hup}
                original = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
                try:
                    yield
                finally:
                    for sig, h in original.items():
                        signal.signal(sig, h)

            def on_stop(self, sig, frame) -> None:
                if sig == signal.SIGINT:
                    if self.should_exit:
                        self.force_exit = True
                    self.interrupted = True
                if not state.draining:
                    state.say("draining: finishing admitted requests, refusing new ones")
                state.draining = True
                self.should_exit = True

            def on_hup(self, sig, frame) -> None:
                threading.Thread(target=reload, name="llmtools-serve-reload", daemon=True).start()

        def reload() -> None:
            from llmtools.ops.serve.slots import LoadBusy

            try:
                new_ref = read_model_file(state.config.model_file) if state.config.model_file else state.config.model_ref
                state.say(f"SIGHUP: loading {new_ref} beside the active version")
                state.load(new_ref)
            except LoadBusy as exc:
                state.say(f"SIGHUP ignored: {exc}")
            except Exception as exc:
                state.say(f"SIGHUP reload failed, the active version keeps serving: {exc}")

        return Server(config)
