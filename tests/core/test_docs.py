"""The README's settings table stays in step with the Settings model."""

from pathlib import Path

from conveyor_core.settings import Settings

README = Path(__file__).parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme():
    text = README.read_text()
    missing = [name for name in Settings.model_fields if f"`CONVEYOR_{name.upper()}`" not in text]
    assert missing == [], f"settings missing from README.md: {missing}"
