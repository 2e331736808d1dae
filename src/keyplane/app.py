"""The ASGI application: the dialects under their prefixes, ``/health``, and the verify endpoint."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from keyplane.auth import Reason, VerifyResult
from keyplane.config import Settings
from keyplane.dialects import bitget, native, whitebit
from keyplane.domain.target import clean_method, clean_path
from keyplane.http import (
    BodyTooLarge,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    client_ip_of,
    decode_headers,
    json_response,
    read_body,
    send_response,
)
from keyplane.runtime import Runtime, build_runtime

log = logging.getLogger("keyplane.access")

# (prefix, handler, the dialect's answer to a body over the limit, its answer to a bug, its answer to a
# target an upstream could read otherwise: None where the handler routes by exact paths only)
Mount = tuple[
    str,
    Callable[[Request], Awaitable[Response]],
    Callable[[], Response],
    Callable[[], Response],
    Callable[[], Response] | None,
]


class KeyplaneApp:
    """Routes by path prefix to a dialect; each dialect answers its own errors in its own envelope."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.runtime = runtime
        self.mounts: list[Mount] = []
        self.ready = False
        if runtime is not None:
            self._mount(runtime)

    def _mount(self, runtime: Runtime) -> None:
        bitget_dialect = bitget.BitgetDialect(runtime.service, runtime.verifier)
        native_dialect = native.NativeDialect(
            runtime.verifier,
            self.settings.verify_token,
            open_without_token=self.settings.verify_open,
            trusted_proxies=self.settings.trusted_proxies,
        )
        bitget_bad_target = lambda: bitget.verify_error(VerifyResult(Reason.BAD_TARGET))  # noqa: E731
        self.mounts = [
            (
                native.PREFIX,
                native_dialect.handle,
                lambda: native.bad_call("body too large"),
                native.internal_error,
                None,  # /v1/verify and /v1/noop, matched exactly on the raw path: nothing else is served
            ),
            (
                bitget.PREFIX,
                bitget_dialect.handle,
                lambda: bitget.fail("40017", "Parameter verification failed"),
                bitget.internal_error,
                bitget_bad_target,
            ),
            (
                whitebit.PREFIX,
                whitebit.WhitebitDialect(runtime.service, runtime.verifier).handle,
                whitebit.too_large,
                whitebit.internal_error,
                whitebit.bad_target,
            ),
        ]
        self.ready = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.runtime is None:
                        self.runtime = build_runtime(self.settings, follow_changes=True)
                        self._mount(self.runtime)
                except Exception as error:  # tell the server why the app cannot start
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                tune_garbage_collector()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.runtime is not None:
                    self.runtime.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        # the path as sent, not the server's percent-decoded ``path``: routes and the verifier see the
        # bytes an upstream would (one path, one meaning); latin-1 maps every byte to one character
        raw_path: bytes | None = scope.get("raw_path")
        path: str = raw_path.decode("latin-1") if raw_path is not None else scope["path"]
        response = await self._dispatch(scope, receive, path)
        await send_response(send, response)
        # /v1/verify is the gateway's per-request call (nginx logs those requests itself): an INFO line
        # each would halve its throughput (bench/README.md), so it logs at DEBUG
        level = logging.DEBUG if path.startswith(native.PREFIX) else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level, "%s %s %d %.1fms", scope["method"], path, response.status,
                (time.perf_counter() - started) * 1000,
            )

    async def _dispatch(self, scope: Scope, receive: Receive, path: str) -> Response:
        if path == "/health":
            status = 200 if self.ready else 503
            return json_response(status, {"status": "ok" if self.ready else "starting"})
        for prefix, handler, too_large, internal_error, bad_target in self.mounts:
            if path.startswith(prefix):
                if bad_target is not None and not (clean_path(path) and clean_method(scope["method"])):
                    return bad_target()
                try:
                    body = await read_body(receive)
                except BodyTooLarge:
                    return too_large()
                headers = decode_headers(scope["headers"])
                request = Request(
                    method=scope["method"],
                    path=path,
                    query=scope.get("query_string", b"").decode("latin-1"),
                    headers=headers,
                    body=body,
                    client_ip=client_ip_of(scope, headers, self.settings.trusted_proxies),
                )
                try:
                    return await handler(request)
                except Exception:
                    # A bug, not a client error (tests/security/test_no_5xx.py drives every route with
                    # arbitrary input and finds none): log it and answer the dialect's own 500. The
                    # traceback carries no secret: SignedRequest's repr leaves out the signature,
                    # passphrase and body, and tracebacks are logged without local variables.
                    log.exception("unhandled error on %s %s", request.method, path)
                    return internal_error()
        return json_response(404, {"code": 404, "message": "Not found"})


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections once the server is up.

    A request's garbage is freed by reference counting; the cyclic collector only adds pauses that
    stall every connection at once. With its default thresholds it ran every ~700 allocations over
    everything the server had built at start-up: /v1/noop's p99 was 25-50 ms, 8-12 ms with this
    (bench/README.md). ``freeze`` moves the start-up objects out of its reach; the higher first
    threshold makes young collections rare.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> KeyplaneApp:
    return KeyplaneApp(settings or Settings.from_env(), runtime)


def app_from_env() -> Any:
    """The factory ``keyplane serve`` hands to the ASGI server."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return create_app(Settings.from_env())
