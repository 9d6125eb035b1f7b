"""The dashboard (``/ui``) in a real headless Chromium driven by selenium, against a real control
plane with a small mesh applied: frontend -> catalog -> pricing.

What the data plane would send is seeded through the real APIs: sidecars register and heartbeat
with ``telemetry`` (their data plane's edge counters) over ``PUT /api/v1/sidecars``, and a trace
arrives as OTLP JSON at ``POST /v1/traces``, each with the service's join token.

Every page is opened, must show what the mesh holds with no console error, and is kept as a
screenshot in $MESHCTL_TEST_ARTIFACTS (default tests/artifacts/). Nothing the page loads comes
from another origin."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from helpers import unused_port, wait_until
from meshproc import ControlPlane, http_route, module_control_plane, service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("MESHCTL_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")
#: The machine is shared: page loads get a generous deadline.
WAIT = 45
WIDTH, HEIGHT = 1440, 1000

cp = module_control_plane()


# === the mesh and what its data plane would have sent ===


def _edge(
    direction: str, source: str, destination: str, mtls: bool, n: int, *, failures: int = 0, route: str = ""
) -> dict[str, Any]:
    """One edge of contract B with `n` requests, their latencies spread over three buckets."""
    buckets = [[1.6, n // 2], [6.3, n - n // 2 - n // 10], [25.1, n // 10]]
    return {
        "protocol": "http",
        "direction": direction,
        "listener": direction,
        "route": route,
        "source": source,
        "destination": destination,
        "mtls": mtls,
        "requests": n,
        "failures": failures,
        "latency_buckets": [b for b in buckets if b[1]],
        "latency_sum_ms": 3.0 * n,
        "request_bytes": 100 * n,
        "response_bytes": 900 * n,
    }


def _telemetry(svc: str, n: int) -> dict[str, Any]:
    """What each service's sidecar counted after `n` requests into the frontend."""
    edges = {
        "frontend": [
            _edge("inbound", "", "default/frontend", False, n),
            _edge("outbound", "default/frontend", "default/catalog", True, n, route="catalog"),
        ],
        "catalog": [
            _edge("inbound", "default/frontend", "default/catalog", True, n),
            _edge("outbound", "default/catalog", "default/pricing", True, n, failures=n // 50, route="pricing-canary"),
        ],
        "pricing": [_edge("inbound", "default/catalog", "default/pricing", True, n, failures=n // 50)],
    }
    return {"edges": edges[svc]}


SERVICES = ("frontend", "catalog", "pricing")


def _otlp_trace(trace_id: str) -> dict[str, Any]:
    """Five spans over three services, as the sidecars' exporters would send them: the last failed."""
    t0 = time.time_ns() - 2_000_000_000
    ids = [secrets.token_hex(8) for _ in range(5)]

    def span(
        i: int, parent: str, name: str, kind: int, start_ms: float, dur_ms: float, error: bool = False
    ) -> dict[str, Any]:
        return {
            "traceId": trace_id,
            "spanId": ids[i],
            "parentSpanId": parent,
            "name": name,
            "kind": kind,
            "startTimeUnixNano": str(t0 + int(start_ms * 1e6)),
            "endTimeUnixNano": str(t0 + int((start_ms + dur_ms) * 1e6)),
            "attributes": [
                {"key": "http.request.method", "value": {"stringValue": "GET"}},
                {"key": "http.response.status_code", "value": {"intValue": "503" if error else "200"}},
                {"key": "meshctl.direction", "value": {"stringValue": "outbound" if kind == 3 else "inbound"}},
            ],
            "status": {"code": 2 if error else 0},
        }

    def resource(svc: str, *spans: dict[str, Any]) -> dict[str, Any]:
        attrs = [
            {"key": "service.name", "value": {"stringValue": svc}},
            {"key": "service.namespace", "value": {"stringValue": "default"}},
        ]
        return {"resource": {"attributes": attrs}, "scopeSpans": [{"scope": {"name": "meshctl"}, "spans": list(spans)}]}

    return {
        "resourceSpans": [
            resource(
                "frontend",
                span(0, "", "GET /items", 2, 0, 40),
                span(1, ids[0], "GET catalog", 3, 2, 35),
            ),
            resource(
                "catalog",
                span(2, ids[1], "GET catalog", 2, 3, 33),
                span(3, ids[2], "GET pricing-canary", 3, 10, 20),
            ),
            resource("pricing", span(4, ids[3], "GET pricing-canary", 2, 11, 18, error=True)),
        ]
    }


class Mesh:
    """The mesh the dashboard shows: its services, their (API-registered) sidecars and a trace."""

    def __init__(self, cp: ControlPlane):
        self.cp = cp
        self.tokens = {s: cp.join_token(s) for s in SERVICES}
        self.ports = {s: unused_port() for s in SERVICES}
        self.sidecar_ids: dict[str, int] = {}
        self.trace_id = secrets.token_hex(16)

    def heartbeat(self, svc: str, n: int) -> dict[str, Any]:
        body = {
            "namespace": "default",
            "service": svc,
            "address": "127.0.0.1",
            "inbound_port": self.ports[svc],
            "app_port": self.ports[svc] + 1,
            "ttl_seconds": 600,
            "svid_expires_at": (datetime.now(UTC) + timedelta(hours=24)).isoformat(),
            "telemetry": _telemetry(svc, n),
        }
        r = httpx.put(f"{self.cp.url}/api/v1/sidecars", json=body, headers=self.auth(svc), timeout=10)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def auth(self, svc: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[svc]}"}


@pytest.fixture(scope="module")
def mesh(cp: ControlPlane) -> Mesh:
    permissive = service("frontend")
    permissive["spec"]["mtls"] = "PERMISSIVE"  # the load comes from outside the mesh
    cp.apply(permissive, service("catalog"), service("pricing"))
    canary = http_route("pricing-canary", "pricing", {"backendRefs": [{"name": "pricing", "weight": 100}]})
    cp.apply(canary)
    # A second revision of the route: the dashboard's diff has something to show.
    canary["spec"]["rules"][0]["timeouts"] = {"request": "2s"}
    cp.apply(canary)

    m = Mesh(cp)
    for svc in SERVICES:  # the first heartbeat's totals are the baseline ...
        m.sidecar_ids[svc] = m.heartbeat(svc, 0)["id"]
    for svc in SERVICES:  # ... the second's are counted
        m.heartbeat(svc, 3000)
    generation = cp.ok("GET", "/api/v1/mesh")["generation"]
    for svc in ("frontend", "catalog"):  # two ACK the mesh generation; pricing is left behind
        path = f"/api/v1/sidecars/{m.sidecar_ids[svc]}/status"
        r = httpx.post(f"{cp.url}{path}", json={"version": generation}, headers=m.auth(svc), timeout=10)
        assert r.status_code == 204, r.text

    r = httpx.post(f"{cp.url}/v1/traces", json=_otlp_trace(m.trace_id), headers=m.auth("frontend"), timeout=10)
    assert r.status_code == 200, r.text

    def edges() -> list[dict[str, Any]]:
        return list(cp.ok("GET", "/api/v1/edges", params={"window": 60})["edges"])

    wait_until(lambda: len([e for e in edges() if e["requests"]]) >= 3, timeout=30, what="the heartbeats' edges")
    return m


# === the browser ===


class Browser:
    """One headless Chromium for the module; its console log is read (and emptied) by `errors`."""

    def __init__(self, cp: ControlPlane):
        self.cp = cp
        #: The control plane the pages come from.
        self.base = cp.url
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            f"--window-size={WIDTH},{HEIGHT}",
            # Chromium's own traffic (updates, sync, ...) stays off: the test runs offline.
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver: WebDriver = webdriver.Chrome(options=options, service=ChromeService(str(CHROMEDRIVER)))
        self.requested: list[str] = []

    def open(self, fragment: str) -> WebElement:
        """The page at #/fragment, once it has rendered (its view marked ready); its error fails."""
        self.driver.get(f"{self.base}/ui/#/{fragment}")
        return self.ready(fragment.split("/")[0].split("?")[0])

    def ready(self, page: str) -> WebElement:
        def done(d: WebDriver) -> Any:
            view = d.find_element(By.ID, "view")
            failed = view.find_elements(By.CSS_SELECTOR, ".page-error")
            if failed:
                raise AssertionError(f"#/{page}: {failed[0].text}")
            shown = view.get_attribute("data-page") == page and view.get_attribute("data-ready") == "true"
            return view if shown else None

        return self.wait(done, f"the {page} page to render")

    def wait(self, condition: Any, what: str) -> Any:
        try:
            return WebDriverWait(self.driver, WAIT, poll_frequency=0.1).until(condition)
        except TimeoutException:
            self.shot(f"timeout-{re.sub(r'[^a-z0-9]+', '-', what.lower())}")
            raise AssertionError(f"waited {WAIT} s for {what}") from None

    def text(self, element_id: str, contains: str) -> WebElement:
        """The element once its text says `contains`."""

        def says(d: WebDriver) -> WebElement | None:
            el = d.find_element(By.ID, element_id)
            return el if contains in el.text else None

        return self.wait(says, f"#{element_id} to say {contains!r}")

    def css(self, selector: str, within: WebElement | None = None) -> list[WebElement]:
        return (within or self.driver).find_elements(By.CSS_SELECTOR, selector)

    def login(self, token: str) -> None:
        self.driver.get(f"{self.base}/ui/#/login")
        field = self.wait(lambda d: d.find_element(By.ID, "token"), "the login form")
        field.clear()
        field.send_keys(token)
        self.driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()

    def errors(self, allowed: str | None = None) -> list[str]:
        """The console's SEVERE entries since the last call, but those matching `allowed` (a
        regex: a refusal the test asked for, which Chromium logs as a failed load)."""
        entries = self.driver.get_log("browser")  # type: ignore[attr-defined]
        severe = [e["message"] for e in entries if e["level"] == "SEVERE"]
        return [m for m in severe if not (allowed and re.search(allowed, m))]

    def network(self) -> list[str]:
        """Every URL the page asked for since the last call (from the DevTools performance log)."""
        for entry in self.driver.get_log("performance"):  # type: ignore[attr-defined]
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])
        return self.requested

    def shot(self, name: str) -> None:
        """The whole page (the window grown to its height for the picture) as an artefact."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.driver.execute_script("window.scrollTo(0, 0)")
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(WIDTH, min(max(int(height) + 120, HEIGHT), 4000))
        self.driver.save_screenshot(str(ARTIFACTS / f"dashboard-{name}.png"))
        self.driver.set_window_size(WIDTH, HEIGHT)

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture(scope="module")
def browser(cp: ControlPlane) -> Iterator[Browser]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("the dashboard tests need /usr/bin/chromium and /usr/bin/chromedriver (apt: chromium-driver)")
    b = Browser(cp)
    yield b
    b.quit()


@pytest.fixture
def reader(browser: Browser, cp: ControlPlane, mesh: Mesh) -> Browser:
    """The browser logged in with the read-only token."""
    browser.login(cp.token("reader"))
    browser.ready("topology")
    return browser


# === the tests ===


def test_shell_is_locked_down(cp: ControlPlane) -> None:
    """Our own files only, a strict CSP, nothing inline; the data behind it needs a token."""
    r = httpx.get(f"{cp.url}/ui/", timeout=10)
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "http://" not in r.text and "https://" not in r.text
    assert re.findall(r"<script[^>]*>", r.text) == ['<script type="module" src="app.js">']
    assert httpx.get(f"{cp.url}/ui", timeout=10, follow_redirects=False).headers["location"] == "/ui/"
    assert httpx.get(f"{cp.url}/ui/../control/app.py", timeout=10).status_code == 404
    assert httpx.get(f"{cp.url}/api/v1/edges", timeout=10).status_code == 401


def test_login_refuses_a_wrong_token_and_takes_the_read_only_one(
    browser: Browser, cp: ControlPlane, mesh: Mesh
) -> None:
    browser.login("mesh-reader-not-a-token")
    note = browser.text("login-message", "refused")
    assert "401" in note.text
    assert not browser.css("#top:not([hidden])"), "the navigation shows before a login"
    browser.shot("login-refused")
    assert browser.errors(allowed=r"/api/v1/mesh .*401") == []

    browser.login(cp.token("reader"))
    view = browser.ready("topology")
    assert browser.driver.execute_script("return sessionStorage.getItem('meshctl.token')") == cp.token("reader")
    assert browser.css("[data-service='default/catalog']", view)

    # A token the control plane stops taking sends the user back to the login, with a message.
    browser.driver.execute_script("sessionStorage.setItem('meshctl.token', 'mesh-reader-revoked')")
    browser.driver.get(f"{cp.url}/ui/#/sidecars")
    note = browser.wait(lambda d: d.find_elements(By.ID, "login-message"), "the return to the login")[0]
    assert "Log in again" in note.text
    assert browser.errors(allowed=r"/api/v1/.* 401") == []


def test_topology_shows_the_services_and_edges(reader: Browser) -> None:
    view = reader.open("topology")
    nodes = {n.get_attribute("data-service"): n.get_attribute("data-health") for n in reader.css("g.node", view)}
    assert {"default/frontend", "default/catalog", "default/pricing"} <= set(nodes)
    assert nodes["default/frontend"] == "ok" and nodes["default/pricing"] == "warn"  # 2 % failures
    edges = {e.get_attribute("data-edge"): e.get_attribute("class") for e in reader.css("g.edge", view)}
    assert edges["default/frontend -> default/catalog"] == "edge mtls"
    assert edges["default/catalog -> default/pricing"] == "edge mtls"
    assert edges[" -> default/frontend"] == "edge plain"  # the load from outside the mesh
    label = reader.css("[data-edge='default/catalog -> default/pricing'] .edge-label", view)[0].text
    assert "/s" in label and "98.0%" in label and "p99" in label
    reader.shot("topology")
    assert reader.errors() == []


def test_service_page_draws_the_golden_metrics(reader: Browser) -> None:
    view = reader.open("service/default/catalog")
    for chart in ("chart-rps", "chart-success", "chart-latency"):
        paths = reader.css(f"#{chart} path.series", view)
        assert paths and any((p.get_attribute("d") or "").startswith("M") for p in paths), chart
    latency = reader.css("#chart-latency path.series", view)
    assert [p.get_attribute("data-series") for p in latency] == ["p50", "p95", "p99"]
    reader.shot("service")
    assert reader.errors() == []

    view = reader.open("services")
    assert "default/pricing" in view.text
    reader.shot("services")
    assert reader.errors() == []


def test_routes_and_policies_with_history_and_diff(reader: Browser) -> None:
    view = reader.open("resources")
    route = reader.css("[data-kind='HTTPRoute'] tbody tr", view)
    assert [r.text.split()[0] for r in route] == ["default/pricing-canary"]
    route[0].click()
    assert "backendRefs" in reader.css(".spec-box pre", view)[0].text

    latest = reader.css("tr[data-revision]", view)[0]  # newest first: the timeout's revision
    latest.click()
    change = reader.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#diff .change"), "the revision's diff")[0]
    assert change.get_attribute("data-change") == "changed"
    added = [a.text for a in reader.css("pre.diff .add", change)]
    assert any('"request": "2s"' in a for a in added), added
    reader.shot("resources")
    assert reader.errors() == []


def test_sidecars_show_sync_and_svid_expiry(reader: Browser, mesh: Mesh) -> None:
    view = reader.open("sidecars")
    rows = reader.css("tr[data-sidecar]", view)
    assert len(rows) == 3
    assert all("expires in" in r.text for r in rows)
    assert "live sidecars" in reader.css("#mesh-summary", view)[0].text
    reader.shot("sidecars")
    assert reader.errors() == []


def test_a_trace_opens_with_its_waterfall(reader: Browser, mesh: Mesh) -> None:
    view = reader.open("traces")
    row = reader.css(f"tr[data-trace='{mesh.trace_id}']", view)[0]
    assert "frontend: GET /items" in row.text
    reader.shot("traces")
    row.click()
    view = reader.ready("trace")
    spans = reader.css("#waterfall g.span", view)
    assert len(spans) == 5
    labels = [s.text for s in spans]
    assert labels[0].startswith("frontend") and labels[-1].startswith("pricing")  # tree order
    assert "err" in (spans[-1].get_attribute("class") or "")
    spans[-1].click()
    details = reader.text("span-details", "http.response.status_code")
    assert "503" in details.text
    reader.shot("trace")
    assert reader.errors() == []


def test_tap_needs_the_admin_token(reader: Browser, cp: ControlPlane, mesh: Mesh) -> None:
    view = reader.open("tap/default/catalog")
    reader.css("#tap-form button[type=submit]", view)[0].click()
    note = reader.text("tap-note", "admin token")
    assert "read-only" in note.text
    reader.shot("tap-read-only")
    assert reader.errors(allowed=r"/api/v1/tap/.* 403") == []

    reader.login(cp.token("admin"))
    view = reader.ready("topology")
    view = reader.open("tap/default/catalog")
    seconds = reader.css("#tap-form input[name=seconds]", view)[0]
    seconds.clear()
    seconds.send_keys("1")
    reader.css("#tap-form button[type=submit]", view)[0].click()
    # No data plane behind these sidecars: the stream opens, carries nothing, and ends on time.
    reader.text("tap-note", "the tap ended")
    reader.shot("tap")
    assert reader.errors() == []


def test_nothing_comes_from_another_origin(reader: Browser, mesh: Mesh) -> None:
    reader.network()  # what earlier tests loaded counts too
    pages = ("topology", "services", "service/default/pricing", "resources", "sidecars", "traces", "tap")
    for page in (*pages, f"trace/{mesh.trace_id}"):
        reader.open(page)
    urls = reader.network()
    assert urls
    foreign = [u for u in urls if not (u.startswith(f"{reader.cp.url}/") or u.startswith("data:"))]
    assert foreign == []
    loaded = reader.driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(f"{reader.cp.url}/") for u in loaded), loaded
    assert reader.errors() == []


DEMO_EDGES = {"default/frontend -> default/catalog", "default/catalog -> default/pricing"}


def test_demo_keep_prints_the_dashboard_url(browser: Browser) -> None:
    """`meshctl demo --keep` says where the dashboard is and which token opens it; its graph shows
    the demo's services, and the edges its sidecars report with their heartbeats."""
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "meshctl", "demo", "--keep", "--no-resilience", "--requests", "500"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        found = wait_until(
            lambda: re.search(r"dashboard (http://\S+)/ui/ \(log in with (\S+);", "".join(out)) or proc.poll(),
            timeout=180,
            what="the demo's dashboard line",
        )
        assert isinstance(found, re.Match), "".join(out)
        browser.base = found[1]
        browser.login(Path(found[2]).read_text().strip())
        view = browser.ready("topology")
        for svc in ("frontend", "catalog", "pricing"):
            assert browser.css(f"g.node[data-service='default/{svc}']", view), svc

        def edges(d: WebDriver) -> set[str | None]:
            shown = {e.get_attribute("data-edge") for e in d.find_elements(By.CSS_SELECTOR, "g.edge")}
            return shown if shown >= DEMO_EDGES else set()

        browser.wait(edges, "the demo's edges (the page refreshes every 5 s)")
        browser.shot("demo-topology")
        assert browser.errors() == []
    finally:
        browser.base = browser.cp.url
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        reader.join(10)
    assert "stopping the mesh" in "".join(out)
