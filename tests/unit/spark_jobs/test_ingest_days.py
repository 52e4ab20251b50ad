"""Which days an ingest writes, and which of them as empty days (no Spark): a day without events inside the log's
span is an empty day; one after its last event has not landed yet, one before its first is outside the log (both
refused) unless the caller allows an empty day."""
from __future__ import annotations

import datetime as dt

import pytest

from spark_jobs.ingest import IngestError, days_to_write

D = [dt.date(2024, 3, 8) + dt.timedelta(days=i) for i in range(6)]
PRESENT = [D[1], D[2], D[4]]  # the days the source holds events of: D[3] is a gap inside the log


def test_every_day_of_the_span_is_written_its_gaps_empty():
    assert days_to_write(PRESENT, None) == D[1:5]
    with pytest.raises(IngestError, match="holds no event"):
        days_to_write([], None)


def test_a_gap_inside_the_log_is_taken_a_day_outside_it_refused():
    assert days_to_write(PRESENT, [D[3], D[2]]) == [D[2], D[3]]
    with pytest.raises(IngestError, match=f"{D[5]} in the source: its log ends at {D[4]}, so these events have not "
                                          "landed yet; nothing was written"):
        days_to_write(PRESENT, [D[3], D[5]])
    with pytest.raises(IngestError, match=f"{D[0]} in the source: its log begins at {D[1]}"):
        days_to_write(PRESENT, [D[0]])
    with pytest.raises(IngestError, match="holds no event at all.*--allow-empty"):
        days_to_write([], [D[0]])  # a day's own drop without events: only the caller can say it had none


def test_allow_empty_takes_any_day():
    assert days_to_write(PRESENT, [D[5], D[0]], allow_empty=True) == [D[0], D[5]]
    assert days_to_write([], [D[0]], allow_empty=True) == [D[0]]
