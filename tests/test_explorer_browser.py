"""The explorer end to end in a real browser: Debian's chromium driven by Playwright.

Playwright's own browser download is never used: it launches /usr/bin/chromium (installed by
`.ci/run`). Screenshots of each state go to test-artifacts/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clearlstm.teach.explain import explain_sequence
from clearlstm.web.server import start_in_thread

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium "
    "(apt-get install -y chromium; .ci/run does it)",
)


@pytest.fixture(scope="module")
def server(models_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    """The two trained models and one that cannot be opened (its settings are not JSON)."""
    folder = tmp_path_factory.mktemp("browser") / "models"
    shutil.copytree(models_folder, folder)
    (folder / "broken").mkdir()
    (folder / "broken" / "settings.json").write_text("{ not json")
    (folder / "broken" / "model.safetensors").write_bytes(b"\x00" * 10)
    running = start_in_thread("127.0.0.1", 0, folder)
    yield running
    running.shutdown()
    running.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=FLAGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    yield page
    page.close()
    assert not errors, errors


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def number(page, selector: str) -> float:
    return float(page.inner_text(selector))


def test_input_slider_to_minus_10_closes_the_forget_gate(page):
    # The series' step (x = 1, C = 2, h = 1): the forget gate keeps 99.7%.
    assert number(page, "#forget-gate") == pytest.approx(0.997401, abs=1e-6)
    before = page.inner_text("#sentence-forget")
    assert "keeps 99.7% of the long-term memory" in before
    shot(page, "explorer-step-series")

    page.fill("#slider-x", "-10")
    page.wait_for_function("parseFloat(document.getElementById('forget-gate').textContent) < 0.01")
    after = page.inner_text("#sentence-forget")
    assert after != before and "essentially forgotten" in after
    exact = explain_sequence([-10.0], 2.0, 1.0).steps[0]
    assert number(page, "#forget-gate") == pytest.approx(exact.forget_gate, rel=1e-3)
    assert number(page, "#forget-z") == pytest.approx(-11.98, abs=1e-6)
    assert page.inner_text("#headline") == after
    assert page.inner_text("#out-x") == "-10.00"
    shot(page, "explorer-step-forget-closed")


def test_weight_slider_changes_the_stage(page):
    page.fill("#w-forget-b", "-5")
    page.wait_for_function("document.getElementById('forget-z').textContent.startsWith('-0.67')")
    assert number(page, "#forget-z") == pytest.approx(2.70 + 1.63 - 5.0, abs=1e-6)


def test_companies_sequence_plays_step_by_step(page):
    page.click("#tab-sequence")
    page.click("#step-once")
    page.wait_for_selector("#rows-a tr")
    assert page.locator("#rows-a tr").count() == 1
    assert page.inner_text("#playback-day") == "Day 1 of 4"
    page.click("#play")
    page.wait_for_selector("#prediction-b:has-text('Prediction for day 5')", timeout=15_000)
    assert page.locator("#rows-a tr").count() == 4 and page.locator("#rows-b tr").count() == 4
    assert page.inner_text("#prediction-a") == "Prediction for day 5: 0.006393"
    assert page.inner_text("#prediction-b") == "Prediction for day 5: 0.969393"
    assert "Day 4" in page.inner_text("#sentence-a")
    assert page.locator("#memory-chart polyline").count() == 4
    shot(page, "explorer-sequence-companies")


def test_saved_model_heatmap_with_hover_values(page, models_folder: Path):
    page.click("#tab-model")
    page.wait_for_selector("#model-select option[value=wave]", state="attached")
    page.select_option("#model-select", "wave")
    page.fill("#model-sequence", "0.1, 0.5, -0.3, 0.8, 0.2, -0.6")
    page.click("#show-model")
    canvas = page.locator("canvas[data-field=forget_gate]")
    canvas.wait_for()
    assert page.locator("#heatmaps canvas").count() == 6
    box = canvas.bounding_box()
    # The top-left cell: the longest-memory unit at step 1.
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    tooltip = page.locator("#tooltip")
    tooltip.wait_for(state="visible")
    text = tooltip.inner_text()
    assert text.startswith("forget gate f: unit ") and ", step 1 = " in text

    from clearlstm.viz.saved_models import load_saved_model

    subject = load_saved_model(models_folder / "wave").subject_from_numbers(
        [0.1, 0.5, -0.3, 0.8, 0.2, -0.6]
    )
    trace = subject.run()
    unit = trace.memory_summary()[0].unit
    assert text.startswith(f"forget gate f: unit {unit}, step 1")
    value = float(tooltip.get_attribute("data-value"))
    assert value == pytest.approx(float(trace[0, 0].forget_gate[0, 0, unit]), rel=1e-6)
    shot(page, "explorer-model-heatmap")


def test_text_model_and_a_refused_sequence(page):
    page.click("#tab-model")
    page.wait_for_selector("#model-select option[value=words]", state="attached")
    page.select_option("#model-select", "words")
    page.fill("#model-sequence", "to be")
    page.click("#show-model")
    page.locator("canvas[data-field=c]").wait_for()
    page.fill("#model-sequence", "zzz%")
    page.click("#show-model")
    page.wait_for_selector("#status:has-text('never saw')")


def test_a_model_that_cannot_be_opened_shows_its_error(page):
    page.click("#tab-model")
    page.wait_for_selector("#model-select option[value=broken]", state="attached")
    assert page.inner_text("#model-select option[value=broken]") == "broken (cannot be opened)"
    assert page.locator("#model-select option").count() == 3  # wave and words listed as ever
    page.select_option("#model-select", "broken")
    description = page.inner_text("#model-description")
    assert description.startswith("cannot be opened: ") and "not valid JSON" in description
    assert page.locator("#show-model").is_disabled()
    shot(page, "explorer-model-error-entry")
    page.select_option("#model-select", "wave")
    assert "forecaster of y" in page.inner_text("#model-description")
    assert page.locator("#show-model").is_enabled()
