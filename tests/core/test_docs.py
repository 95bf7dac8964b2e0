"""The README's settings table is the one generated from the Settings model."""

from pathlib import Path

from conveyor_core.settings import settings_table

README = Path(__file__).parents[2] / "README.md"


def test_the_readme_settings_table_matches_the_settings_model():
    assert settings_table() in README.read_text(), (
        "README.md's settings table is stale: run `make settings-table` and paste it"
    )
