"""GET /status in a real browser: `lb run` with origins and a canary split, some traffic, then
headless Chromium (Debian's `chromium`, installed by scripts/test) loads the page, lets its
script read /api/v1/status, and dumps the DOM it built; the drain button clicked in the browser,
token prompt included; and /api/v1/status itself.

The screenshot is written to tests/integration/artifacts/status-page.png (ignored by git) for a
person to look at; its path is printed (pytest -s shows it).
"""

from __future__ import annotations

import html
import shutil
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.integration.helpers import Origin, lb_with_origins, request

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"

SPLIT_ROUTE = """  - name: api-canary
    match: {path_prefix: /api/, headers: {x-beta: "1"}}
    split: [{pool: app, weight: 80}, {pool: canary, weight: 20}]
    rollback: {max_error_rate: "50%", min_requests: 1000}
    sticky: {cookie: lb_arm}
    force: {header: x-arm, arms: {c: canary}}
"""


def canary_pool(origin: Origin) -> str:
    return f'  canary: {{servers: [{{address: "{origin.address}"}}]}}\n'


class Tables(HTMLParser):
    """The rendered page's tables: section id -> rows of cell texts (header rows included)."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[list[str]]] = {}
        self.text: list[str] = []
        self._section = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self._section = dict(attrs).get("id") or ""
            self.sections.setdefault(self._section, [])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.sections[self._section].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, section: str, first: str) -> list[list[str]]:
        return [row for row in self.sections.get(section, []) if row and row[0] == first]


def chromium(url: str, tmp: Path, *args: str) -> str:
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            "--virtual-time-budget=5000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


DASH = "\u2013"  # what the page shows for "no value"


def number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%")) if text not in ("", DASH) else -1.0


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/test installs it)")
def test_status_page_in_chromium_shows_live_traffic(tmp_path: Path) -> None:
    with (
        Origin("canary") as canary,
        lb_with_origins(
            tmp_path,
            extra_routes=SPLIT_ROUTE,
            extra_pools=canary_pool(canary),
        ) as (lb, origins),
    ):
        lb.status()  # the first look starts the window that req/s is measured over
        for i in range(30):
            assert request(lb.port, f"/page/{i}")[0] == 200
        for i in range(20):
            forced = {"x-arm": "c"} if i < 5 else {}  # the canary gets some, whatever the dice
            assert request(lb.port, f"/api/{i}", headers={"x-beta": "1", **forced})[0] == 200
        wait_for(
            lambda: [r["requests"] for r in lb.status()["routes"]] == [20, 30], 5, what="the counts"
        )
        time.sleep(0.6)  # past the window's minimum age, so the page's first read has rates
        assert (
            request(
                lb.admin_port,
                "/api/v1/pools/app/servers/" + origins[1].address + "/drain",
                method="POST",
            )[0]
            == 200
        )

        pids = lb.worker_pids()
        url = f"http://127.0.0.1:{lb.admin_port}/status"
        page = Tables()
        page.feed(chromium(url, tmp_path, "--dump-dom"))
        shot = tmp_path / "status-page.png"
        chromium(
            url, tmp_path, f"--screenshot={shot}", "--window-size=1400,1200", "--hide-scrollbars"
        )

    text = "".join(page.text)
    assert "Reading /api/v1/status" not in text  # the script ran and replaced it

    # Processes: the supervisor and each worker by pid, not one confusing process id.
    assert "2 worker processes" in text and "2 of 2 ready" in text and "0 restarts" in text
    assert lb.proc is not None and f"supervisor pid {lb.proc.pid}" in text
    for pid in pids:
        assert f"pid {pid}" in text

    # Listeners.
    (web,) = page.rows("listeners", "web")
    assert web[1] == f"127.0.0.1:{lb.port}" and web[2] == "http"

    # Routes, in order, with their match, target and hit counts.
    routes = {row[1]: row for row in page.sections["routes"][1:]}
    assert list(routes) == ["api-canary", "default"]
    assert routes["api-canary"][3] == "path /api/*, header x-beta=1"
    assert routes["api-canary"][4] == "app 80% · canary 20%"
    assert routes["default"][3] == "everything" and routes["default"][4] == "app"
    header = page.sections["routes"][0]
    requests_col, rate_col, p50_col = (header.index(h) for h in ("requests", "req/s", "p50"))
    assert number(routes["api-canary"][requests_col]) == 20
    assert number(routes["default"][requests_col]) == 30
    assert number(routes["default"][rate_col]) > 0  # measured since lb.status() above
    assert routes["default"][p50_col].endswith("ms")

    # Pools and servers: addresses, health, drained, counts; a button per server.
    servers = {row[0]: row for row in page.sections["pools"] if row and ":" in row[0]}
    assert set(servers) == {o.address for o in [*origins, canary]}
    header = next(r for r in page.sections["pools"] if r and r[0] == "server")
    req = header.index("requests")
    assert (
        sum(number(servers[o.address][req]) for o in origins) + number(servers[canary.address][req])
        == 50
    )
    assert number(servers[canary.address][req]) >= 5
    assert servers[origins[1].address][header.index("state")] == "drained"
    assert servers[origins[1].address][-1] == "enable"
    assert servers[origins[0].address][-1] == "drain"
    assert "pool app" in text and "pool canary" in text

    # The canary split and its arms.
    arms = {row[0]: row for row in page.sections["splits"][1:]}
    assert set(arms) == {"app", "canary"}
    assert arms["app"][2] == "stable" and arms["canary"][3] == "armed"
    assert "sticky cookie lb_arm" in text

    # Redis: not configured; no cache or queue sections without their metrics.
    assert "Redis" in text and "not configured" in text
    assert "cache" not in page.sections and "queues" not in page.sections

    assert shot.stat().st_size > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    kept = ARTIFACTS / "status-page.png"
    shutil.copyfile(shot, kept)
    print(f"\nstatus page screenshot: {kept}")


def test_status_document_has_routes_rates_in_flight_and_the_token_rule(tmp_path: Path) -> None:
    with (
        Origin("canary") as canary,
        lb_with_origins(
            tmp_path,
            extra_routes=SPLIT_ROUTE,
            extra_pools=canary_pool(canary),
        ) as (lb, _origins),
    ):
        first = lb.status()
        assert set(first["window"]) == {"seconds"}  # (lb.start's polls began the window)
        assert first["supervisor"]["pid"] == first["pid"]
        assert first["supervisor"]["workers"] == 2 and first["supervisor"]["workers_ready"] == 2
        assert first["admin"] == {"token_required": False}
        assert "cache" not in first and "queues" not in first
        assert [r["name"] for r in first["routes"]] == ["api-canary", "default"]
        canary_route = first["routes"][0]
        assert canary_route["match"] == "path /api/*, header x-beta=1"
        assert canary_route["split"] == [
            {"pool": "app", "weight": 80},
            {"pool": "canary", "weight": 20},
        ]
        assert canary_route["features"] == ["sticky", "force", "rollback"]
        assert canary_route["requests"] == 0 and canary_route["errors_5xx"] == 0

        for i in range(10):
            assert request(lb.port, f"/x{i}")[0] == 200
        # A slow request holds its server while we look.
        slow = threading.Thread(target=request, args=(lb.port, "/slow?s=3"), daemon=True)
        slow.start()

        def busy() -> bool:
            servers = lb.status()["pools"]["app"]["servers"]
            return sum(s["in_flight"] for s in servers) == 1

        wait_for(busy, 5, what="one request in flight")
        time.sleep(0.6)
        doc = lb.status()
        default = doc["routes"][1]
        assert default["requests"] == 10 and default["errors_5xx"] == 0
        assert doc["window"]["seconds"] is not None and doc["window"]["seconds"] > 0
        assert default["requests_per_s"] is not None and default["requests_per_s"] > 0
        assert default["latency_ms"]["p50"] is not None
        assert default["latency_ms"]["p50"] <= default["latency_ms"]["p99"]
        servers = doc["pools"]["app"]["servers"]
        assert sum(s["requests"] for s in servers) == 10
        assert all(s["requests_per_s"] is not None for s in servers)
        assert doc["pools"]["canary"]["servers"][0]["in_flight"] == 0
        assert doc["splits"]["api-canary"]["arms"][0]["latency_ms"] == {"p50": None, "p99": None}
        slow.join(10)
        wait_for(lambda: not busy(), 5, what="nothing in flight")
        assert canary.total == 0

        # The page says when drain/enable need the token, and never holds it.
        token = "s3cret-status"
        lb.config.write_text(
            lb.config.read_text().replace("admin: {", f'admin: {{token: "{token}", ')
        )
        assert request(lb.admin_port, "/api/v1/reload", method="POST")[0] == 200
        assert lb.status()["admin"] == {"token_required": True}
        code, headers, page = request(lb.admin_port, "/status")
        assert code == 200 and headers["content-type"] == "text/html; charset=utf-8"
        assert token.encode() not in page and b"sessionStorage" in page


# The drain button, clicked in a real browser: a harness page on the same origin as /status (a
# small forwarding server in front of the admin port) frames the page, clicks, enters the token
# as a person would, and writes what it saw into its own DOM for --dump-dom.
HARNESS = """<!doctype html><meta charset=utf-8><pre id=log></pre>
<iframe id=f src="/status" width=1200 height=900></iframe>
<script>
const log = (s) => { document.getElementById("log").textContent += s + "\\n"; };
const doc = () => document.getElementById("f").contentDocument;
const sleep = (ms) => new Promise(r => setTimeout(r, ms));
const button = (server) => doc().querySelector(`button[data-server="${server}"]`);
async function run() {
  await sleep(1000);
  button("SERVER").click();                      // no token yet: refused
  await sleep(1000);
  log("banner1: " + doc().getElementById("banner").textContent);
  const input = doc().getElementById("token");
  input.value = "TOKEN";
  doc().querySelector("#token-box button").click();
  button("SERVER").click();
  await sleep(2500);
  log("banner2: " + doc().getElementById("banner").textContent);
  log("action: " + button("SERVER").textContent);
  log("token box: " + doc().getElementById("token-box").textContent);
}
run().catch(e => log("error: " + e));
</script>"""


class Forwarder:
    """GET /harness.html, and everything else forwarded to the admin listener; records the
    Authorization header of each POST."""

    def __init__(self, admin_port: int, harness: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.authorizations: list[str | None] = []
        forwarder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", headers.get("content-type", "text/plain"))
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/harness.html":
                    self._answer(200, {"content-type": "text/html"}, harness.encode())
                    return
                self._answer(*request(admin_port, self.path))

            def do_POST(self) -> None:
                auth = self.headers.get("authorization")
                forwarder.authorizations.append(auth)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {"authorization": auth} if auth else {}
                self._answer(*request(admin_port, self.path, "POST", headers, body))

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Forwarder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/test installs it)")
def test_drain_button_asks_for_the_token_then_sends_it(tmp_path: Path) -> None:
    token = "s3cret-drain"
    with lb_with_origins(tmp_path, workers=1) as (lb, origins):
        text = lb.config.read_text()
        lb.config.write_text(text.replace("admin: {", f'admin: {{token: "{token}", '))
        assert request(lb.admin_port, "/api/v1/reload", method="POST")[0] == 200
        server = origins[0].address
        harness = HARNESS.replace("SERVER", server).replace("TOKEN", token)
        with Forwarder(lb.admin_port, harness) as forwarder:
            dom = chromium(
                f"http://127.0.0.1:{forwarder.port}/harness.html",
                tmp_path,
                "--dump-dom",
                "--virtual-time-budget=10000",
            )
        drained = [s["drained"] for s in lb.status()["pools"]["app"]["servers"]]

    lines = html.unescape(dom.split('<pre id="log">', 1)[1].split("</pre>", 1)[0])
    assert "error:" not in lines, lines
    assert f"banner1: lb refused to drain {server}: it needs the admin token" in lines
    assert f"banner2: Drained {server} in pool app." in lines
    assert "action: enable" in lines and "token box: admin token set" in lines
    assert forwarder.authorizations == [None, f"Bearer {token}"]
    assert drained == [True, False]
