"""Times from people: ISO-8601 or relative to now (today, yesterday, offsets), one parser for every option."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlplatform.errors import InvalidInputError
from mlplatform.timeutil import parse_interval, parse_time

NOW = datetime(2031, 5, 7, 15, 42, 9, 123456, tzinfo=UTC)
MIDNIGHT = datetime(2031, 5, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("today", MIDNIGHT),
        ("yesterday", MIDNIGHT - timedelta(days=1)),
        ("-2d", NOW - timedelta(days=2)),
        ("now-6h", NOW - timedelta(hours=6)),
        ("today-15d+12h", datetime(2031, 4, 22, 12, tzinfo=UTC)),
        ("Today - 14d", datetime(2031, 4, 23, tzinfo=UTC)),
        ("yesterday+30m", datetime(2031, 5, 6, 0, 30, tzinfo=UTC)),
        ("+1w", NOW + timedelta(days=7)),
        ("now-90s", NOW - timedelta(seconds=90)),
        ("today-1.5d", datetime(2031, 5, 5, 12, tzinfo=UTC)),
        ("2026-10-01", datetime(2026, 10, 1, tzinfo=UTC)),
        ("2026-10-01T12:00:00+02:00", datetime(2026, 10, 1, 10, tzinfo=UTC)),
    ],
)
def test_relative_and_absolute_times(text, expected):
    assert parse_time(text, now=NOW) == expected


def test_relative_times_follow_the_clock():
    before = datetime.now(UTC)
    got, two_hours_ago = parse_time("today"), parse_time("-2h")
    after = datetime.now(UTC)
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert got in {before.replace(hour=0, minute=0, second=0, microsecond=0),
                   after.replace(hour=0, minute=0, second=0, microsecond=0)}
    assert before - timedelta(hours=2) <= two_hours_ago <= after - timedelta(hours=2)


@pytest.mark.parametrize("text", ["", "  ", "tomorrow", "today-", "-2x", "2d", "now--2d", "not-a-time"])
def test_not_a_time_is_a_clear_error(text):
    with pytest.raises(InvalidInputError, match="relative time") as err:
        parse_time(text, now=NOW)
    assert repr(text) in str(err.value)


def test_cli_options_take_relative_times(tmp_path, cli):
    """Every command's --since/--start goes through the same parser: a relative time passes, junk is exit 2."""
    from mlplatform.audit import record
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, actor="carol")
    record(settings, "apply", "registry")
    recent = cli(settings, ["audit", "--since", "now-1h", "--jsonl"])
    assert recent.exit_code == 0 and '"carol"' in recent.output
    later = cli(settings, ["audit", "--since=+1h", "--jsonl"])
    assert later.exit_code == 0 and later.output.strip() == ""
    bad = cli(settings, ["audit", "--since", "now-1y"])
    assert bad.exit_code == 2 and "now-1y" in bad.output


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600), ("15m", 900), ("1d12h", 129_600), ("90s", 90),
                                               ("0.5h", 1800), (" 2 D ", 172_800)])
def test_lengths_of_time(text, seconds):
    assert parse_interval(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "h", "1", "0h", "1h x", "-1h", "1y", "now"])
def test_what_is_no_length_of_time_is_refused_by_name(text):
    with pytest.raises(InvalidInputError, match="length of time"):
        parse_interval(text)
