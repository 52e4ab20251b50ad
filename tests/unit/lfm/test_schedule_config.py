"""`schedule:` in lfm.yaml (what the orchestrator runs, and when): checked like every section."""
from __future__ import annotations

import datetime as dt

import pytest

from lfm.config import ConfigError, config_from_dict


def test_defaults_and_a_chain():
    s = config_from_dict({"schedule": {"first_day": "2022-04-29", "last_day": "2022-05-01"}}).schedule
    assert (s.first_day, s.last_day, s.hour, s.minute, s.retries) == (dt.date(2022, 4, 29), dt.date(2022, 5, 1),
                                                                      2, 0, 3)
    assert config_from_dict({}).schedule.first_day is None  # the orchestrator refuses to load without it


@pytest.mark.parametrize("bad, named", [
    ({"first_day": "2022-05-02", "last_day": "2022-05-01"}, "last_day 2022-05-01 is before first_day"),
    ({"hour": 24}, "schedule.hour"),
    ({"model": "v1\n"}, "schedule.model: Value error, bad model version"),
    ({"retry_delay_s": 0}, "schedule.retry_delay_s"),
    ({"every": "day"}, "schedule.every: unknown key"),
])
def test_bad_values_are_refused_naming_the_key(bad, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        config_from_dict({"schedule": bad})
