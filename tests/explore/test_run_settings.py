"""The settings table: every value is the run's, each with one reason."""

import dataclasses

from nngk_lab import explore
from nngk_lab.explore.run_settings import DIGITS_REASONS
from nngk_lab.training.config import TrainConfig, make_config


def test_digits_defaults_get_the_reason_they_were_chosen():
    config = make_config()
    rows = {name: (value, reason) for name, value, reason in explore.settings_rows(config)}
    for name, (default, reason) in DIGITS_REASONS.items():
        assert getattr(config, name) == default, f"the digits default of {name} changed: update its reason"
        assert rows[name][1] == reason
    assert rows["sigma"][0] == "0.2" and rows["num_neighbours"][0] == "20"


def test_other_values_get_the_settings_help_text(tmp_path):
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
    rows = {name: (value, reason) for name, value, reason in explore.settings_rows(dict(sigma=0.5, input_size=16))}
    assert rows["sigma"] == ("0.5", helps["sigma"]) and rows["input_size"] == ("16", helps["input_size"])
    assert rows["num_neighbours"][1] == DIGITS_REASONS["num_neighbours"][1]  # unchanged: still the digits' reason
    photo = make_config(data_dir=str(tmp_path), model="small_cnn")
    assert all(reason == helps[name] for name, _, reason in explore.settings_rows(photo))


def test_settings_table_is_markdown_with_a_row_per_setting():
    table = explore.settings_table({})
    lines = table.splitlines()
    assert lines[0] == "| setting | value | why |" and len(lines) == 2 + len(explore.settings_rows({}))
    assert "| `max_time` |" not in table  # no time limit: left out, not shown as None
