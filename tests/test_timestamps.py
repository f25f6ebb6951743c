import pytest

from meshing_core.timestamps import TimestampError, format_timestamp, parse_timestamp


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2021-03-01T00:00:00Z", 1614556800.0),
        ("2021-03-01T01:00:00+01:00", 1614556800.0),
        ("2021-03-01T00:00:00.250Z", 1614556800.25),
        ("1614556800", 1614556800.0),
        ("1614556800.5", 1614556800.5),
    ],
)
def test_parse(text, expected):
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("bad", ["2021-03-01", "yesterday", "2021-13-01T00:00:00Z", ""])
def test_malformed_is_one_line_error(bad):
    with pytest.raises(TimestampError) as err:
        parse_timestamp(bad)
    assert "RFC 3339" in str(err.value) and "\n" not in str(err.value)


def test_round_trip():
    assert format_timestamp(1614556800.0) == "2021-03-01T00:00:00Z"
    assert parse_timestamp(format_timestamp(1614556800.25)) == 1614556800.25


@pytest.mark.parametrize("millis", ["1614556800000", 1614556800000])
def test_milliseconds_are_refused(millis):
    with pytest.raises(TimestampError, match="milliseconds instead of seconds"):
        parse_timestamp(millis)
