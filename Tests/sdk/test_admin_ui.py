"""The admin web UI (/admin/ui/) in a real headless Chromium driven by Selenium: sign in,
create a tenant and a key, call the API with the key, see the usage, revoke the key, see the
call refused. SLUICE_UI_SCREENSHOTS=<folder> saves a screenshot of each step (docs/ui holds
the committed ones)."""
import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from conftest import MARKUP, running_gateway

SCREENSHOTS = os.environ.get("SLUICE_UI_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(
        executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(browser, condition, seconds=20):
    return WebDriverWait(browser, seconds, poll_frequency=0.1).until(condition)


def visible(element_id):
    return expected_conditions.visibility_of_element_located((By.ID, element_id))


def text_of(browser, element_id):
    return browser.find_element(By.ID, element_id).text


def screenshot(browser, name):
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        browser.save_screenshot(os.path.join(SCREENSHOTS, name + ".png"))


def chat(gateway, key):
    """A chat completion with `key`; the HTTP status."""
    request = urllib.request.Request(
        gateway["base_url"] + "/chat/completions", method="POST",
        data=json.dumps({"model": "sdk-model", "messages": [{"role": "user", "content": "hello"}]}).encode(),
        headers={"authorization": "Bearer " + key, "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def sign_in(browser, gateway, token):
    browser.get(gateway["admin_url"] + "/admin/ui/")
    wait(browser, visible("token"))
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "token-sign-in").click()


def test_the_pages_come_with_a_strict_content_security_policy(gateway):
    with urllib.request.urlopen(gateway["admin_url"] + "/admin/ui/", timeout=10) as response:
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        page = response.read().decode()
    assert "<script src=\"/admin/ui/app.js\"" in page and "<script>" not in page, "no inline script"
    with urllib.request.urlopen(gateway["admin_url"] + "/admin/ui/settings.json", timeout=10) as response:
        assert json.load(response) == {"oidc": None}


def test_a_refused_token_stays_on_the_sign_in_page(browser, gateway):
    sign_in(browser, gateway, "not-a-token")
    wait(browser, lambda driver: "refused" in text_of(driver, "notice"))
    assert browser.find_element(By.ID, "sign-in").is_displayed()
    assert not browser.find_element(By.ID, "tenants").is_displayed()


def test_sign_in_create_tenant_and_key_use_it_see_usage_revoke_it(browser, gateway):
    # 1. Sign in with a platform admin token, whose subject is markup: it must stay text
    #    (in the header here, in the audit log below), and its onerror must never run.
    browser.get(gateway["admin_url"] + "/admin/ui/")
    wait(browser, visible("token"))
    screenshot(browser, "1-sign-in")
    sign_in(browser, gateway, gateway["markup_admin_token"])
    wait(browser, visible("tenant-table"))
    assert text_of(browser, "caller").startswith(MARKUP)

    # 2. A tenant, and a key with its secret shown once.
    name = f"ui-{uuid.uuid4().hex[:6]}"
    browser.find_element(By.ID, "tenant-name").send_keys(name)
    browser.find_element(By.ID, "tenant-rpm").send_keys("100")
    browser.find_element(By.ID, "tenant-create").click()
    wait(browser, lambda driver: text_of(driver, "tenant-title") == name)
    assert "Requests per minute" in text_of(browser, "tenant-limits")
    browser.find_element(By.ID, "key-name").send_keys("ui key")
    browser.find_element(By.ID, "key-create").click()
    wait(browser, visible("secret-box"))
    secret = text_of(browser, "secret-value")
    assert secret.startswith("slk_")
    # The copy button, with the clipboard permission a user would grant.
    browser.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": gateway["admin_url"], "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    browser.find_element(By.ID, "secret-copy").click()
    wait(browser, lambda driver: text_of(driver, "notice") == "Copied.")
    assert browser.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], (e) => arguments[0]('unreadable: ' + e))") == secret
    screenshot(browser, "2-key-created")
    browser.find_element(By.ID, "secret-dismiss").click()
    assert text_of(browser, "secret-value") == ""
    assert "ui key" in text_of(browser, "key-table") and "active" in text_of(browser, "key-table")

    # 3. Call the API with the new key.
    assert chat(gateway, secret) == 200

    # 4. The usage shows up (once metered into the ledger) in the table and the chart.
    deadline = time.time() + 60
    while "sdk-model" not in text_of(browser, "usage-table"):
        assert time.time() < deadline, "the call never showed in the usage"
        time.sleep(0.5)
        browser.refresh()
        wait(browser, visible("usage-table"))
    row = [line for line in text_of(browser, "usage-table").splitlines() if "sdk-model" in line][0]
    assert row.split()[2] == "1", row  # day, model, requests
    assert browser.find_elements(By.CSS_SELECTOR, "#usage-chart rect[data-model='sdk-model']")
    screenshot(browser, "3-usage")

    # 5. Revoke the key (confirming the dialog).
    browser.find_element(By.CSS_SELECTOR, "#key-table button[data-action='revoke']").click()
    wait(browser, expected_conditions.alert_is_present()).accept()
    wait(browser, lambda driver: "revoked" in text_of(driver, "key-table"))
    wait(browser, lambda driver: "key.revoke" in text_of(driver, "audit-table"))
    assert "key.create" in text_of(browser, "audit-table") and MARKUP in text_of(browser, "audit-table")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # the subject's onerror never ran
    screenshot(browser, "4-revoked")

    # 6. The key is refused now.
    deadline = time.time() + 10
    while chat(gateway, secret) != 401:
        assert time.time() < deadline, "the revoked key was still accepted"
        time.sleep(0.1)


class IdentityProvider:
    """A minimal OpenID provider on loopback for the UI's sign-in: discovery, an authorize
    endpoint that signs the user in at once (as `groups: ["ops"]`), a token endpoint that checks
    the PKCE verifier and answers an RS256 ID token (signed with openssl), and the key set."""

    def __init__(self, audience):
        self.audience = audience
        self.folder = tempfile.mkdtemp()
        self.key = os.path.join(self.folder, "key.pem")
        subprocess.run(["openssl", "genrsa", "-out", self.key, "2048"], check=True, capture_output=True)
        modulus = subprocess.run(["openssl", "rsa", "-in", self.key, "-noout", "-modulus"], check=True,
                                 capture_output=True, text=True).stdout.strip().split("=", 1)[1]
        self.jwk = {"kty": "RSA", "kid": "ui-test", "use": "sig", "alg": "RS256", "e": "AQAB",
                    "n": b64url(bytes.fromhex(modulus))}
        self.codes = {}
        self.tokens_issued = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body, headers=()):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("access-control-allow-origin", "*")
                for name, value in headers:
                    self.send_header(name, value)
                if body is not None:
                    self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                if url.path == "/.well-known/openid-configuration":
                    return self.answer(200, {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/jwks",
                                             "authorization_endpoint": provider.issuer + "/authorize",
                                             "token_endpoint": provider.issuer + "/token"})
                if url.path == "/jwks":
                    return self.answer(200, {"keys": [provider.jwk]})
                if url.path == "/authorize":
                    query = dict(urllib.parse.parse_qsl(url.query))
                    if query.get("client_id") != provider.audience or query.get("code_challenge_method") != "S256":
                        return self.answer(400, {"error": "invalid_request"})
                    code = uuid.uuid4().hex
                    provider.codes[code] = query
                    target = query["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": query["state"]})
                    return self.answer(302, None, [("location", target)])
                self.answer(404, {"error": "not_found"})

            def do_POST(self):
                form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["content-length"])).decode()))
                asked = provider.codes.pop(form.get("code"), None)
                challenge = b64url(hashlib.sha256(form.get("code_verifier", "").encode()).digest())
                if asked is None or asked["code_challenge"] != challenge or asked["redirect_uri"] != form.get("redirect_uri"):
                    return self.answer(400, {"error": "invalid_grant"})
                provider.tokens_issued += 1
                self.answer(200, {"token_type": "Bearer", "id_token": provider.id_token(asked["nonce"])})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def id_token(self, nonce):
        now = int(time.time())
        header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "ui-test"}).encode())
        claims = b64url(json.dumps({"iss": self.issuer, "aud": self.audience, "sub": "ada@example.com", "nonce": nonce,
                                    "groups": ["ops"], "iat": now, "exp": now + 600}).encode())
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=f"{header}.{claims}".encode(),
                                   check=True, capture_output=True).stdout
        return f"{header}.{claims}.{b64url(signature)}"

    def close(self):
        self.server.shutdown()
        shutil.rmtree(self.folder, ignore_errors=True)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_sign_in_through_an_openid_provider(browser):
    provider = IdentityProvider(audience="sluice-admin-ui")
    config = f"""admin_oidc:
  issuer: {provider.issuer}
  audience: sluice-admin-ui
  roles: {{ops: platform_admin}}
"""
    try:
        with running_gateway(os.environ["SLUICE_TEST_DATABASE_URL"], extra_config=config) as gateway:
            browser.get(gateway["admin_url"] + "/admin/ui/")
            wait(browser, visible("oidc-button")).click()
            # To the provider and back, then the tenant list with the provider's user signed in.
            wait(browser, visible("tenant-table"))
            assert text_of(browser, "caller").startswith("ada@example.com")
            assert provider.tokens_issued == 1
            assert browser.current_url.endswith("/admin/ui/"), "the code and state leave the address bar"
    finally:
        provider.close()
