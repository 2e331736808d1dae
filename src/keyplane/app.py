"""The ASGI application: the dialects under their prefixes, the verify endpoint, ``/health`` (liveness),
``/ready`` (the store and Redis answer: ``keyplane.readiness``), ``/metrics`` (``keyplane.metrics``), and
the API's description: ``/openapi.json``, built from the route tables (``keyplane.openapi``), and ``/docs``."""

from __future__ import annotations

import gc
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from keyplane import console, logs
from keyplane.auth import Reason, VerifyResult
from keyplane.config import Settings
from keyplane.console.operators import TokenDirectory
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
from keyplane.logs import RefusalLog
from keyplane.metrics import Metrics, StoreGauge, WorkerFiles, registry_for, route_of
from keyplane.native import errors as management_errors
from keyplane.native.api import ManagementApi
from keyplane.native.routes import PREFIXES as MANAGEMENT_PREFIXES
from keyplane.native.routes import ROUTES as MANAGEMENT_ROUTES
from keyplane.openapi import Body, Documented, Operation, build_document, pages
from keyplane.readiness import Readiness
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
        # every surface the OpenAPI document describes (keyplane.openapi): the app itself and each mount's
        self.documented: list[Documented] = [self]
        self._openapi: bytes | None = None
        # the app's own exact paths (GET or HEAD); /docs/<file> for each of pages.ASSETS
        self.own: dict[str, Callable[[Scope], Awaitable[Response]]] = {
            "/health": self._health,
            "/ready": self._ready,
            "/metrics": self._metrics,
            "/openapi.json": self._openapi_json,
            pages.DOCS: self._docs,
            **{pages.ASSET_PREFIX + name: self._asset for name in pages.ASSETS},
        }
        self.ready = False
        self.metrics = Metrics(RefusalLog(settings.refusal_lines_per_second), counting=settings.metrics)
        self._counting = settings.metrics  # read on every request: an attribute, not a property
        self._metrics_files: WorkerFiles | None = None
        self._registry: CollectorRegistry | None = None
        self.readiness: Readiness | None = None
        self.console: console.Console | None = None
        # /metrics is guarded as /v1/ is (keyplane.dialects.native): the verify token, or explicitly open
        self._metrics_authorization = f"Bearer {settings.verify_token}".encode() if settings.verify_token else None
        if runtime is not None:
            self._mount(runtime)

    def _mount(self, runtime: Runtime) -> None:
        metrics = self.metrics
        cache, nonces = runtime.verifier.cache, runtime.verifier.nonces
        lifecycle, within = runtime.service.lifecycle, self.settings.expiring_within_s

        def expiry_counts() -> dict[str, int]:
            expired, expiring = lifecycle.count_expiring(within)
            return {"keys_expired": expired, "keys_expiring": expiring}

        expiry = StoreGauge(expiry_counts)

        def gauges() -> dict[str, int]:
            values = {"cache_entries": len(cache), "cache_hits_total": cache.hits, "cache_misses_total": cache.misses}
            values.update(expiry.values())
            journal = nonces.journal_bytes()
            if journal is not None:
                values["nonce_journal_bytes"] = journal
            replays = nonces.replay_ledger_mode()
            if replays is not None:
                values["replay_ledger_owner"] = int(replays == "owner")
            return values

        metrics._gauges = gauges
        if self.settings.metrics:
            if self.settings.metrics_dir is not None:
                self._metrics_files = WorkerFiles(self.settings.metrics_dir, metrics)
                self._metrics_files.start()
            self._registry = registry_for(metrics, self._metrics_files)
        self.readiness = Readiness(runtime.store, self.settings.redis_url)
        if self.settings.metrics:
            metrics.history.start()
        self.console = console.build_console(
            runtime.service, TokenDirectory(runtime.store), metrics, self._metrics_files,
            idle_minutes=self.settings.console_idle_minutes, secure_cookie=self.settings.console_secure_cookie,
        )
        bitget_dialect = bitget.BitgetDialect(runtime.service, runtime.verifier, metrics)
        whitebit_dialect = whitebit.WhitebitDialect(runtime.service, runtime.verifier, metrics)
        native_dialect = native.NativeDialect(
            runtime.verifier,
            self.settings.verify_token,
            open_without_token=self.settings.verify_open,
            trusted_proxies=self.settings.trusted_proxies,
            metrics=metrics,
        )
        bitget_bad_target = lambda: bitget.verify_error(VerifyResult(Reason.BAD_TARGET))  # noqa: E731
        # the native management API: operator tokens, not the verify token (keyplane.native)
        management = ManagementApi(
            runtime.service, runtime.service.tokens, runtime.service.idempotency, MANAGEMENT_ROUTES, metrics
        )
        management_mounts: list[Mount] = [
            (prefix, management.handle, _management_too_large, _management_bug, _management_bad_target)
            for prefix in MANAGEMENT_PREFIXES
        ]
        self.mounts = [
            *management_mounts,
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
                whitebit_dialect.handle,
                whitebit.too_large,
                whitebit.internal_error,
                whitebit.bad_target,
            ),
        ]
        self.documented = [self, native_dialect, bitget_dialect, whitebit_dialect, management]
        self._openapi = None
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
                self.metrics.refusals.announce()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.metrics.history.close()
                if self._metrics_files is not None:
                    self._metrics_files.close()
                if self.readiness is not None:
                    self.readiness.close()
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
        if self._counting:
            self.metrics.observe(path, time.perf_counter() - started)
        # /v1/verify is the gateway's per-request call (nginx logs those requests itself): an INFO line
        # each would halve its throughput (bench/README.md), so it logs at DEBUG
        # (the management API's calls are rare and each one matters: INFO)
        level = (
            logging.DEBUG if path.startswith(native.PREFIX) and not path.startswith(MANAGEMENT_PREFIXES)
            else logging.INFO
        )
        if log.isEnabledFor(level):
            log.log(
                level, "%s %s %d %.1fms", scope["method"], path, response.status,
                (time.perf_counter() - started) * 1000,
            )

    async def _dispatch(self, scope: Scope, receive: Receive, path: str) -> Response:
        own = self.own.get(path)
        if own is not None:
            if scope["method"] not in ("GET", "HEAD"):
                return self._refused(scope, path, "METHOD_NOT_ALLOWED", json_response(
                    405, {"code": 405, "message": "Method not allowed"}, {"Allow": "GET, HEAD"}
                ))
            try:
                return await own(scope)
            except Exception:  # a bug (a route without its OpenAPI declaration, say): logged, JSON 500
                log.exception("unhandled error on %s %s", scope["method"], path)
                self.metrics.internal_error(route_of(path))
                return json_response(500, {"code": 500, "message": "internal error"})
        if self.console is not None and (path == console.PREFIX or path.startswith(console.PREFIX + "/")):
            headers = decode_headers(scope["headers"])
            return await self.console.handle(
                scope, receive, path, client_ip_of(scope, headers, self.settings.trusted_proxies)
            )
        for prefix, handler, too_large, internal_error, bad_target in self.mounts:
            if path.startswith(prefix):
                if bad_target is not None and not (clean_path(path) and clean_method(scope["method"])):
                    return self._refused(scope, path, "BAD_TARGET", bad_target())
                try:
                    body = await read_body(receive)
                except BodyTooLarge:
                    return self._refused(scope, path, "BODY_TOO_LARGE", too_large())
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
                    self.metrics.internal_error(route_of(path))
                    return internal_error()
        return self._refused(scope, path, "NOT_FOUND", json_response(404, {"code": 404, "message": "Not found"}))

    def _refused(self, scope: Scope, path: str, reason: str, response: Response) -> Response:
        """A request refused before any dialect read it: counted and logged (``keyplane.logs``)."""
        client = scope.get("client")
        self.metrics.refused(
            reason, route_of(path), method=str(scope.get("method", "")), path=path,
            client_ip=client_ip_of(scope, decode_headers(scope.get("headers", [])), self.settings.trusted_proxies)
            if client else "",
            status=response.status,
        )
        return response

    async def _health(self, scope: Scope) -> Response:
        status = 200 if self.ready else 503
        return json_response(status, {"status": "ok" if self.ready else "starting"})

    async def _ready(self, scope: Scope) -> Response:
        if self.readiness is None:
            return json_response(503, {"status": "starting", "checks": {}})
        ready, checks = await self.readiness.check()
        return json_response(200 if ready else 503, {"status": "ready" if ready else "unavailable", "checks": checks})

    async def _metrics(self, scope: Scope) -> Response:
        """Prometheus' text format, for a caller with the verify token (or anyone, with /v1/ explicitly open)."""
        if self._registry is None:
            return json_response(404, {"code": 404, "message": "Not found"})
        if self._metrics_authorization is not None:
            given = next((v for k, v in scope["headers"] if k.lower() == b"authorization"), b"")
            if not hmac.compare_digest(given, self._metrics_authorization):
                return self._unauthorized(scope)
        elif not self.settings.verify_open:
            return self._unauthorized(scope)
        return Response(200, generate_latest(self._registry), [(b"content-type", CONTENT_TYPE_LATEST.encode())])

    async def _openapi_json(self, scope: Scope) -> Response:
        if self._openapi is None:  # built once per worker, on the first call: the tables do not change
            document = build_document(op for surface in self.documented for op in surface.operations())
            self._openapi = msgspec.json.encode(document)
        return Response(200, self._openapi, [(b"content-type", b"application/json")])

    async def _docs(self, scope: Scope) -> Response:
        return pages.page()

    async def _asset(self, scope: Scope) -> Response:
        raw_path: bytes | None = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path is not None else scope["path"]
        return pages.asset(path.removeprefix(pages.ASSET_PREFIX))

    def operations(self) -> list[Operation]:
        """The app's own paths (``self.own``) for the OpenAPI document."""
        not_allowed = {
            405: Body("Not GET or HEAD", AppError, headers={"Allow": "GET, HEAD"}),
            500: Body("A bug (logged)", AppError),
        }
        described: dict[str, tuple[str, str, dict[int, Body], tuple[str, ...]]] = {
            "/health": ("health", "Liveness: the process answers", {
                200: Body("Serving", HealthAnswer), 503: Body("Starting", HealthAnswer),
            }, ()),
            "/ready": ("ready", "Readiness: the store (and Redis, when configured) answer within 1 s", {
                200: Body("Ready", ReadyAnswer), 503: Body("A check failed or timed out", ReadyAnswer),
            }, ()),
            "/metrics": ("metrics", "Prometheus metrics (text format)", {
                200: Body("The metrics", {"type": "string"}, content_type="text/plain"),
                401: Body("No or a wrong verify token", AppError, headers={"WWW-Authenticate": "Bearer"}),
                404: Body("Metrics are off (KEYPLANE_METRICS=0)", AppError),
            }, ("VerifyToken",)),
            "/openapi.json": ("openapi", "This document", {
                200: Body("The OpenAPI 3.1 document", {"type": "object"}),
            }, ()),
            pages.DOCS: ("docs", "This document in Swagger UI (served from the package: works offline)", {
                200: Body("The page", {"type": "string"}, content_type="text/html"),
            }, ()),
        }
        for name, content_type in pages.ASSETS.items():
            described[pages.ASSET_PREFIX + name] = (f"docs-{name}", f"A file of /docs: {name}", {
                200: Body("The file", {"type": "string"}, content_type=content_type.partition(";")[0]),
            }, ())
        return [
            Operation("GET", path, op_id, summary, "Operations", {**responses, **not_allowed}, security=security)
            for path, (op_id, summary, responses, security) in ((p, described[p]) for p in self.own)
        ]

    def _unauthorized(self, scope: Scope) -> Response:
        return self._refused(scope, "/metrics", "UNAUTHORIZED", json_response(
            401, {"code": "UNAUTHORIZED", "message": "/metrics needs Authorization: Bearer <KEYPLANE_VERIFY_TOKEN>"},
            {"WWW-Authenticate": "Bearer"},
        ))


class HealthAnswer(msgspec.Struct):
    status: Literal["ok", "starting"]


class ReadyAnswer(msgspec.Struct):
    status: Literal["ready", "unavailable", "starting"]
    checks: Annotated[
        dict[str, str], msgspec.Meta(description='each check: "ok", "unavailable (<error type>)" or "timed out ..."')
    ]


class AppError(msgspec.Struct):
    code: int | str
    message: str


def _management_too_large() -> Response:
    return management_errors.error_response(413, "payload_too_large", "the body is over 64 KiB")


def _management_bug() -> Response:
    return management_errors.error_response(500, "internal_error", "internal error (logged)")


def _management_bad_target() -> Response:
    return management_errors.error_response(
        400, "invalid_path", "the request target is not in canonical form (no %-escapes, dot segments or //)"
    )


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
    """The factory ``keyplane serve`` hands to the ASGI server (each worker calls it)."""
    logs.configure()  # KEYPLANE_LOG_LEVEL, KEYPLANE_LOG_FORMAT
    return create_app(Settings.from_env())
