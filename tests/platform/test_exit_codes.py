"""One table of exit codes: unique values, every error maps into it, and the README shows it."""

from __future__ import annotations

import importlib
import pkgutil

from mlplatform.errors import EXIT_CODE_MEANINGS, ExitCode, MLPlatformError
from mlplatform.settings import PROJECT_ROOT

PACKAGES = ("mlplatform", "training", "serving", "monitoring", "scoring", "orchestration", "cli")


def _all_error_classes() -> set[type[MLPlatformError]]:
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    out: set[type[MLPlatformError]] = set()
    todo = [MLPlatformError]
    while todo:
        cls = todo.pop()
        out.add(cls)
        todo.extend(cls.__subclasses__())
    return out


def test_exit_codes_are_unique_and_described():
    values = [c.value for c in ExitCode]
    assert len(values) == len(set(values))
    assert set(EXIT_CODE_MEANINGS) == set(ExitCode)


def test_every_error_class_uses_a_code_of_the_table():
    classes = _all_error_classes()
    assert len(classes) > 10  # the walk found the errors of every part, not just the base
    for cls in classes:
        assert isinstance(cls.exit_code, ExitCode), f"{cls.__module__}.{cls.__name__} exits {cls.exit_code!r}"


def test_errors_that_used_to_collide_now_differ():
    from mlplatform.errors import AuditLogError, ModelUnavailable, RegistryError, Unauthorized
    from monitoring.check import CheckResult, PartOutcome

    assert RegistryError.exit_code != Unauthorized.exit_code
    assert AuditLogError.exit_code != ModelUnavailable.exit_code
    breach = CheckResult([PartOutcome("skew", "breach", "", ["skew: drifted"])], {})
    assert breach.exit_code == ExitCode.BREACH and ExitCode.BREACH not in {c.exit_code for c in _all_error_classes()}


def test_readme_lists_the_exit_codes():
    from mlplatform.settings_doc import EXIT_END, EXIT_START, exit_code_table

    readme = (PROJECT_ROOT / "README.md").read_text()
    assert readme.split(EXIT_START)[1].split(EXIT_END)[0].strip() == exit_code_table().strip()
