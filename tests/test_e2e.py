"""End to end in a real browser: headless Chromium against gunicorn and a real qcluster.

Set HUB_SCREENSHOTS=docs/screenshots to save screenshots of the main pages on the way.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pytest
from optuna.trial import TrialState

from studies.models import Job, Study
from studies.storage import optuna_study_for
from tests.conftest import REQUIRE_SERVICES

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]
SCREENSHOTS = os.environ.get("HUB_SCREENSHOTS", "")
N_TRIALS = 40 if SCREENSHOTS else 8

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(transactional_db, monkeypatch):
    if not CHROMIUM.exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} and HUB_REQUIRE_SERVICES=1")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread, and Django then
    # refuses ORM calls; the test's queries are plain blocking ones, so allow them.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, hub_server):
    context = browser.new_context(
        base_url=hub_server, viewport={"width": 1400, "height": 900}, accept_downloads=True
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"


def shoot(page, name: str, until: str = "") -> None:  # noqa: ANN001
    """A full-page screenshot, cut below the element ``until`` when given."""
    if not SCREENSHOTS:
        return
    Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
    options = {"path": str(Path(SCREENSHOTS) / f"{name}.png"), "full_page": True}
    if until:
        bottom = page.evaluate(
            "s => document.querySelector(s).getBoundingClientRect().bottom + window.scrollY", until
        )
        width = page.viewport_size["width"]
        options["clip"] = {"x": 0, "y": 0, "width": width, "height": bottom + 16}
    page.screenshot(**options)


def load_every_chart(page) -> None:  # noqa: ANN001
    """Charts load when scrolled into view: scroll through them and wait for each."""
    for card in page.locator(".chart-card").all():
        card.scroll_into_view_if_needed()
        card.locator(".main-svg, .chart-empty").first.wait_for()
    page.evaluate("window.scrollTo(0, 0)")


def test_a_user_creates_runs_and_explores_a_study_in_the_browser(
    page, alice, bob, hub_server, start_qcluster, tmp_path
):
    start_qcluster()

    # Log in.
    page.goto("/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password")
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{hub_server}/")
    assert page.locator("h2:has-text('No studies yet')").is_visible()

    # Create a study whose search space has a conditional parameter.
    page.click("nav >> text=New study")
    page.fill("#id_name", "sgd-digits")
    page.select_option("select[name=directions]", "maximize")
    page.select_option("#id_objective", "digits_sgd")
    assert "digits" in page.inner_text("#objective-help")
    page.select_option("#id_sampler", "tpe")
    assert "n_startup_trials" in page.inner_text("#sampler-help")
    page.fill("#id_sampler_options", '{"n_startup_trials": 5}')
    page.fill("#id_sampler_seed", "1")
    page.fill("#id_pruner_options", '{"n_startup_trials": 10, "n_warmup_steps": 5}')
    page.fill("#id_params-0-name", "loss")
    page.select_option("#id_params-0-type", "categorical")
    assert not page.locator("#id_params-0-low").is_visible()
    page.fill("#id_params-0-choices", "hinge, log_loss, modified_huber")
    page.click("#add-param")
    page.fill("#id_params-1-name", "alpha")
    page.fill("#id_params-1-low", "1e-6")
    page.fill("#id_params-1-high", "0.1")
    page.check("#id_params-1-log")
    page.click("#add-param")
    page.fill("#id_params-2-name", "eta0")
    page.fill("#id_params-2-low", "1e-4")
    page.fill("#id_params-2-high", "1")
    page.check("#id_params-2-log")
    # "Only when" offers the categorical parameter above, not the float one.
    options = page.locator("#id_params-2-when_param option").all_inner_texts()
    assert options == ["always", "loss"]
    page.select_option("#id_params-2-when_param", "loss")
    page.fill("#id_params-2-when_values", "hinge, modified_huber")
    shoot(page, "new-study-form")
    # A mistake first: the error shows beside the field and nothing is saved.
    page.fill("#id_params-1-high", "-1")
    page.click("button:has-text('Create study')")
    assert "must not be greater than high" in page.inner_text(".ss-row:nth-child(2)")
    assert not Study.objects.exists()
    shoot(page, "new-study-form-error")
    page.fill("#id_params-1-high", "0.1")
    page.click("button:has-text('Create study')")
    page.wait_for_url(re.compile(r"/studies/\d+/$"))
    study = Study.objects.get(name="sgd-digits")
    assert study.search_space["eta0"]["when"] == {"loss": ["hinge", "modified_huber"]}

    # Start a job and watch its progress bar reach 100 % without reloading.
    page.fill("#run-n-trials", str(N_TRIALS))
    page.click("#run button:has-text('Run')")
    page.wait_for_url(re.compile(r"/studies/\d+/#jobs$"))
    job = Job.objects.get(study=study)
    page.evaluate("window.hubNoReload = true")  # gone if the page reloads
    page.locator(f"[data-job='{job.pk}'] .job-percent:has-text('100 %')").wait_for(timeout=180_000)
    assert page.evaluate("window.hubNoReload") is True
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED
    complete = study.trials.filter(state=TrialState.COMPLETE).count()
    assert complete > 0

    # The optimization history: a Plotly SVG with one point per completed trial.
    points = page.locator("#chart-history .scatterlayer .trace:first-child .point")
    page.locator("#chart-history").scroll_into_view_if_needed()
    page.wait_for_function(
        "n => document.querySelectorAll("
        "'#chart-history .scatterlayer .trace:first-child .point').length === n",
        arg=complete,
        timeout=30_000,
    )
    assert points.count() == complete
    # Parallel coordinates draw with WebGL: under the pages' CSP (no 'unsafe-eval') only
    # because the hub's plotly.js bundles their precompiled programs.
    page.locator("#chart-parallel").scroll_into_view_if_needed()
    page.locator("#chart-parallel .parcoords .axis").first.wait_for()
    page.wait_for_function(
        "n => document.querySelector('#summary [data-count=ALL]').textContent.trim() === n",
        arg=str(study.trials.count()),
    )
    if SCREENSHOTS:
        load_every_chart(page)
        page.wait_for_timeout(500)
    shoot(page, "study", until="#charts")

    # Open a trial from the table.
    # The first of equal best values, as Optuna's best_trial (accuracies often tie).
    best = study.trials.filter(state=TrialState.COMPLETE).order_by("-value", "number").first()
    page.click(f"#summary a:has-text('Trial #{best.number}')")
    page.wait_for_url(re.compile(rf"/trials/{best.pk}/$"))
    assert page.locator("h1").inner_text().startswith(f"Trial #{best.number}")
    assert "loss" in page.inner_text("table")
    page.locator("#trial-curve .main-svg").first.wait_for()
    shoot(page, "trial")

    # Download the trials as CSV.
    page.go_back()
    with page.expect_download() as download_info:
        page.click("a:has-text('Download CSV')")
    path = tmp_path / "trials.csv"
    download_info.value.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == study.trials.count()

    # A team: create it, add a viewer, and move the study into it, private.
    page.click("nav >> text=Teams")
    page.fill("#id_name", "vision")
    page.click("button:has-text('Create team')")
    page.locator("h1:has-text('vision')").wait_for()
    page.fill("#id_username", "bob")
    page.select_option("#add-member select[name=role]", "viewer")
    page.click("button:has-text('Add member')")
    assert "bob" in page.inner_text("#member-table")
    page.goto(f"/studies/{study.pk}/edit/")
    page.select_option("#id_team", label="Team vision")
    page.select_option("#id_visibility", "private")
    page.click("button:has-text('Save changes')")
    page.wait_for_url(f"{hub_server}/studies/{study.pk}/")
    study.refresh_from_db()
    assert (study.team.name, study.visibility) == ("vision", "private")
    assert "study.edited" in page.inner_text("#activity-table")
    page.goto(f"/teams/{study.team_id}/")
    assert "sgd-digits" in page.inner_text("#team-study-table")
    shoot(page, "team")

    if SCREENSHOTS:
        take_list_and_compare_screenshots(page, study, alice)


def take_list_and_compare_screenshots(page, study: Study, alice) -> None:  # noqa: ANN001
    """A second study to compare with, run in this process with the same objective."""
    from studies.objectives.registry import get_objective

    random_study = Study.objects.create(
        name="sgd-digits-random",
        owner=alice,
        directions=["maximize"],
        objective="digits_sgd",
        search_space=study.search_space,
        sampler={"type": "random", "options": {}, "seed": 2},
        pruner={"type": "nop", "options": {}},
    )
    objective = get_objective("digits_sgd").make_objective(random_study.search_space)
    optuna_study_for(random_study).optimize(objective, n_trials=N_TRIALS)
    page.goto("/")
    shoot(page, "study-list")
    page.goto(f"/studies/compare/?ids={study.pk}&ids={random_study.pk}")
    page.locator("#compare-chart .main-svg").first.wait_for()
    shoot(page, "compare")
    page.goto("/tokens/")
    page.fill("#id_name", "gpu-box")
    page.fill("#id_expires_in_days", "30")
    page.click("button:has-text('Create token')")
    page.locator("#new-token").wait_for()
    shoot(page, "tokens")
