"""The web console (``/console``) attacked over HTTP on one live ``keyplane serve``: markup in every name,
label and audit detail an operator can set through the native API, rendered on every page; forms posted
without their CSRF token, with another session's, from another origin or after sign-out; every action
posted by a token without its scope; session fixation, cookie flags, the framing headers on every answer,
the redirect after a failed action, and queries no browser sends. A refusal changes nothing in the store."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import Server, make_server
from native_api_helpers import Api, make_token

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
XSS = '<script>alert(1)</script>"\'&'
TABLES = ("accounts", "api_keys", "audit_events", "operator_tokens")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("console-attacks"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tokens(server: Server) -> dict[str, str]:
    return {scope: make_token(server.database_url, scope, name=f"<b>{scope}</b>")[0]
            for scope in ("all", "read", "accounts", "keys", "audit")}


@pytest.fixture(scope="module")
def world(server: Server, tokens: dict[str, str]) -> dict[str, Any]:
    """Objects whose every free-text field holds markup, made through the native API."""
    api = Api(server.base_url, tokens["all"])
    main = api.ok("POST", "/v1/accounts", {"name": XSS}, status=201)
    sub = api.ok("POST", "/v1/sub-accounts", {"main_uid": main["uid"], "dialect": "bitget", "name": "xsssub",
                                              "label": "<img src=x onerror=1"}, status=201)
    key = api.ok("POST", "/v1/keys", {"account_uid": main["uid"], "dialect": "bitget",
                                      "label": "<svg/onload=alert()>"}, status=201)["key"]
    sub_key = api.ok("POST", "/v1/keys", {"account_uid": sub["uid"], "dialect": "whitebit",
                                          "label": "</textarea><x>"}, status=201)["key"]
    api.ok("PATCH", f"/v1/keys/{key['id']}", {"label": "<i>relabel</i>"})
    api.close()
    return {"main": main, "sub": sub, "key": key, "sub_key": sub_key}


def snapshot(server: Server) -> dict[str, list[tuple[Any, ...]]]:
    """What the store holds, but the audit events of console sign-ins and sign-outs (the tests sign in)."""
    path = server.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        tables = {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}
        if "audit_events" in tables:
            tables["audit_events"] = sorted(db.execute(
                "SELECT * FROM audit_events WHERE action NOT IN ('console.signin', 'console.signout')"
            ).fetchall(), key=repr)
    return tables


class Browser:
    def __init__(self, server: Server) -> None:
        self.http = httpx.Client(base_url=server.base_url, timeout=30, follow_redirects=False)
        self.csrf = ""

    def sign_in(self, token: str) -> httpx.Response:
        page = self.http.get("/console/signin")
        response = self.http.post("/console/signin", data={"csrf": CSRF.search(page.text)[1], "token": token})
        assert response.status_code == 303, response.text
        self.refresh()
        return response

    def refresh(self) -> None:
        page = self.http.get("/console/accounts")
        found = CSRF.search(page.text)
        self.csrf = found[1] if found else ""

    def post(self, path: str, data: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
        return self.http.post(path, data={"csrf": self.csrf, **(data or {})}, headers=headers)

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def admin(server: Server, tokens: dict[str, str]) -> Iterator[Browser]:
    browser = Browser(server)
    browser.sign_in(tokens["all"])
    yield browser
    browser.close()


def pages(world: dict[str, Any]) -> list[str]:
    main, sub = world["main"]["uid"], world["sub"]["uid"]
    return [
        "/console/accounts", f"/console/accounts?q={XSS}", f"/console/accounts/{main}", f"/console/accounts/{sub}",
        f"/console/accounts/{main}/delete", f"/console/accounts/{sub}/delete",
        f"/console/keys/{world['key']['api_key']}/delete", f"/console/keys/{world['sub_key']['api_key']}/delete",
        f"/console/keys/{world['key']['api_key']}/rotate",
        "/console/audit", f"/console/audit?action={XSS}&target={XSS}&token={XSS}", "/console/verification",
        f"/console/accounts/{main}?page=2", "/console/nope", "/console/accounts/999999999",
    ]


def assert_framing_refused(response: httpx.Response) -> None:
    assert response.headers["x-frame-options"] == "DENY", response.headers
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_markup_in_names_labels_and_audit_detail_is_escaped_on_every_page(
    admin: Browser, world: dict[str, Any]
) -> None:
    seen_escaped = 0
    for path in pages(world):
        response = admin.http.get(path)
        assert response.status_code < 500, (path, response.status_code)
        text = response.text
        for raw in ("<script>alert", "<img src=x", "<svg/onload", "</textarea><x>", "<i>relabel", "<b>all</b>"):
            assert raw not in text, (path, raw)
        seen_escaped += text.count("&lt;script&gt;alert(1)&lt;/script&gt;")
        assert_framing_refused(response)
    assert seen_escaped >= 5  # the name shows, escaped, on the lists, the account pages and the audit


def test_a_flash_message_carrying_a_name_is_escaped(admin: Browser, world: dict[str, Any]) -> None:
    main = world["main"]["uid"]
    response = admin.post(f"/console/accounts/{main}/freeze")
    assert response.status_code == 303
    page = admin.http.get(response.headers["location"])
    assert "<script>alert" not in page.text and "&lt;script&gt;" in page.text
    admin.post(f"/console/accounts/{main}/unfreeze")


def test_every_answer_refuses_framing(server: Server, admin: Browser) -> None:
    anonymous = httpx.Client(base_url=server.base_url, follow_redirects=False)
    for response in (anonymous.get("/console/signin"), anonymous.get("/console/accounts"),
                     anonymous.post("/console/accounts/1/freeze"), admin.http.get("/console/nope"),
                     admin.http.post("/console/accounts/1/freeze", data={"csrf": "x"}),
                     anonymous.post("/console/signin", content=b"\xff", headers={"content-type": "text/plain"})):
        assert_framing_refused(response)
    anonymous.close()


def actions(world: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every action the console posts to, with the scope that may do it."""
    main, sub = world["main"]["uid"], world["sub"]["uid"]
    key = world["key"]["api_key"]
    return [
        ("accounts", f"/console/accounts/{main}/freeze", {}), ("accounts", f"/console/accounts/{sub}/unfreeze", {}),
        ("accounts", f"/console/accounts/{main}/subaccounts", {"name": "csrfsub", "dialect": "bitget"}),
        ("accounts", f"/console/accounts/{sub}/delete", {}), ("accounts", f"/console/accounts/{main}/delete", {}),
        ("keys", f"/console/accounts/{main}/keys", {"dialect": "bitget", "permission": "read"}),
        ("keys", f"/console/keys/{key}/disable", {}), ("keys", f"/console/keys/{key}/enable", {}),
        ("keys", f"/console/keys/{key}/rotate", {"grace": "1h"}),
        ("keys", f"/console/keys/{key}/expiry", {"expires_in": "30d"}),
        ("keys", f"/console/keys/{key}/delete", {}),
    ]


def test_forms_without_their_csrf_token_or_from_elsewhere_change_nothing(
    server: Server, tokens: dict[str, str], admin: Browser, world: dict[str, Any]
) -> None:
    other = Browser(server)
    other.sign_in(tokens["all"])
    before = snapshot(server)
    for _scope, path, data in actions(world):
        for csrf, headers in (
            (None, {}), ("", {}), ("x" * 43, {}), (other.csrf, {}), (admin.csrf[:-1], {}),
            (admin.csrf + "x", {}),
            (admin.csrf, {"origin": "http://evil.example"}), (admin.csrf, {"origin": server.base_url + ".evil"}),
        ):
            form = {**data, **({"csrf": csrf} if csrf is not None else {})}
            response = admin.http.post(path, data=form, headers=headers)
            assert response.status_code == 403, (path, csrf, headers, response.status_code)
        # the right token in a GET query does nothing either
        assert admin.http.get(path, params={**data, "csrf": admin.csrf}).status_code in (404, 405, 200)
    assert snapshot(server) == before
    other.close()


def test_every_action_refuses_a_token_without_its_scope(
    server: Server, tokens: dict[str, str], world: dict[str, Any]
) -> None:
    before = snapshot(server)
    refused = 0
    for scope in ("read", "audit", "accounts", "keys"):
        browser = Browser(server)
        browser.sign_in(tokens[scope])
        for may, path, data in actions(world):
            if may == scope:
                continue
            response = browser.post(path, data)
            assert response.status_code == 403, (scope, path, response.status_code)
            refused += 1
        browser.close()
    assert snapshot(server) == before
    assert refused == 11 * 2 + 4 + 7  # read and audit: every action; accounts: the keys'; keys: the accounts'


def test_sign_in_makes_a_new_session_and_sign_out_forgets_it(server: Server, tokens: dict[str, str]) -> None:
    browser = Browser(server)
    page = browser.http.get("/console/signin")
    before = browser.http.cookies["keyplane_console"]
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    pre_csrf = CSRF.search(page.text)[1]
    # a pre-sign-in (fixated) cookie opens nothing
    with httpx.Client(base_url=server.base_url, cookies={"keyplane_console": before}) as fixated:
        assert fixated.get("/console/accounts").status_code == 303
    browser.http.post("/console/signin", data={"csrf": pre_csrf, "token": tokens["all"]})
    after = browser.http.cookies["keyplane_console"]
    assert after != before
    browser.refresh()
    assert browser.csrf and browser.csrf != pre_csrf  # the CSRF token changes at sign-in
    old_csrf = browser.csrf
    signed_out = browser.post("/console/signout")
    assert signed_out.status_code == 303 and "Max-Age=0" in signed_out.headers["set-cookie"]
    # the signed-out browser's old CSRF token opens nothing
    response = browser.http.post("/console/accounts/1/freeze", data={"csrf": old_csrf})
    assert response.status_code == 401
    # a pre-sign-in cookie fixated on another browser cannot sign in with the victim's session's csrf
    attacker = Browser(server)
    attacker.http.get("/console/signin")
    response = attacker.http.post("/console/signin", data={"csrf": pre_csrf, "token": tokens["all"]})
    assert response.status_code == 403
    browser.close()
    attacker.close()


def test_a_failed_action_goes_back_to_this_console_never_another_site(
    server: Server, admin: Browser, world: dict[str, Any]
) -> None:
    host = server.base_url.removeprefix("http://")
    missing = "/console/accounts/999999999/freeze"
    for referer, host_header in (
        ("http://evil.example/console/accounts", None),
        (f"http://{host}.evil.example/console/accounts", None),
        (f"http://{host}@evil.example/console/accounts", None),
        ("//evil.example/console/", None),
        (f"http://{host}/console//evil.example", None),
        (f"http://{host}/console/\\evil.example", None),
        ("http://evil.example/console/x", "evil.example"),
    ):
        headers = {"referer": referer, **({"host": host_header} if host_header else {})}
        response = admin.http.post(missing, data={"csrf": admin.csrf}, headers=headers)
        if response.status_code == 403:  # a forged Host fails the origin check first: fine
            continue
        assert response.status_code == 303, (referer, response.status_code)
        location = response.headers["location"]
        # a path on this origin (a browser reads "//host" as another site: this never starts so)
        assert location.startswith("/console/"), (referer, location)


def test_queries_and_forms_no_browser_sends_are_4xx(admin: Browser, world: dict[str, Any]) -> None:
    main = world["main"]["uid"]
    for path in ("/console/accounts?page=%C2%B2", f"/console/accounts/{main}?page=%C2%B2", "/console/accounts?page=-1",
                 "/console/accounts?page=99999999999999999999", "/console/audit?before=%C2%B2",
                 "/console/audit?before=99999999999999999999", "/console/audit?since=%C2%B2",
                 "/console/audit?account=%EF%BC%91", "/console/accounts?q=%00", "/console/accounts?q=%ff",
                 "/console/audit?since=99999-01-01", "/console/accounts/" + "9" * 18,
                 "/console/keys/" + "a" * 128 + "/delete"):
        response = admin.http.get(path)
        assert response.status_code < 500, (path, response.status_code)
    for data in ({"name": "x" * 100, "dialect": "bitget"}, {"name": "\u202e", "dialect": "nope"},
                 {"name": "ok", "dialect": "bitget", "label": "\x01"}):
        response = admin.post(f"/console/accounts/{main}/subaccounts", data)
        assert response.status_code < 500, (data, response.status_code)


def forged_cookie(server: Server, token_id: str, *, started: int, seen: int, context: str | None = None) -> str:
    """A session cookie sealed with the server's own master key (only the holder of that key can make one)."""
    from keyplane.console.sessions import Session, Sessions
    from keyplane.crypto import MasterKey, read_key_file

    keys = MasterKey.from_text(read_key_file(server.workdir / "keyplane.db.master-key"))
    sessions = Sessions(lambda: keys, idle_seconds=15 * 60)
    value = sessions.encode(Session(token_id=token_id, csrf="c" * 43, started=started, seen=seen))
    if context is not None:  # the same payload sealed for another purpose (as a key's secret is)
        import base64

        payload = keys.unseal(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "keyplane console session v1")
        value = base64.urlsafe_b64encode(keys.seal(payload, context)).decode().rstrip("=")
    return value


def test_idle_old_future_altered_and_resealed_sessions_open_nothing(server: Server, tokens: dict[str, str],
                                                                    world: dict[str, Any]) -> None:
    admin = Browser(server)
    admin.sign_in(tokens["all"])
    good = admin.http.cookies["keyplane_console"]
    token_id = next(t for t in _token_ids(server) if t[1] == "<b>all</b>")[0]
    now = int(time.time())
    cookies = {
        "idle": forged_cookie(server, token_id, started=now - 20 * 60, seen=now - 15 * 60 - 5),
        "too old": forged_cookie(server, token_id, started=now - 13 * 3600, seen=now - 10),
        "future": forged_cookie(server, token_id, started=now, seen=now + 3600),
        "another token id": forged_cookie(server, "tok_0000000000000000", started=now, seen=now),
        "another purpose": forged_cookie(server, token_id, started=now, seen=now, context=token_id),
        "altered": good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1],
        "truncated": good[:40],
        "huge": good * 3,
    }
    fresh = forged_cookie(server, token_id, started=now, seen=now)
    with httpx.Client(base_url=server.base_url, cookies={"keyplane_console": fresh}) as control:
        assert control.get("/console/accounts").status_code == 200  # the forging itself is right
    before = snapshot(server)
    for what, value in cookies.items():
        with httpx.Client(base_url=server.base_url, cookies={"keyplane_console": value}) as http:
            page = http.get("/console/accounts")
            assert page.status_code == 303 and page.headers["location"].startswith("/console/signin"), what
            action = http.post(f"/console/accounts/{world['main']['uid']}/freeze", data={"csrf": "c" * 43})
            assert action.status_code in (401, 403), (what, action.status_code)
    assert snapshot(server) == before
    admin.close()


def _token_ids(server: Server) -> list[tuple[str, str]]:
    path = server.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT id, name FROM operator_tokens"))
