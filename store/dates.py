"""Absolute dates a query names, and the boost for memories observed then.

A query naming a day ("on 3 June, 2023", "May 23, 2023"), a month of a year
("in July 2023") or a year boosts memories observed in that period or within a
week after it (people tell of an event after it happens; a day of slack before
covers time zones). On the LoCoMo development half this raised recall
(tests/bench/locomo.py; the figures are in the README's performance section).
"""

from __future__ import annotations

import datetime as dt
import re

DATE_BOOST = 1.0  # a memory in the period the query names scores (1 + DATE_BOOST) times more
DATE_SLACK_BEFORE = dt.timedelta(days=1)
DATE_SLACK_AFTER = dt.timedelta(days=7)

_MONTHS = {
    name: i
    for i, name in enumerate(
        (
            "january february march april may june july august september october november december"
        ).split(),
        1,
    )
}
_MONTH = "(" + "|".join(_MONTHS) + ")"
_DAY_MONTH_YEAR = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?(?: of)? {_MONTH},? (\d{{4}})\b", re.I)
_MONTH_DAY_YEAR = re.compile(rf"\b{_MONTH} (\d{{1,2}})(?:st|nd|rd|th)?,? (\d{{4}})\b", re.I)
_MONTH_YEAR = re.compile(rf"\b{_MONTH},? (\d{{4}})\b", re.I)
_YEAR = re.compile(r"\b(19\d\d|20\d\d)\b")


def _day(year: int, month: int, day: int) -> tuple[dt.datetime, dt.datetime] | None:
    try:
        start = dt.datetime(year, month, day, tzinfo=dt.UTC)
    except ValueError:
        return None  # "31 February": not a date, so no time filter
    return start, start + dt.timedelta(days=1)


def named_period(text: str) -> tuple[dt.datetime, dt.datetime] | None:
    """The period [start, end) of the first absolute date the text names, if any.

    Days, months of a year and years are understood; relative phrases ("last
    week") are not, since a search has no reference time to resolve them.
    """
    if m := _DAY_MONTH_YEAR.search(text):
        return _day(int(m[3]), _MONTHS[m[2].lower()], int(m[1]))
    if m := _MONTH_DAY_YEAR.search(text):
        return _day(int(m[3]), _MONTHS[m[1].lower()], int(m[2]))
    if m := _MONTH_YEAR.search(text):
        year, month = int(m[2]), _MONTHS[m[1].lower()]
        start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
        return start, dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC)
    if m := _YEAR.search(text):
        year = int(m[1])
        return dt.datetime(year, 1, 1, tzinfo=dt.UTC), dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC)
    return None


def boost_period(
    scores: dict[int, tuple[float, float]], period: tuple[dt.datetime, dt.datetime]
) -> dict[int, float]:
    """Scores with memories observed in (or shortly after) the period multiplied up."""
    lo = (period[0] - DATE_SLACK_BEFORE).timestamp()
    hi = (period[1] + DATE_SLACK_AFTER).timestamp()
    return {
        mid: score * (1 + DATE_BOOST) if lo <= observed < hi else score
        for mid, (score, observed) in scores.items()
    }
