"""UTC datetimes as text: the same text as isoformat, written faster (switchyard/timetext.py)."""
from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from switchyard.timetext import iso_z, utc_text


def _moments():
    rng = random.Random(20261208)
    yield datetime(2026, 12, 8, 3, 4, 5, tzinfo=UTC)  # no microseconds: isoformat writes none
    yield datetime(2026, 12, 8, 3, 4, 5, 7, tzinfo=UTC)
    yield datetime(1, 1, 1, tzinfo=UTC)
    yield datetime(999, 2, 3, 4, 5, 6, 999999, tzinfo=UTC)
    yield datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    for _ in range(2000):
        moment = datetime(1, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(315_537_897_600),
                                                           microseconds=rng.choice([0, rng.randrange(1_000_000)]))
        yield moment
        yield moment.replace(microsecond=moment.microsecond // 1000 * 1000)  # db_now's milliseconds


@pytest.mark.parametrize("sep", ["T", " "])
def test_utc_text_is_isoformat_less_the_offset(sep):
    for moment in _moments():
        assert utc_text(moment, sep) == moment.isoformat(sep).removesuffix("+00:00"), moment


def test_other_time_zones_are_written_in_utc():
    moment = datetime(2026, 12, 8, 9, 34, 5, 250000, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert utc_text(moment) == "2026-12-08T04:04:05.250000"
    assert iso_z(moment) == "2026-12-08T04:04:05.250000Z"
    # UTC, but not the `datetime.UTC` object: the general way, the same text.
    assert iso_z(datetime(2026, 12, 8, 4, 4, 5, tzinfo=ZoneInfo("UTC"))) == "2026-12-08T04:04:05Z"


def test_the_api_form_ends_in_z():
    for moment in _moments():
        assert iso_z(moment) == moment.isoformat().replace("+00:00", "Z"), moment
