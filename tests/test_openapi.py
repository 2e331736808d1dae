"""Issue 10 item 7 / issue 11: the OpenAPI document (``keyplane.openapi``) on a real ``keyplane serve``.

- openapi-spec-validator validates ``/openapi.json``;
- every route the server routes by is in the document and every operation of the document is routed
  (the tables themselves, and the live server's answers);
- schemathesis drives every operation with generated requests, signed with real Bitget and WhiteBIT keys
  so that the private routes run past authentication: no 5xx, and every answer's status, content type,
  headers and body are the document's;
- ``/docs`` loads only this server's files, each with its content type, and renders in a real chromium
  that cannot reach any other host;
- the vendored Swagger UI files are the published ones (checksums in ``static/VENDORED.md``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import Server, make_server
from keyplane.openapi import pages

TOKEN = "openapi-test-verify-token-0123456789"
LIFTED = "100000/second"
# Rate limits lifted and caps raised: generated requests should reach the routes' own rules, not 429 or
# "limit reached" after the first few (both are still in the document and checked when they occur).
POLICY = {
    "bitget": {
        "default_rate_limit": LIFTED,
        "rate_limits": {
            name: LIFTED for name in (
                "batch-create-subaccount-and-apikey", "create-virtual-subaccount", "modify-virtual-subaccount",
                "create-virtual-subaccount-apikey", "modify-virtual-subaccount-apikey", "virtual-subaccount-list",
                "virtual-subaccount-apikey-list", "account-info",
            )
        },
        "sub_accounts_per_main": 100_000,
        "keys_per_sub_account": 1_000,
    },
    "whitebit": {"default_rate_limit": LIFTED, "sub_accounts_per_main": 100_000, "keys_per_sub_account": 1_000},
}
CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
    response_schema_conformance,
]
SIGNED_EXAMPLES = 10  # per operation: 40 operations in about a minute on a loaded machine
UNSIGNED_EXAMPLES = 2


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(
        tmp_path_factory.mktemp("openapi"),
        {"KEYPLANE_VERIFY_TOKEN": TOKEN, "KEYPLANE_POLICY": json.dumps(POLICY)},
    )
    srv.start()
    uid = srv.main_account("openapi")
    srv.extra["bitget"] = srv.bitget_main_key(uid)
    srv.extra["whitebit"] = srv.whitebit_main_key(uid, "--key-type", "2")
    srv.extra["operator"] = srv.cli("tokens", "create", "--scope", "all", "--name", "openapi")["token"]
    srv.extra["known"] = _known_objects(srv, uid)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def document(live: Server) -> dict[str, Any]:
    response = httpx.get(live.base_url + "/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return dict(response.json())


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"
    schemes = document["components"]["securitySchemes"]
    assert {s["name"] for s in schemes.values() if s["type"] == "apiKey"} == {
        "ACCESS-KEY", "ACCESS-SIGN", "ACCESS-TIMESTAMP", "ACCESS-PASSPHRASE",
        "X-TXC-APIKEY", "X-TXC-PAYLOAD", "X-TXC-SIGNATURE",
    }
    create = document["paths"]["/api/v2/user/create-virtual-subaccount-apikey"]["post"]
    assert create["security"] == [
        {"BitgetAccessKey": [], "BitgetAccessSign": [], "BitgetAccessTimestamp": [], "BitgetAccessPassphrase": []}
    ]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BitgetCreateApiKey"
    }
    # the rate limit in the description is the server's own policy, not a copy
    assert f"Rate limit: {LIFTED}" in create["description"]


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def test_every_routed_path_is_documented_and_nothing_else(live: Server, document: dict[str, Any]) -> None:
    """The tables the server routes by (built here in-process on the same database and settings) are
    exactly the document's operations."""
    from keyplane.app import create_app
    from keyplane.config import Settings
    from keyplane.dialects import native

    env = {k: v for k, v in live.env.items() if k.startswith("KEYPLANE")}
    env["KEYPLANE_DATABASE_URL"] = live.database_url
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        from keyplane.runtime import build_runtime

        settings_ = Settings.from_env()
        runtime = build_runtime(settings_)
    try:
        app = create_app(settings_, runtime)
        # every mounted handler belongs to a documented surface
        assert {handler.__self__ for _prefix, handler, *_ in app.mounts} <= set(app.documented)  # type: ignore
        routed = {("GET", path) for path in app.own} | {("POST", native.VERIFY), ("POST", native.NOOP)}
        for surface in app.documented:
            table = getattr(surface, "routes", None)
            if isinstance(table, dict):  # Bitget: (method, path); WhiteBIT: path (every route a POST)
                routed |= {key if isinstance(key, tuple) else ("POST", key) for key in table}
            elif table is not None:  # the management API: Route objects
                routed |= {(route.method, route.path) for route in table}
        assert routed == _operations(document)
    finally:
        runtime.close()


def test_the_live_server_answers_every_documented_operation(live: Server, document: dict[str, Any]) -> None:
    """Unsigned, every documented operation gets its route's own answer (an auth refusal or the page), never
    the router's "no such route"; an undocumented path gets that one."""
    def router_miss(response: httpx.Response) -> bool:
        if response.status_code != 404:
            return False
        body = response.json()
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        return body in (
            {"code": 404, "message": "Not found"}, {"code": "NOT_FOUND", "message": "Not found"},
            {"message": "Not found"},
        ) or body.get("code") == "40404" or error.get("code") == "not_found"

    def token_for(path: str) -> str:
        # /v1/ checks its token before it routes: the verify token, or an operator token for management
        return TOKEN if path.startswith("/v1/verify") or path.startswith("/v1/noop") else live.extra["operator"]

    with httpx.Client(base_url=live.base_url) as http:
        for method, path in sorted(_operations(document)):
            target = re.sub(r"\{\w+\}", "1", path)
            headers = {"Authorization": f"Bearer {token_for(path)}"} if path.startswith("/v1/") else {}
            response = http.request(method, target, content=b"{}" if method == "POST" else None, headers=headers)
            assert not router_miss(response), (method, path, response.text)
        for method, path in [("GET", "/docs/index.html"), ("GET", "/openapi.yaml"), ("POST", "/v1/nope"),
                             ("POST", "/api/v4/sub-account/nope"), ("GET", "/api/v2/user/nope")]:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            assert router_miss(http.request(method, path, headers=headers)), path
        assert http.post("/health").status_code == 405
        assert http.post("/health").headers["allow"] == "GET, HEAD"


# schemathesis -----------------------------------------------------------------------------------------


class BitgetSigner(requests.auth.AuthBase):
    """Signs the request as sent: Bitget's HMAC over timestamp, method, path, query and the exact body."""

    def __init__(self, key: dict[str, Any]) -> None:
        self.key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        timestamp = str(int(time.time() * 1000))
        prehash = (timestamp + str(request.method) + str(request.path_url)).encode() + body
        signature = base64.b64encode(hmac.new(self.key["secretKey"].encode(), prehash, hashlib.sha256).digest())
        request.headers.update({
            "ACCESS-KEY": self.key["apiKey"], "ACCESS-SIGN": signature.decode(), "ACCESS-TIMESTAMP": timestamp,
            "ACCESS-PASSPHRASE": self.key["passphrase"],
        })
        return request


class WhitebitSigner(requests.auth.AuthBase):
    """Puts the path and a fresh nonce in the body (as a client does), then signs the body as sent."""

    def __init__(self, key: dict[str, Any]) -> None:
        self.key = key
        self.nonces = itertools.count(int(time.time() * 1000))

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        raw = request.body or b"{}"
        try:
            fields = json.loads(raw)
        except ValueError:
            fields = None
        if isinstance(fields, dict):
            nonce = max(next(self.nonces), int(time.time() * 1000))
            fields.update(request=request.path_url.partition("?")[0], nonce=nonce)
            raw = json.dumps(fields, separators=(",", ":")).encode()
            request.body = raw
            request.headers["Content-Length"] = str(len(raw))
        payload = base64.b64encode(raw if isinstance(raw, bytes) else raw.encode()).decode()
        request.headers.update({
            "X-TXC-APIKEY": self.key["apiKey"], "X-TXC-PAYLOAD": payload,
            "X-TXC-SIGNATURE": hmac.new(self.key["apiSecret"].encode(), payload.encode(), hashlib.sha512).hexdigest(),
        })
        return request


class BearerToken(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def _signer(live: Server, security: list[dict[str, Any]]) -> requests.auth.AuthBase | None:
    names = {name for requirement in security for name in requirement}
    if "BitgetAccessKey" in names:
        return BitgetSigner(live.extra["bitget"])
    if "WhitebitApiKey" in names:
        return WhitebitSigner(live.extra["whitebit"])
    if "VerifyToken" in names:
        return BearerToken(TOKEN)
    if "OperatorToken" in names:
        return BearerToken(live.extra["operator"])
    return None


def _known_objects(srv: Server, main_uid: str) -> dict[str, str]:
    """A sub-account and a key in each dialect, and a spare main account: what generated requests name half
    of the time (``_aim``), so that the routes that act on an object run past "not found" too."""
    with requests.Session() as http:
        def call(method: str, path: str, auth: requests.auth.AuthBase, body: Any) -> Any:
            response = http.request(method, srv.base_url + path, json=body, auth=auth, timeout=30)
            assert response.status_code in (200, 201), response.text
            return response.json()

        bitget, whitebit = BitgetSigner(srv.extra["bitget"]), WhitebitSigner(srv.extra["whitebit"])
        made = call("POST", "/api/v2/user/create-virtual-subaccount", bitget, {"subAccountList": ["openapiz"]})
        sub_uid = made["data"]["successList"][0]["subaAccountUid"]
        key = call("POST", "/api/v2/user/create-virtual-subaccount-apikey", bitget, {
            "subAccountUid": sub_uid, "passphrase": "openapi123", "label": "openapi", "permList": ["read"],
        })["data"]
        sub = call("POST", "/api/v4/sub-account/create", whitebit, {
            "alias": "openapi-sub", "email": "openapi@example.com",
            "permissions": {"spotEnabled": True, "collateralEnabled": False},
        })
        wb_key = call("POST", "/api/v4/sub-account/api-key/create", whitebit, {
            "subAccountId": sub["id"], "title": "openapi", "type": 1,
        })
        # what the deleting routes may delete
        victims = call("POST", "/api/v2/user/create-virtual-subaccount", bitget, {"subAccountList": ["openapiv"]})
        victim_sub = call("POST", "/api/v4/sub-account/create", whitebit, {
            "alias": "openapi-victim", "shareKyc": True,
            "permissions": {"spotEnabled": True, "collateralEnabled": False},
        })
        victim_key = call("POST", "/api/v4/sub-account/api-key/create", whitebit, {
            "subAccountId": sub["id"], "title": "victim", "type": 1,
        })
    return {
        "main_uid": main_uid, "spare_main_uid": srv.main_account("openapi-spare"),
        "bitget_sub_uid": sub_uid, "bitget_sub_key": key["subAccountApiKey"], "bitget_passphrase": "openapi123",
        "whitebit_sub_id": sub["id"], "whitebit_key_id": wb_key["id"],
        "victim_main_uid": srv.main_account("openapi-victim"),
        "victim_bitget_sub_uid": victims["data"]["successList"][0]["subaAccountUid"],
        "victim_whitebit_sub_id": victim_sub["id"], "victim_whitebit_key_id": victim_key["id"],
    }


# requests that delete what they name: aimed at objects made for them, so later routes still find theirs
_DESTROYS = re.compile(r"^DELETE |/sub-account/delete$|/api-key/delete$")


def _aim(case: Any, known: dict[str, str]) -> None:
    """Points a generated request at objects that exist: ids, UIDs, the key's passphrase, an IP address."""
    path = case.operation.path
    if _DESTROYS.search(f"{case.operation.method.upper()} {path}"):
        known = {
            **known, "spare_main_uid": known["victim_main_uid"], "bitget_sub_uid": known["victim_bitget_sub_uid"],
            "whitebit_sub_id": known["victim_whitebit_sub_id"], "whitebit_key_id": known["victim_whitebit_key_id"],
        }
    fields = {
        "subAccountUid": known["bitget_sub_uid"], "subAccountApiKey": known["bitget_sub_key"],
        "subAccountId": known["whitebit_sub_id"], "apiKeyId": known["whitebit_key_id"],
        "main_uid": known["main_uid"], "account_uid": known["bitget_sub_uid"],
    }
    if path.endswith("modify-virtual-subaccount-apikey"):
        fields["passphrase"] = known["bitget_passphrase"]
    if "/ip-address/" in path:
        fields["ip"] = "203.0.113.9"
    if path.startswith("/api/v4/sub-account/") and "/api-key/" not in path:
        fields["id"] = known["whitebit_sub_id"]
    bodies = case.body if isinstance(case.body, list) else [case.body]
    for body in [*bodies, case.query]:
        if isinstance(body, dict):
            body.update({name: value for name, value in fields.items() if name in body})
    if case.path_parameters:
        case.path_parameters.update(
            uid=known["spare_main_uid"] if path.startswith("/v1/accounts/") else known["bitget_sub_uid"],
            id=known["whitebit_key_id"],
        )
        for name in list(case.path_parameters):
            if name not in re.findall(r"\{(\w+)\}", path):
                del case.path_parameters[name]


def _drive(
    operation: Any, auth: requests.auth.AuthBase | None, examples: int, base_url: str, session: requests.Session,
    statuses: dict[str, set[int]], known: dict[str, str] | None = None,
) -> None:
    aimed = itertools.count()

    @given(case=operation.as_strategy())
    @settings(
        max_examples=examples, deadline=None, database=None, derandomize=True,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        if known is not None and next(aimed) % 2:
            _aim(case, known)
        response = case.call(base_url=base_url, session=session, auth=auth, timeout=30)
        statuses.setdefault(operation.label, set()).add(response.status_code)
        case.validate_response(response, checks=CHECKS)  # raises schemathesis' report of the first mismatch

    run()


def test_schemathesis_every_answer_matches_the_document(live: Server, document: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_dict(document)
    statuses: dict[str, set[int]] = {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            item = document["paths"][operation.path][operation.method.lower()]
            signer = _signer(live, item["security"])
            _drive(operation, signer, SIGNED_EXAMPLES, live.base_url, session, statuses, live.extra["known"])
            # the document's own example, as is (a generated /v1/verify call rarely names a path at all)
            for media_type, content in item.get("requestBody", {}).get("content", {}).items():
                if "example" in content:
                    case = operation.Case(body=content["example"], media_type=media_type)
                    response = case.call(base_url=live.base_url, session=session, auth=signer, timeout=30)
                    statuses.setdefault(operation.label, set()).add(response.status_code)
                    case.validate_response(response, checks=CHECKS)
            if signer is not None:
                _drive(operation, None, UNSIGNED_EXAMPLES, live.base_url, session, statuses)
    # signed requests got past authentication on every route, and did what they asked on most
    for label, seen in statuses.items():
        assert seen - {401}, (label, seen)
    done = {label for label, seen in statuses.items() if seen & {200, 201}}
    undone = {label for label in statuses if label not in done and not _NOT_AVAILABLE.search(label)}
    assert len(undone) <= len(statuses) // 4, sorted(undone)
    for label in [
        "POST /api/v2/user/create-virtual-subaccount", "POST /api/v2/user/batch-create-subaccount-and-apikey",
        "POST /api/v2/user/create-virtual-subaccount-apikey", "POST /api/v2/user/modify-virtual-subaccount-apikey",
        "GET /api/v2/user/virtual-subaccount-list", "GET /api/v2/spot/account/info",
        "POST /api/v4/sub-account/create", "POST /api/v4/sub-account/list", "POST /api/v4/sub-account/api-key/create",
        "POST /api/v4/sub-account/api-key/list", "POST /v1/verify", "GET /health",
        "GET /v1/accounts", "GET /v1/keys", "GET /v1/audit-events", "POST /v1/accounts",
    ]:
        assert label in done, (label, statuses.get(label))


# WhiteBIT routes that answer only their 404 once verified (keyplane holds no funds)
_NOT_AVAILABLE = re.compile(r"sub-account/(transfer|balances|kyc-url|withdraw)")


# /docs ------------------------------------------------------------------------------------------------


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(str(values[name]))
        self._in_script = tag == "script" and not values.get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def test_docs_reference_only_this_servers_files(live: Server) -> None:
    with httpx.Client(base_url=live.base_url) as http:
        page = http.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        refs = _References()
        refs.feed(page.text)
        assert refs.inline_scripts == 0
        assert refs.urls, "the page loads nothing"
        for url in refs.urls:
            assert url.startswith("/docs/") and "//" not in url, url
            name = url.removeprefix("/docs/")
            response = http.get(url)
            assert response.status_code == 200, url
            assert response.headers["content-type"] == pages.ASSETS[name], url
            assert response.headers["x-content-type-options"] == "nosniff"
        # the document it loads is this server's own
        script = http.get("/docs/docs.js").text
        assert re.findall(r'url:\s*"([^"]*)"', script) == ["/openapi.json"]
        assert "http" not in script.replace("https://", "").split("//")[0]
        for name, content_type in pages.ASSETS.items():
            response = http.get("/docs/" + name)
            assert response.headers["content-type"] == content_type, name


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (scripts/test-deps)")
def test_docs_render_offline_in_chromium(live: Server, tmp_path: Path) -> None:
    """Every host but this server's address resolves to nothing: the page must render from its own files."""
    out = subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000", "--dump-dom", live.base_url + "/docs",
        ],
        capture_output=True, text=True, timeout=120,
    )
    dom = out.stdout
    assert 'class="swagger-ui' in dom, out.stderr[-2000:]
    # the operations are rendered (tags and summaries come from the document)
    for text in ("Bitget v2", "WhiteBIT v4", "Create virtual sub-accounts", "/api/v4/sub-account/api-key/reset"):
        assert text in dom, text


def test_vendored_files_are_the_published_ones() -> None:
    static = resources.files("keyplane.openapi").joinpath("static")
    listed = re.findall(r"^([0-9a-f]{64})  (\S+)$", static.joinpath("VENDORED.md").read_text(), re.M)
    assert {name for _, name in listed} >= {"swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"}
    for digest, name in listed:
        assert hashlib.sha256(static.joinpath(name).read_bytes()).hexdigest() == digest, name


# the generator ----------------------------------------------------------------------------------------


def test_a_route_without_its_declaration_is_a_logged_500_not_a_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route served undocumented cannot slip into a document: the build fails, /openapi.json answers a
    JSON 500 (logged), and the rest of the server goes on."""
    import asyncio

    from keyplane.app import create_app
    from keyplane.config import Settings
    from keyplane.dialects import bitget_wire
    from keyplane.runtime import build_runtime

    monkeypatch.setenv("KEYPLANE_DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
    settings_ = Settings.from_env()
    runtime = build_runtime(settings_)
    try:
        app = create_app(settings_, runtime)
        monkeypatch.delitem(bitget_wire.DOCS, "virtual-subaccount-list")
        from keyplane.dialects.bitget import BitgetDialect

        (bitget,) = [surface for surface in app.documented if isinstance(surface, BitgetDialect)]
        with pytest.raises(KeyError, match="virtual-subaccount-list"):
            bitget.operations()

        async def get(path: str) -> tuple[int, bytes]:
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b""}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "headers": [],
                     "query_string": b"", "client": ("127.0.0.1", 1)}
            await app(scope, receive, send)
            return sent[0]["status"], sent[1]["body"]

        assert asyncio.run(get("/openapi.json")) == (500, b'{"code":500,"message":"internal error"}')
        assert asyncio.run(get("/health"))[0] == 200
    finally:
        runtime.close()


def test_one_route_declared_twice_is_refused() -> None:
    from keyplane.openapi import Body, Operation, build_document

    op = Operation("GET", "/x", "x", "X", "T", {200: Body("ok")})
    with pytest.raises(ValueError, match="declared twice"):
        build_document([op, op])
