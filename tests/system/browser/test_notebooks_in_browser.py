"""The notebooks as a student uses them: JupyterLab in headless Chromium, Run All Cells,
then move a widget and check the output on screen changes.

Screenshots go to test-artifacts/ (listed at the end of pytest's output).
Run only these: ``pytest -m browser``; everything else: ``pytest -m "not browser"``.
"""

import re

import pytest

pytestmark = pytest.mark.browser

SIGMA_NOTEBOOK = "notebooks/03_sigma_sensitivity.ipynb"
GALLERY_NOTEBOOK = "notebooks/05_neighbour_galleries.ipynb"
PLAYGROUND_NOTEBOOK = "notebooks/02_training.ipynb"


def press_slider(widget, presses: int = 3) -> None:
    """Focus the slider's handle and press PageUp (PageDown from the maximum), as a
    keyboard user would."""
    handle = widget.locator(".noUi-handle")
    at_max = float(handle.get_attribute("aria-valuenow")) >= float(handle.get_attribute("aria-valuemax"))
    handle.focus()
    for _ in range(presses):
        handle.press("PageDown" if at_max else "PageUp")


def move(notebook, widget, name: str, presses: int = 3) -> tuple[dict, dict]:
    """What the notebook shows before and after pressing ``widget`` (screenshots
    ``name``-before and -after), with no error in between."""
    before = notebook.displayed()
    notebook.screenshot(f"{name}-before", widget)
    press_slider(widget, presses)
    after = notebook.wait_for_display_change(before)
    notebook.assert_no_errors()
    notebook.screenshot(f"{name}-after", widget)
    return before, after


def readout(widget) -> str:
    return widget.locator(".widget-readout").inner_text()


def accuracies(display: dict) -> list[str]:
    """The accuracy numbers shown ("test accuracy: 0.983 ...")."""
    return [m.group(1) for text in display["texts"] for m in re.finditer(r"accuracy:\s*([0-9.]+)", text, re.I)]


def test_sigma_slider_changes_displayed_accuracy_or_probabilities(open_notebook):
    notebook = open_notebook(SIGMA_NOTEBOOK)
    notebook.run_all_cells()
    slider = notebook.widget("sigma")
    sigma_before = readout(slider)
    before, after = move(notebook, slider, "sigma")
    assert accuracies(before), f"no accuracy shown: {before['texts']}"
    assert before["images"], "no plot shown under the widgets"
    assert readout(slider) != sigma_before
    assert accuracies(after), f"no accuracy shown after moving sigma: {after['texts']}"
    assert accuracies(after) != accuracies(before) or after["images"] != before["images"], \
        "moving sigma changed neither the accuracy nor the probability plot"


def test_gallery_redraws_for_another_query(open_notebook):
    notebook = open_notebook(GALLERY_NOTEBOOK)
    notebook.run_all_cells()
    query = notebook.widget("query")
    query_before = readout(query)
    before, after = move(notebook, query, "gallery", presses=1)
    assert before["images"], "no gallery shown under the widgets"
    assert readout(query) != query_before
    assert after["images"] and after["images"] != before["images"], "the gallery was not redrawn"


def test_playground_sigma_slider_redraws_regions_and_probabilities(open_notebook):
    notebook = open_notebook(PLAYGROUND_NOTEBOOK)
    notebook.run_all_cells()
    slider = notebook.widget("sigma")
    sigma_before = readout(slider)
    before, after = move(notebook, slider, "playground")
    assert any("p(class | query)" in text for text in before["texts"]), f"no probabilities shown: {before['texts']}"
    assert before["images"], "no playground figure shown under the sliders"
    assert readout(slider) != sigma_before
    assert f"sigma = {readout(slider)}" in " ".join(after["texts"]), \
        f"the text does not show the slider's sigma {readout(slider)}: {after['texts']}"
    assert after["images"] != before["images"], "moving sigma did not redraw the playground"


def test_playground_centre_choice_moves_the_weighted_centre(open_notebook):
    notebook = open_notebook(PLAYGROUND_NOTEBOOK)
    notebook.run_all_cells()
    centre = notebook.widget("centre")
    before = notebook.displayed()
    notebook.screenshot("playground-centre-before", centre)
    centre.locator("select").select_option(index=1)  # the names run nearest first: "class c, 2nd nearest"
    after = notebook.wait_for_display_change(before)
    notebook.assert_no_errors()
    notebook.screenshot("playground-centre-after", centre)
    assert any(", nearest, magenta square)" in text for text in before["texts"]), \
        f"the query's nearest centre is not the one weighted at first: {before['texts']}"
    assert any(", 2nd nearest, magenta square)" in text for text in after["texts"]), \
        f"the text does not name the centre picked: {after['texts']}"
    assert after["images"] != before["images"], "picking another centre did not move its square on the map"


def test_gallery_order_walks_the_stored_images(open_notebook):
    notebook = open_notebook(GALLERY_NOTEBOOK)
    notebook.run_all_cells()
    move(notebook, notebook.widget("query"), "gallery-query", presses=1)  # off position 1, which the order resets to
    order = notebook.widget("order")
    before = notebook.displayed()
    notebook.screenshot("gallery-order-before", order)
    order.locator("select").select_option(label="as stored, class by class")
    after = notebook.wait_for_display_change(before)
    notebook.assert_no_errors()
    notebook.screenshot("gallery-order-after", order)
    assert any("position 1 of" in text for text in after["texts"]), f"no position shown: {after['texts']}"
    assert not any("position 1 of" in text for text in before["texts"])


def test_trainable_playground_train_button_changes_the_shown_loss(open_notebook):
    notebook = open_notebook(PLAYGROUND_NOTEBOOK)
    notebook.run_all_cells()
    button = notebook.page.locator("button", has_text=re.compile(r"^\s*train steps\s*$"))
    assert button.count() == 1
    before = notebook.displayed()
    notebook.screenshot("trainable-before", button)
    button.click()
    after = notebook.wait_for_display_change(before)
    notebook.assert_no_errors()
    notebook.screenshot("trainable-after", button)
    assert any("no step yet" in text for text in before["texts"]), f"no untrained state shown: {before['texts']}"
    assert any(re.search(r"step 50: loss [0-9.]+", text) for text in after["texts"]), \
        f"the loss after training is not shown: {after['texts']}"
