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


def shot(page, name: str, selector: str | None = None) -> Path:
    """The whole page, or the one element ``selector`` names (a view within the page)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if selector is None:
        page.screenshot(path=str(path), full_page=True)
    else:
        page.locator(selector).screenshot(path=str(path))
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


TEXT = "to be or not to be that is the question"


def show_model(page, name: str, sequence: str | None = None) -> None:
    page.click("#tab-model")
    page.wait_for_selector(f"#model-select option[value={name}]", state="attached")
    page.select_option("#model-select", name)
    if sequence is not None:
        page.fill("#model-sequence", sequence)
    page.click("#show-model")
    page.locator("canvas[data-field=forget_gate]").wait_for()
    page.wait_for_selector("#analysis:not([hidden])")


def drag(page, first: str, last: str) -> None:
    a, b = page.locator(first).bounding_box(), page.locator(last).bounding_box()
    page.mouse.move(a["x"] + 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=4)
    page.mouse.up()


def steps_with(page, cls: str) -> list[int]:
    spans = page.locator(f"#sequence-strip .ch.{cls}")
    return [int(s) for s in spans.evaluate_all("spans => spans.map((s) => s.dataset.step)")]


def test_span_search_highlights_the_matches_on_the_text(page, models_folder: Path):
    from clearlstm.analysis import find_spans
    from clearlstm.viz.saved_models import load_saved_model

    show_model(page, "words", TEXT)
    drag(page, "#sequence-strip .ch[data-step='0']", "#sequence-strip .ch[data-step='1']")
    assert (page.input_value("#span-start"), page.input_value("#span-stop")) == ("1", "2")
    assert steps_with(page, "sel") == [0, 1]
    page.select_option("#span-quantity", "c")
    page.fill("#span-threshold", "0.2")
    page.click("#find-spans")
    page.wait_for_selector("#span-matches tbody tr")
    trace = load_saved_model(models_folder / "words").subject_from_text(TEXT).run()
    expected = find_spans(trace[0, 0].c[:, 0, :], 0, 2, 0.2).matches
    assert expected and page.locator("#span-matches tbody tr").count() == len(expected)
    matched = sorted({t for m in expected for t in range(m.start, m.stop)})
    assert steps_with(page, "match") == matched
    first = expected[0]
    row = "#span-matches tbody tr:first-child"
    assert page.inner_text(f"{row} td.text") == TEXT[first.start : first.stop]
    assert "steps 1–2 (“to”), c above 0.2" in page.inner_text("#span-summary")
    page.hover(row)
    assert steps_with(page, "focus") == list(range(first.start, first.stop))
    shot(page, "explorer-span-search", "#analysis")


def test_span_search_on_a_series_shades_the_selection(page):
    show_model(page, "wave")
    page.fill("#span-start", "3")
    page.fill("#span-stop", "5")
    page.fill("#span-threshold", "-1")
    page.click("#find-spans")
    page.wait_for_selector("#span-summary")
    assert "steps 3–5, h above -1" in page.inner_text("#span-summary")
    assert page.locator("#sequence-strip rect.sel").count() == 1
    assert page.locator("svg.unit-lines polyline").count() == 6  # every unit is above -1


def test_forecast_attribution_shows_bars_and_completeness(page, models_folder: Path):
    show_model(page, "wave")
    page.click("#attribute-forecast")
    page.wait_for_selector("#completeness")
    assert page.locator("#attribution-bars rect.bar").count() == 8  # the window
    error = float(page.get_attribute("#completeness", "data-relative-error"))
    assert 0 <= error < 0.01
    shown = page.inner_text("#relative-error")
    assert shown.endswith("%") and float(shown[:-1]) == pytest.approx(100 * error, rel=0.05)
    assert "within 1% ✓" in page.inner_text("#completeness")
    assert "Forecast " in page.inner_text("#attribution-summary")
    assert page.locator("#sequence-strip rect.window").count() == 1
    shot(page, "explorer-forecast-attribution", "#analysis")


def test_why_forget_from_a_click_on_the_forget_gate_heatmap(page, models_folder: Path):
    from clearlstm.viz.saved_models import load_saved_model

    show_model(page, "words", TEXT)
    canvas = page.locator("canvas[data-field=forget_gate]")
    box = canvas.bounding_box()
    step = 7  # the 'r' of "to be or"
    page.mouse.click(box["x"] + (step + 0.5) * box["width"] / len(TEXT), box["y"] + 2)
    page.wait_for_selector("#forgetting-summary")
    trace = load_saved_model(models_folder / "words").subject_from_text(TEXT).run()
    unit = trace.memory_summary()[0].unit  # the top row: the longest-memory unit
    assert page.input_value("#why-unit") == str(unit) and page.input_value("#why-step") == "8"
    heading = page.inner_text("#attribution-result h3")
    assert heading == f"Why did unit {unit} (layer 0) forget at “{TEXT[step]}” (step 8)?"
    assert page.locator("#attribution-bars rect.bar").count() == step + 1  # the steps it read
    assert float(page.get_attribute("#completeness", "data-relative-error")) < 0.01
    gate = float(trace[0, 0].forget_gate[step, 0, unit])
    assert f"f = {gate:.6f}" in page.inner_text("#forgetting-summary")
    assert steps_with(page, "window") == list(range(step + 1))
    page.fill("#why-step", "")  # no step: where this unit's forget gate is lowest
    page.click("#why-forget")
    lowest = int(trace[0, 0].forget_gate[:, 0, unit].argmin())
    page.wait_for_selector(f"#attribution-result h3:has-text('(step {lowest + 1})?')")
    assert page.input_value("#why-step") == str(lowest + 1)
    assert float(page.get_attribute("#completeness", "data-relative-error")) < 0.01
    shot(page, "explorer-why-forget", "#analysis")
