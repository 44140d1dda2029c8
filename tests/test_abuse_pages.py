"""Pages under a Content-Security-Policy, and names that try to plant HTML in charts.

Plotly renders titles, tick labels, legends and hover text as a subset of
HTML, links included; a parameter or study named ``<a href=...>`` must show
as typed. Checked in the chart JSON and, with Chromium, in a real browser,
which also reports every CSP violation on the hub's pages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.urls import reverse

from studies import charts
from studies.models import Study
from studies.storage import optuna_study_for
from tests.conftest import BASE_DIR, REQUIRE_SERVICES

EVIL = '<a href="https://evil.example/">click</a>'
EVIL_CHOICE = '<a href="https://evil.example/choice">choice</a>'
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(autouse=True)
def fresh_chart_caches() -> None:
    # Test databases reuse ids after each rollback; a real hub never does.
    cache.clear()
    charts.trial_data_cache.entries.clear()


def hostile_study(owner: Any, name: str = EVIL) -> Study:
    """A study whose name, a parameter and a choice carry a link, as ask/tell clients may send."""
    study = Study.objects.create(
        name=name, owner=owner, directions=["minimize"], search_space={}, sampler={"type": "random"}
    )
    optuna_study = optuna_study_for(study)
    for i in range(6):
        trial = optuna_study.ask()
        x = trial.suggest_float(EVIL, 0, 1)
        kind = trial.suggest_categorical("kind", [EVIL_CHOICE, "plain"])
        trial.report(x, 0)
        optuna_study.tell(trial, x + (kind == "plain") + i / 10)
    return study


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_names_with_html_are_escaped_in_every_chart(client, alice):
    study = hostile_study(alice)
    client.force_login(alice)
    seen = []
    for name, _title in charts.charts_for(study):
        response = client.get(reverse("studies:chart", args=[study.pk, name]))
        assert response.status_code == 200, (name, response.content[:300])
        figure = response.json()["figure"]
        texts = list(strings(figure))
        assert not [t for t in texts if "<a" in t], name
        seen += [t for t in texts if "&lt;a href=" in t]
    # Where the names are drawn: axis titles, tick labels, hover text, parcoords labels.
    assert len(seen) >= 5
    texts = list(strings(json.loads(charts.compare_chart([study]).to_json())["figure"]))
    assert not [t for t in texts if "<a" in t]
    assert [t for t in texts if "&lt;a href=" in t]  # the legend and the hover text


def test_pages_send_a_policy_that_allows_no_inline_script(client, alice):
    client.force_login(alice)
    policy = client.get("/")["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    assert directives["script-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert "Content-Security-Policy" in client.get("/accounts/login/")


def test_no_template_has_an_inline_script_or_event_handler():
    found = []
    for path in (BASE_DIR / "templates").rglob("*.html"):
        html = path.read_text()
        for attributes in re.findall(r"<script\b([^>]*)>", html):
            if "src=" not in attributes and 'type="application/json"' not in attributes:
                found.append(f"{path.name}: <script{attributes}>")
        found += [f"{path.name}: {m}" for m in re.findall(r"\son[a-z]+=\"", html)]
        found += [f"{path.name}: javascript: URL" for _ in re.findall(r"javascript:", html)]
    assert found == []


# In a real browser


def planted_links(page) -> list[str]:  # noqa: ANN001
    return page.evaluate("[...document.querySelectorAll('svg a')].map(a => a.outerHTML)")


def shown_as_typed(page) -> bool:  # noqa: ANN001
    script = "text => [...document.querySelectorAll('svg text')].some(t => t.textContent === text)"
    return page.evaluate(script, EVIL)


@pytest.fixture
def chromium(transactional_db, monkeypatch):  # noqa: ANN201
    if not CHROMIUM.exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} and HUB_REQUIRE_SERVICES=1")
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls are blocking.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--no-first-run"]
        )
        yield browser
        browser.close()


@pytest.mark.slow
def test_in_a_browser_the_pages_keep_their_policy_and_no_chart_carries_a_planted_link(
    chromium, hub_server, alice
):
    study = hostile_study(alice)
    trial = study.trials.first()
    context = chromium.new_context(base_url=hub_server, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto("/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password")
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{hub_server}/")
    # The sort menu submits its form from a script file, not an inline handler.
    page.select_option("select[name=sort]", index=1)
    page.wait_for_url(re.compile(r"sort="))

    page.goto(f"/studies/{study.pk}/")
    for card in page.locator(".chart-card").all():
        card.scroll_into_view_if_needed()
        card.locator(".main-svg, .chart-empty").first.wait_for()
    assert page.locator(".chart-card .main-svg").count() >= 5
    assert planted_links(page) == []
    assert shown_as_typed(page)  # e.g. the slice chart's axis title
    page.goto(f"/studies/compare/?ids={study.pk}")
    page.locator("#compare-chart .main-svg").first.wait_for()
    assert planted_links(page) == []
    for url in [f"/trials/{trial.pk}/", "/studies/new/", "/tokens/", "/api/docs/"]:
        page.goto(url)
        page.wait_for_load_state("networkidle")
    page.locator("#swagger-ui .info").wait_for()  # the docs' script ran
    context.close()
    assert violations == []
