import time

from nngk_lab import widgets


def test_buttons_change_what_is_shown_quickly():
    w = widgets.TrainablePlayground(steps=30)
    text, image = w.text.value, bytes(w.plot.value)
    started = time.perf_counter()
    w.train_button.click()
    assert time.perf_counter() - started < 1.0
    assert "step 30" in w.text.value and w.text.value != text and bytes(w.plot.value) != image
    w.refresh_every.value = 0
    w.train_button.click()
    assert "refreshed 35 steps ago" in w.text.value
    w.refresh_button.click()
    assert "refreshed 0 steps ago" in w.text.value and "0.00 sigma" in w.text.value
    w.unit_length.value = False
    assert "step 0" in w.text.value and not w.view.unit_length
