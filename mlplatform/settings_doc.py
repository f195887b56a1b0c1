"""Render the README's generated tables (settings, exit codes): ``python -m mlplatform.settings_doc --write``."""

from __future__ import annotations

import re
import sys

from mlplatform.settings import PROJECT_ROOT, Settings

START, END = "<!-- settings:start -->", "<!-- settings:end -->"
EXIT_START, EXIT_END = "<!-- exitcodes:start -->", "<!-- exitcodes:end -->"


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


def exit_code_table() -> str:
    """One row per exit code: number, name, meaning."""
    from mlplatform.errors import EXIT_CODE_MEANINGS, ExitCode

    rows = ["| code | name | meaning |", "|---:|---|---|"]
    rows += [f"| {code.value} | `{code.name}` | {EXIT_CODE_MEANINGS[code]} |" for code in ExitCode]
    return "\n".join(rows) + "\n"


def _replace(text: str, start: str, end: str, body: str) -> str:
    return re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _m: f"{start}\n{body}{end}", text, flags=re.S)


def write_readme() -> bool:
    """Replace the README's generated tables; True if anything changed."""
    readme = PROJECT_ROOT / "README.md"
    text = readme.read_text()
    new = _replace(_replace(text, START, END, settings_table()), EXIT_START, EXIT_END, exit_code_table())
    if new != text:
        readme.write_text(new)
    return new != text


if __name__ == "__main__":
    if "--write" in sys.argv:
        print("README updated" if write_readme() else "README already up to date")
    else:
        print(settings_table())
