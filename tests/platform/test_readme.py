"""The README stays true: every setting is documented, and CI runs the README's test command."""

from __future__ import annotations

from mlplatform.settings import PROJECT_ROOT, Settings

README = (PROJECT_ROOT / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [f"MLPLATFORM_{name.upper()}" for name in Settings.model_fields
               if f"MLPLATFORM_{name.upper()}" not in README]
    assert not missing, f"README's configuration table lacks {missing}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in README
    ci = (PROJECT_ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == "make test"


def test_configuration_table_is_current():
    from mlplatform.settings_doc import END, START, settings_table

    section = README.split(START)[1].split(END)[0].strip()
    assert section == settings_table().strip(), "run `make docs` to refresh the README's configuration table"
