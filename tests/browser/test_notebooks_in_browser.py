"""The notebooks as a student uses them: JupyterLab in headless Chromium, Run All Cells,
then move a widget and check the output on screen changes.

Screenshots go to test-artifacts/ (listed at the end of pytest's output).
Run only these: ``pytest -m browser``; everything else: ``pytest -m "not browser"``.
"""

import re

import pytest

pytestmark = pytest.mark.browser

SIGMA_NOTEBOOK = "tests/browser_fixtures/slider_demo.ipynb"
GALLERY_NOTEBOOK = "notebooks/05_neighbour_galleries.ipynb"


def press_slider(widget, presses: int = 3) -> None:
    """Focus the slider's handle and press PageUp (PageDown from the maximum), as a
    keyboard user would."""
    handle = widget.locator(".noUi-handle")
    at_max = float(handle.get_attribute("aria-valuenow")) >= float(handle.get_attribute("aria-valuemax"))
    handle.focus()
    for _ in range(presses):
        handle.press("PageDown" if at_max else "PageUp")


def pick_another(widget) -> None:
    """Choose a different value in a dropdown or slider widget."""
    select = widget.locator("select")
    if select.count():
        options = select.locator("option").all_inner_texts()
        current = select.evaluate("s => s.selectedIndex")
        select.select_option(index=(current + 1) % len(options))
    else:
        press_slider(widget, presses=1)


def readout(widget) -> str:
    return widget.locator(".widget-readout").inner_text()


def accuracies(display: dict) -> list[str]:
    """The accuracy numbers shown ("test accuracy: 0.983 ...")."""
    return [m.group(1) for text in display["texts"] for m in re.finditer(r"accuracy:\s*([0-9.]+)", text, re.I)]


def test_sigma_slider_changes_displayed_accuracy_or_probabilities(open_notebook):
    notebook = open_notebook(SIGMA_NOTEBOOK)
    notebook.run_all_cells()
    slider = notebook.widget("sigma")
    before, sigma_before = notebook.displayed(), readout(slider)
    assert accuracies(before), f"no accuracy shown: {before['texts']}"
    assert before["images"], "no plot shown under the widgets"
    notebook.screenshot("sigma-before", slider)

    press_slider(slider)
    after = notebook.wait_for_display_change(before)
    notebook.assert_no_errors()
    notebook.screenshot("sigma-after", slider)

    assert readout(slider) != sigma_before
    assert accuracies(after), f"no accuracy shown after moving sigma: {after['texts']}"
    assert accuracies(after) != accuracies(before) or after["images"] != before["images"], \
        "moving sigma changed neither the accuracy nor the probability plot"


def test_gallery_redraws_for_another_query(open_notebook):
    notebook = open_notebook(GALLERY_NOTEBOOK)
    notebook.run_all_cells()
    query = notebook.widget("query")
    before = notebook.displayed()
    assert before["images"], "no gallery shown under the widgets"

    pick_another(query)
    after = notebook.wait_for_display_change(before)
    notebook.assert_no_errors()
    notebook.screenshot("gallery-another-query", query)

    assert after["images"] and after["images"] != before["images"], "the gallery was not redrawn"
