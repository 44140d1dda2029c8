"""Time to the first chart of a 10 000-trial study page: plotly.js in full against the hub's bundle.

    .venv/bin/python benchmarks/first_chart.py [--trials 10000] [--runs 7] [--workers N]

Builds one study with bulk_create (``make_study`` of benchmarks/pages.py) in a
fresh SQLite file, starts gunicorn on it as ``manage.py start`` runs it (sync
workers, one per CPU) and opens its page in headless Chromium
(/usr/bin/chromium), each run in a fresh browser context, so with an empty
cache. The page asks the hub for plotly.js as always; the benchmark sends that
request to a small file server of its own instead, which answers with either
the full bundle of the plotly package (what the hub served before) or the hub's
partial bundle, both gzipped the same way, so only the file differs. Runs
alternate between the two after warm-up loads (they fill the hub's chart caches).

Medians over the runs, in ms:

- "plotly.js ready": from navigation start until the bundle has run (``window.Plotly`` set);
- "first chart": from navigation start until the first chart's traces are in the page
  (the page's scripts run after plotly.js, and only then fetch the charts);
- "alone": the bundle loaded into a blank page, from adding its <script> to its load
  event (download over loopback, parse, run).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import plotly
from http_ask_tell import BASE_DIR, SCRATCH, prepare, start_server, stop_server
from pages import make_study, setup_django
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
BUNDLES = {
    "full": Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
    "partial": BASE_DIR / "studies" / "vendor" / "plotly-hub.min.js",
}
# Runs before the page's own scripts: notes when plotly.js has run and when the
# first chart's traces are in the DOM, in ms since navigation start.
PROBE = """
window.__bench = {};
Object.defineProperty(window, "Plotly", {
  configurable: true,
  get() { return window.__plotly; },
  set(value) {
    window.__bench.ready = window.__bench.ready || performance.now();
    window.__plotly = value;
  },
});
new MutationObserver((_, observer) => {
  if (document.querySelector(".chart .main-svg .trace")) {
    window.__bench.chart = performance.now();
    observer.disconnect();
  }
}).observe(document, { childList: true, subtree: true });
"""
LOAD_ALONE = """
name => new Promise((resolve, reject) => {
  const script = document.createElement("script");
  const start = performance.now();
  script.onload = () => resolve(performance.now() - start);
  script.onerror = reject;
  script.src = "/" + name + ".js";
  document.head.appendChild(script);
})
"""


def serve_bundles() -> tuple[ThreadingHTTPServer, str]:
    """Both bundles gzipped (as the hub sends them), and a blank page, on a free port."""
    files = {f"/{name}.js": gzip.compress(p.read_bytes(), 6) for name, p in BUNDLES.items()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/blank.html":
                body, kind, encoding = b"<!doctype html><title>blank</title>", "text/html", ""
            elif self.path in files:
                body, kind, encoding = files[self.path], "text/javascript", "gzip"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            if encoding:
                self.send_header("Content-Encoding", encoding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def log_in(browser: Browser, base: str) -> dict:
    context = browser.new_context(base_url=base)
    page = context.new_page()
    page.goto("/accounts/login/")
    page.fill("#id_username", "bench")
    page.fill("#id_password", "bench-password")
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{base}/")
    state = context.storage_state()
    context.close()
    return state


def first_chart(
    browser: Browser, state: dict, base: str, files: str, url: str, bundle: str
) -> tuple[float, float]:
    """(plotly.js ready, first chart) in ms for one fresh load of the study page."""
    context = browser.new_context(
        base_url=base, storage_state=state, viewport={"width": 1400, "height": 900}
    )
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.add_init_script(PROBE)
    page.route(
        "**/vendor/plotly-*.min.js", lambda route: route.continue_(url=f"{files}/{bundle}.js")
    )
    page.goto(url, wait_until="commit")
    page.wait_for_function("() => window.__bench.chart", timeout=120_000)
    times = page.evaluate("() => window.__bench")
    context.close()
    if errors:
        raise RuntimeError(f"JavaScript errors with the {bundle} bundle: {errors}")
    return times["ready"], times["chart"]


def alone(browser: Browser, files: str, bundle: str) -> float:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{files}/blank.html")
    elapsed = page.evaluate(LOAD_ALONE, bundle)
    context.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    database_url = f"sqlite:///{SCRATCH / 'hub.sqlite3'}"
    os.environ["DATABASE_URL"] = database_url
    os.environ["HUB_VAR_DIR"] = str(SCRATCH)
    prepare(database_url)  # migrates and adds the user "bench"
    setup_django()
    study = make_study("first-chart", args.trials)
    server, base = start_server(database_url, args.workers, 1)
    files_server, files = serve_bundles()
    results: dict[str, dict[str, list[float]]] = {
        name: {"ready": [], "chart": [], "alone": []} for name in BUNDLES
    }
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            state = log_in(browser, base)
            url = f"/studies/{study.pk}/"
            for _ in range(2):  # warm-up: every worker builds and caches the charts
                for name in BUNDLES:
                    first_chart(browser, state, base, files, url, name)
                    alone(browser, files, name)
            for _ in range(args.runs):
                for name in BUNDLES:
                    ready, chart = first_chart(browser, state, base, files, url, name)
                    results[name]["ready"].append(ready)
                    results[name]["chart"].append(chart)
                    results[name]["alone"].append(alone(browser, files, name))
            version = browser.version
            browser.close()
    finally:
        files_server.shutdown()
        stop_server(server)
        shutil.rmtree(SCRATCH, ignore_errors=True)

    print(
        f"study page of {args.trials:,} trials, Chromium {version} headless, "
        f"gunicorn {args.workers} sync workers, {os.cpu_count()} CPUs; "
        f"median of {args.runs} runs each, ms"
    )
    print(
        f"{'bundle':<8} {'raw KB':>7} {'gzip KB':>8} {'plotly.js ready':>16} "
        f"{'first chart':>12} {'alone':>7}"
    )
    for name, path in BUNDLES.items():
        raw = path.read_bytes()
        row = {key: statistics.median(values) for key, values in results[name].items()}
        print(
            f"{name:<8} {len(raw) / 1024:>7.0f} {len(gzip.compress(raw, 6)) / 1024:>8.0f} "
            f"{row['ready']:>16.0f} {row['chart']:>12.0f} {row['alone']:>7.0f}"
        )
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
