"""Render the settings as the README's configuration table: ``python -m mlplatform.settings_doc --write``."""

from __future__ import annotations

import re
import sys

from mlplatform.settings import PROJECT_ROOT, Settings

START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def _default(field) -> str:
    value = field.default
    if value is None:
        return "—"
    text = str(value)
    if str(PROJECT_ROOT) in text:
        text = text.replace(str(PROJECT_ROOT) + "/", "") + " (of this checkout)"
    return f"`{text}`"


def settings_table() -> str:
    """One row per setting: environment variable, default, description."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `MLPLATFORM_{name.upper()}` | {_default(field)} | {description} |")
    return "\n".join(rows) + "\n"


def write_readme() -> bool:
    """Replace the README's settings table; True if it changed."""
    readme = PROJECT_ROOT / "README.md"
    text = readme.read_text()
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), f"{START}\n{settings_table()}{END}", text, flags=re.S)
    if new != text:
        readme.write_text(new)
    return new != text


if __name__ == "__main__":
    if "--write" in sys.argv:
        print("README updated" if write_readme() else "README already up to date")
    else:
        print(settings_table())
