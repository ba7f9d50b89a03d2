"""``state: redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER/DB``: parsing, the errors ``gslb check``
prints for a bad one, and passwords kept out of messages."""

from __future__ import annotations

import pytest

from gslb.config import SentinelUrl, check_state_url, load_server_config, parse_sentinel_url, redact_url
from gslb.errors import ConfigErrors


def test_parse_full_form():
    url = "redis+sentinel://user:p%40ss@10.0.0.1:26380,[2001:db8::1],s3.example.net:1/gslb-master/3?sentinel_password=sp"
    assert parse_sentinel_url(url) == SentinelUrl(
        sentinels=(("10.0.0.1", 26380), ("2001:db8::1", 26379), ("s3.example.net", 1)),
        master="gslb-master", db=3, username="user", password="p@ss", sentinel_password="sp")


def test_defaults_db_0_port_26379_no_passwords():
    assert parse_sentinel_url("redis+sentinel://127.0.0.1/mymaster") == SentinelUrl(
        sentinels=(("127.0.0.1", 26379),), master="mymaster", db=0)
    assert parse_sentinel_url("redis+sentinel://127.0.0.1:1,127.0.0.1:1/m/").sentinels == (("127.0.0.1", 1),)


@pytest.mark.parametrize("url, message", [
    ("redis+sentinel:///mymaster/0", "missing a Sentinel HOST:PORT"),
    ("redis+sentinel://127.0.0.1:1,,127.0.0.1:2/m/0", "missing a Sentinel HOST:PORT"),
    ("redis+sentinel://127.0.0.1:26379", "missing the master's name"),
    ("redis+sentinel://127.0.0.1:26379/", "missing the master's name"),
    ("redis+sentinel://127.0.0.1:port/m/0", "Sentinel '127.0.0.1:port': port 'port' is not a number"),
    ("redis+sentinel://127.0.0.1/m/zero", "the database must be a number"),
    ("redis+sentinel://127.0.0.1/m/0/x", "expected /MASTER/DB after the Sentinels"),
    ("redis+sentinel://127.0.0.1/m/0?ssl=1", "unknown option 'ssl' (known: sentinel_password)"),
])
def test_bad_urls_say_what_is_wrong(url, message):
    problem = check_state_url(url)
    assert problem is not None and message in problem, problem
    assert problem.startswith(repr(url) + ": ")  # the URL, then what is wrong with it


def test_passwords_are_redacted():
    url = "redis+sentinel://:secret@127.0.0.1/m/x?sentinel_password=other"
    assert redact_url(url) == "redis+sentinel://:***@127.0.0.1/m/x?sentinel_password=***"
    problem = check_state_url(url)
    assert problem is not None and "secret" not in problem and "other" not in problem


def test_gslb_check_locates_a_bad_sentinel_url(tmp_path):
    (tmp_path / "gslb.yaml").write_text("listen: ['127.0.0.1:5300']\nstate: redis+sentinel://127.0.0.1:26379/\n")
    with pytest.raises(ConfigErrors) as exc:
        load_server_config(str(tmp_path / "gslb.yaml"))
    [error] = exc.value.errors
    assert str(error).endswith("gslb.yaml:2: state: 'redis+sentinel://127.0.0.1:26379/': missing the master's "
                               "name (expected redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER/DB)")


def test_a_good_url_is_accepted_by_the_server_file_and_the_flag(tmp_path):
    url = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0"
    (tmp_path / "gslb.yaml").write_text(f"state: {url}\n")
    assert load_server_config(str(tmp_path / "gslb.yaml")).state == url
    assert load_server_config(None, {"state": url}).state == url
