"""The web console in real headless Chromium (Debian's ``chromium``, driven by Playwright) against a real
``keyplane serve``: an operator signs in, makes a sub-account and a key, reads the secret off the page and
signs with it in ccxt against the same server, rotates it (both secrets sign during the grace period), gives
it an expiry, turns it off and on, deletes it, finds every step in the
audit view, and signs out; a wrong token, a missing scope and a forged form are refused.

Every page is saved as a screenshot at 1280 px and at a phone's width (``SCREENSHOTS``, a temporary folder
printed at the end of the module), and no page may log a console error. One browser for the module.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ccxt
import pytest
from playwright import sync_api as playwright_api

from conftest import Server, make_server

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}  # a phone's CSS pixels


@dataclass
class Operator:
    server: Server
    browser: Any
    shots: Path
    main_uid: str = ""
    main_name: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (scripts/test-deps installs it)")
    server = make_server(tmp_path_factory.mktemp("console"))
    server.start()
    shots = tmp_path_factory.mktemp("console-screenshots")
    with playwright_api.sync_playwright() as playwright:
        # --no-sandbox: the suite runs as root in CI, where Chromium's sandbox will not start
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        operator = Operator(server, browser, shots)
        operator.main_name = "venue-" + uuid.uuid4().hex[:6]
        operator.main_uid = server.main_account(operator.main_name)
        for scope in ("all", "read", "audit"):
            made = server.cli("tokens", "create", "--scope", scope, "--name", f"{scope}-ops")
            operator.tokens[scope], operator.token_ids[scope] = made["token"], made["id"]
        yield operator
        browser.close()
    server.stop()
    print(f"\nconsole screenshots: {shots}")


class Tab:
    """A browser context at one viewport, its console errors collected; ``shot`` saves the page."""

    def __init__(self, operator: Operator, viewport: dict[str, int], name: str, **options: Any) -> None:
        self.operator = operator
        self.name = name
        self.context = operator.browser.new_context(viewport=viewport, base_url=operator.server.base_url, **options)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def shot(self, what: str) -> None:
        self.page.screenshot(path=str(self.operator.shots / f"{self.name}-{what}.png"), full_page=True)
        # usable at this width: nothing pushes the page wider than the screen (tables scroll in their box)
        overflow = self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{what} is {overflow} px wider than the {self.name} viewport"

    def sign_in(self, token: str) -> None:
        self.page.goto("/console")
        assert self.page.url.endswith("/console/signin")
        self.page.get_by_label("Operator token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()

    def flash(self) -> str:
        return str(self.page.locator(".flash").inner_text())

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], f"console errors on the {self.name} pages: {self.errors}"


def bitget(server: Server, api_key: str, secret: str, passphrase: str) -> ccxt.bitget:
    exchange = ccxt.bitget({"apiKey": api_key, "secret": secret, "password": passphrase, "timeout": 20_000,
                            "enableRateLimit": False})
    for group in list(exchange.urls["api"]):
        exchange.urls["api"][group] = server.base_url
    return exchange


def test_an_operator_manages_a_key_end_to_end_and_finds_each_step_in_the_audit(console: Operator) -> None:
    tab = Tab(console, WIDE, "wide", permissions=["clipboard-read", "clipboard-write"])
    page = tab.page
    tab.sign_in(console.tokens["all"])
    assert page.url.endswith("/console/accounts")
    page.get_by_label("Name contains").fill(console.main_name)
    page.get_by_role("button", name="Search").click()
    tab.shot("accounts")
    page.get_by_role("link", name=console.main_name).click()

    sub_name = "bot" + uuid.uuid4().hex[:8]
    page.get_by_text("Create a sub-account").click()
    page.get_by_label("Name", exact=True).fill(sub_name)
    page.get_by_role("button", name="Create sub-account").click()
    assert f"Sub-account {sub_name} created" in tab.flash()
    sub_uid = re.search(r"/console/accounts/(\d+)$", page.url)[1]  # type: ignore[index]

    page.get_by_text("Create a key").click()
    page.get_by_label("Bitget v2").check()
    page.get_by_label("Label").fill("console-bot")
    page.get_by_label("spot_trade").check()
    page.get_by_label("read", exact=True).check()
    page.get_by_label("Allowed IPs").fill("127.0.0.1")
    tab.shot("account-new-key-form")
    page.get_by_role("button", name="Create key").click()
    api_key = page.get_by_label("API key", exact=True).input_value()
    secret = page.get_by_label("Secret", exact=True).input_value()
    passphrase = page.get_by_label("Passphrase", exact=True).input_value()
    assert api_key.startswith("bg_") and len(secret) >= 32 and passphrase
    tab.shot("secret")
    page.get_by_role("button", name="Copy secret").click()
    # the copy is a promise: wait for the page to say it is done (a bare read raced it on a busy machine)
    playwright_api.expect(page.locator(".copied")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    secret_url = page.url
    page.get_by_role("button", name="Done").click()  # not yet confirmed: the form does not go
    assert page.url == secret_url
    page.get_by_label("I have saved the secret").check()
    page.get_by_role("button", name="Done").click()
    assert page.url.endswith(f"/console/accounts/{sub_uid}?saved=1")
    assert secret not in page.content()  # shown once: the account page never has it
    tab.shot("subaccount")

    client = bitget(console.server, api_key, secret, passphrase)
    info = client.privateSpotGetV2SpotAccountInfo()["data"]
    assert info["userId"] == sub_uid and str(info["parentId"]) == console.main_uid

    key_card = page.locator(f"#key-{api_key}")
    key_card.get_by_role("link", name="Rotate…").click()
    page.get_by_label("Grace period").fill("1h")
    tab.shot("rotate")
    page.get_by_role("button", name="Rotate").click()
    assert "The previous secret keeps verifying until" in page.locator("main").inner_text()
    assert page.get_by_label("API key", exact=True).input_value() == api_key
    new_secret = page.get_by_label("Secret", exact=True).input_value()
    assert new_secret != secret and page.get_by_label("Passphrase", exact=True).count() == 0  # it keeps its own
    tab.shot("rotated")
    page.get_by_label("I have saved the secret").check()
    page.get_by_role("button", name="Done").click()
    assert "Previous secret" in key_card.inner_text()
    rotated = bitget(console.server, api_key, new_secret, passphrase)
    assert rotated.privateSpotGetV2SpotAccountInfo()["data"]["userId"] == sub_uid
    assert client.privateSpotGetV2SpotAccountInfo()["data"]["userId"] == sub_uid  # the old one, in its grace
    client = rotated

    key_card.get_by_label("Expires in").fill("2h")
    key_card.get_by_role("button", name="Set expiry").click()
    assert "expires at" in tab.flash()
    assert "UTC" in key_card.locator("dt:has-text('Expires') + dd").inner_text()

    key_card.get_by_role("button", name="Disable").click()
    assert f"Key {api_key} disabled." in tab.flash()
    with pytest.raises(ccxt.ExchangeError):
        client.privateSpotGetV2SpotAccountInfo()
    key_card.get_by_role("button", name="Enable").click()
    assert client.privateSpotGetV2SpotAccountInfo()["data"]["userId"] == sub_uid

    key_card.get_by_role("link", name="Delete…").click()
    assert api_key in page.locator("main").inner_text()
    tab.shot("confirm-delete")
    page.get_by_role("button", name="Delete").click()
    assert f"Key {api_key} deleted." in tab.flash()
    with pytest.raises(ccxt.AuthenticationError):
        client.privateSpotGetV2SpotAccountInfo()

    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Target: API key or account UID").fill(api_key)
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.audit tbody tr")
    actions = rows.locator("td:nth-child(2)").all_inner_texts()
    assert actions == ["apikey.revoke", "apikey.enable", "apikey.disable", "apikey.expiry", "apikey.rotate",
                       "apikey.create"]
    # each step is the signed-in token's, from the browser's address
    assert set(rows.locator("td:nth-child(4)").all_inner_texts()) == {f"token {console.token_ids['all']} (all-ops)"}
    assert set(rows.locator("td:nth-child(5)").all_inner_texts()) == {"127.0.0.1"}
    tab.shot("audit")
    page.get_by_label("Target: API key or account UID").fill(sub_uid)
    page.get_by_label("Action (comma-separated)").fill("subaccount.create, subaccount.freeze")
    page.get_by_role("button", name="Filter").click()
    assert rows.locator("td:nth-child(2)").all_inner_texts() == ["subaccount.create"]

    page.get_by_role("link", name="Verification").click()
    totals = dict(zip(page.locator("main table tbody td:nth-child(1)").all_inner_texts(),
                      page.locator("main table tbody td:nth-child(2)").all_inner_texts(), strict=True))
    assert int(totals["VALID"]) >= 4 and int(totals["UNKNOWN_KEY"]) >= 1, totals
    assert page.locator("svg.chart rect").count() >= 2
    tab.shot("verification")

    page.get_by_role("button", name="Sign out").click()
    assert page.url.endswith("/console/signin")
    page.goto("/console/accounts")
    assert page.url.endswith("/console/signin")
    tab.shot("signin")
    tab.sign_in(console.tokens["audit"])
    page.goto(f"/console/audit?token={console.token_ids['all']}&action=console.signin,console.signout")
    assert rows.locator("td:nth-child(2)").all_inner_texts()[:2] == ["console.signout", "console.signin"]
    tab.close()
    log = console.server.log_path.read_text()
    assert f"GET /console/accounts/{sub_uid}" in log  # the server's log is the one read
    for shown_once in (secret, new_secret, passphrase, console.tokens["all"]):
        assert shown_once not in log


def test_every_page_at_a_phone_width_and_by_keyboard(console: Operator) -> None:
    tab = Tab(console, PHONE, "phone", is_mobile=True, has_touch=True)
    page = tab.page
    page.goto("/console")
    tab.shot("signin")
    # the keyboard alone: the token field has the focus, Enter sends the form
    page.keyboard.type(console.tokens["all"])
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/accounts")
    tab.shot("accounts")
    page.goto(f"/console/accounts/{console.main_uid}")
    page.get_by_text("Create a key").click()
    page.get_by_role("button", name="Create key").click()
    assert page.get_by_label("Secret", exact=True).input_value()
    api_key = page.get_by_label("API key", exact=True).input_value()
    tab.shot("secret")
    page.get_by_label("I have saved the secret").check()
    page.get_by_role("button", name="Done").click()
    tab.shot("account")
    page.locator("article.key a", has_text="Delete…").first.click()
    tab.shot("confirm-delete")
    page.goto(f"/console/keys/{api_key}/rotate")
    tab.shot("rotate")
    page.goto("/console/audit")
    tab.shot("audit")
    page.goto("/console/verification")
    tab.shot("verification")
    tab.close()


def test_a_wrong_token_a_missing_scope_and_a_forged_form_are_refused(console: Operator) -> None:
    tab = Tab(console, WIDE, "refused")
    page = tab.page
    tab.sign_in("kpt_" + "x" * 43)
    assert page.get_by_role("alert").inner_text() == "That token is not valid."
    assert page.url.endswith("/console/signin")
    tab.shot("wrong-token")

    tab.sign_in(console.tokens["read"])
    page.goto(f"/console/accounts/{console.main_uid}")
    assert page.get_by_role("button", name="Freeze").count() == 0  # not offered to a read token
    # the form it lacks the scope for, posted anyway with its session's CSRF token
    csrf = page.locator("input[name=csrf]").first.input_value()
    status = page.evaluate(
        """async ([url, csrf]) => (await fetch(url, {method: "POST", body: new URLSearchParams({csrf}),
           redirect: "manual"})).status""",
        [f"/console/accounts/{console.main_uid}/freeze", csrf],
    )
    assert status == 403
    response = page.goto("/console/audit")
    assert response is not None and response.status == 403
    assert "needs the scope audit or all" in page.locator("main").inner_text()
    tab.shot("missing-scope")

    tab.context.clear_cookies()
    tab.sign_in(console.tokens["all"])
    page.goto(f"/console/accounts/{console.main_uid}")
    # a form injected without the CSRF token (as another page could make one): refused, nothing changes
    page.evaluate(
        """(url) => { const form = document.createElement("form"); form.method = "post"; form.action = url;
           document.body.append(form); form.submit(); }""",
        f"/console/accounts/{console.main_uid}/freeze",
    )
    page.wait_for_load_state()
    assert "CSRF" in page.locator("main").inner_text()
    tab.shot("forged-form")
    page.goto(f"/console/accounts/{console.main_uid}")
    assert page.locator("h1 .status").inner_text() == "normal"
    # the refusals above answered 401/403 on purpose; Chromium logs each such answer as a console error
    tab.errors = [e for e in tab.errors if "status of 401" not in e and "status of 403" not in e]
    tab.close()
