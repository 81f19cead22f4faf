"""The JSON log line's timestamp (service/security/logs.py, utc_timestamp): what datetime wrote, cheaper; the access
line written without logging's search for the caller (log_access): what access_log.info wrote."""
import datetime as dt
import logging
import sys

import pytest
from hypothesis import given, strategies as st

import orjson

from service.security.logs import JsonLinesFormatter, access_log, log_access, utc_timestamp


def _datetime_way(created: float) -> str:
    return dt.datetime.fromtimestamp(created, dt.timezone.utc).isoformat(timespec="milliseconds")


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False, allow_infinity=False))
def test_any_time_is_written_as_datetime_writes_it(created):
    assert utc_timestamp(created) == _datetime_way(created)


@given(st.floats(min_value=-62_135_596_800, max_value=253_402_300_798, allow_nan=False, allow_infinity=False))
def test_a_clock_set_before_1970_or_before_year_1000_is_written_as_datetime_writes_it(created):
    """A clock set wrong still gives a well-formed line: 1969-12-31T23:59:59.500, not 1970-01-01T00:00:00.-500;
    0999-..., not 999-..."""
    assert utc_timestamp(created) == _datetime_way(created)


def test_the_first_line_of_a_process_has_its_date_and_time_whatever_its_second():
    """The second remembered before any line is written matches no time (it was -1.0: a first line at that second
    was written with no date and time at all)."""
    import subprocess
    import sys
    code = "from service.security.logs import utc_timestamp; print(utc_timestamp(-1.0))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == _datetime_way(-1.0) == "1969-12-31T23:59:59.000+00:00"


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


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.setFormatter(JsonLinesFormatter())
        self.records, self.lines = [], []

    def emit(self, record):
        self.records.append(record)
        self.lines.append(orjson.loads(self.format(record)))


def test_the_access_line_written_without_finding_its_caller_is_the_line_access_log_info_wrote():
    """Same level, logger, message, fields and handlers (the time aside); only the file, line and function that no
    line writes are logging's "unknown" ones."""
    lines, level = _Lines(), access_log.level
    access_log.addHandler(lines)
    access_log.setLevel(logging.INFO)
    try:
        fields = {"event": "cds_call", "status": 200, "ms": 1.5, "topics": ["a", "b"], "refused": "x" * 2000}
        access_log.info("cds call", extra={"fields": fields})
        log_access("cds call", fields)
        access_log.setLevel(logging.WARNING)
        log_access("cds call", fields)          # below the logger's level: nothing, as access_log.info
    finally:
        access_log.removeHandler(lines)
        access_log.setLevel(level)
    old, new = lines.lines
    assert {**old, "ts": None} == {**new, "ts": None}
    assert new["refused"].startswith("x" * 1000) and new["topics"] == ["a", "b"]
    assert (lines.records[1].pathname, lines.records[1].lineno, lines.records[1].funcName) == (
        "(unknown file)", 0, "(unknown function)")


def _cut_field_by_field(formatter: JsonLinesFormatter, record: logging.LogRecord) -> str:
    """The line as the formatter wrote it before it cut only long lines: every text checked, then written."""
    from service.security.logs import MAX_TEXT, _json_line, cut
    line = {"ts": utc_timestamp(record.created), "level": record.levelname, "logger": record.name,
            "msg": cut(record.getMessage()), "pid": record.process}
    for name, value in (getattr(record, "fields", None) or {}).items():
        line[name] = cut(value) if isinstance(value, str) and len(value) > MAX_TEXT else value
    if record.exc_info:
        line["exc"] = formatter.formatException(record.exc_info)
    return _json_line(line)


TEXTS = st.sampled_from(["", "a", "é" * 400, "\n" * 300, "\u2028" * 990]) | st.builds(
    lambda char, size: char * size, st.sampled_from(["x", "é", '"', "\n"]), st.integers(990, 1010))


@given(TEXTS, st.dictionaries(st.sampled_from(["msg", "exc", "ts", "pid", "refused", "topics", "status"]),
                              TEXTS | st.sampled_from([None, 200, 2 ** 70, ["x" * 2000]]), max_size=4),
       st.booleans())
def test_a_line_is_cut_as_each_text_was_cut(message, fields, failed):
    """Only a line longer than a cut text is written again with its texts cut: the same line as checking each."""
    try:
        raise ValueError("x" * 1200)
    except ValueError:
        exc_info = sys.exc_info() if failed else None
    record = logging.LogRecord("service.access", logging.INFO, __file__, 1, message, (), exc_info)
    record.fields = fields
    formatter = JsonLinesFormatter()
    assert formatter.format(record) == _cut_field_by_field(formatter, record)



def _access_records(*messages: str) -> list[logging.LogRecord]:
    """The records log_access hands to a handler on service.access, one a message."""
    handler = _Lines()
    level = access_log.level
    access_log.setLevel(logging.INFO)
    access_log.addHandler(handler)
    try:
        for message in messages:
            log_access(message, {"event": "cds_call"})
    finally:
        access_log.removeHandler(handler)
        access_log.setLevel(level)
    return handler.records


def test_a_makerecord_patched_on_logging_logger_makes_the_access_record(monkeypatch):
    """review20: a tracer that wraps logging.Logger.makeRecord itself (ddtrace's log injection:
    `wrap_function_wrapper(logging.Logger, "makeRecord", ...)`) adds its attributes to every record, the access
    line's too, as before rest20; a formatter naming them must not lose the access line."""
    made = logging.Logger.makeRecord

    def traced(self, *args, **kwargs):
        record = made(self, *args, **kwargs)
        record.trace_id = "t-1"
        return record

    monkeypatch.setattr(logging.Logger, "makeRecord", traced)
    [record] = _access_records("cds call")
    assert getattr(record, "trace_id", None) == "t-1"


def test_a_level_renamed_names_the_access_record(monkeypatch):
    """review20: logging.addLevelName(INFO, ...) after a first access line names the level of the next ones, as
    LogRecord reads getLevelName for each record (rest20's template kept the first name)."""
    _access_records("cds call")
    monkeypatch.setitem(logging._levelToName, logging.INFO, "NOTE")
    [record] = _access_records("cds call")
    assert record.levelname == "NOTE"
