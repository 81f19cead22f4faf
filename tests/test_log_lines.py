"""The JSON log line's timestamp (service/security/logs.py, utc_timestamp): what datetime wrote, cheaper."""
import datetime as dt
import logging

import pytest
from hypothesis import given, strategies as st

from service.security.logs import JsonLinesFormatter, utc_timestamp


def _datetime_way(created: float) -> str:
    return dt.datetime.fromtimestamp(created, dt.timezone.utc).isoformat(timespec="milliseconds")


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False, allow_infinity=False))
def test_any_time_is_written_as_datetime_writes_it(created):
    assert utc_timestamp(created) == _datetime_way(created)


@pytest.mark.parametrize("fraction", [0.0, 0.0005, 0.0004999, 0.9995, 0.999, 0.9999994999, 0.9999995, 0.9999999999])
def test_the_edges_of_a_millisecond_and_of_a_second(fraction):
    """Microseconds rounded half to even as datetime rounds them: .9999995 is the next second's .000."""
    for whole in (1_700_000_000, 1_764_288_000 - 1, 4_102_444_799):   # any second, the eve of a new day, 2099
        assert utc_timestamp(whole + fraction) == _datetime_way(whole + fraction)


def test_the_second_remembered_is_not_reused_for_another():
    assert utc_timestamp(1_700_000_000.25) == "2023-11-14T22:13:20.250+00:00"
    assert utc_timestamp(1_700_000_001.5) == "2023-11-14T22:13:21.500+00:00"
    assert utc_timestamp(1_600_000_000.0) == "2020-09-13T12:26:40.000+00:00"


def test_a_log_line_carries_it():
    record = logging.LogRecord("service.access", logging.INFO, __file__, 1, "cds call", (), None)
    assert f'"ts":"{_datetime_way(record.created)}"' in JsonLinesFormatter().format(record)
