"""The server file loader: defaults, every key, relative paths, CLI overrides, located errors."""

from __future__ import annotations

import os

import pytest

from gslb.config import (
    Acl, RateLimit, ServerConfig, TcpLimits, check_state_url, find_default_config, load_server_config,
    parse_hostport, redact_url,
)
from gslb.errors import ConfigErrors


def test_defaults_without_file_or_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_server_config(None, {})
    assert cfg.listen == (("127.0.0.1", 5300),) and cfg.http == ("127.0.0.1", 8053)
    assert cfg.zones == str(tmp_path / "zones")
    assert cfg.geoip == str(tmp_path / "data" / "sample-city.mmdb")
    assert (cfg.region, cfg.state, cfg.checks, cfg.workers, cfg.file) == ("local", "memory://", True, 1, None)
    assert cfg.acl == Acl() and cfg.rate_limit == RateLimit() and cfg.tcp == TcpLimits()
    assert cfg.api_token_file is None and dict(cfg.regions) == {}
    assert cfg.reload == "auto" and cfg.max_zone_file_bytes == 16 * 1024 * 1024


def test_find_default_config(tmp_path):
    assert find_default_config(str(tmp_path)) is None
    (tmp_path / "gslb.yaml").write_text("region: x\n")
    assert find_default_config(str(tmp_path)) == str(tmp_path / "gslb.yaml")


def test_every_key_and_paths_relative_to_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "token").write_text("secret\n")
    path = etc / "gslb.yaml"
    path.write_text("""\
listen: ["127.0.0.1:5300", "[::1]:5301", "localhost"]
http: "[::1]:8080"
zones: zones.d
geoip: ../data/GeoLite2-City.mmdb
region: eu-west
regions:
  eu-west: {location: [53.35, -6.26]}
  us-east: {location: [38.95, -77.45]}
  lab: null
state: redis://redis.example.net:6380/2
checks: false
api_token_file: token
acl:
  allow: ["192.0.2.0/24", "2001:db8::/32"]
  deny: [192.0.2.128/25]
rate_limit: {responses_per_second: 20, slip: 3, window: 2, ipv4_prefix: 22, ipv6_prefix: 48,
             exempt: [192.0.2.0/26, "2001:db8::/32"]}
tcp: {idle_timeout: 2.5, max_connections: 100, max_per_client: 4}
workers: 2
reload: manual
max_zone_file_bytes: 1048576
""")
    cfg = load_server_config(str(path), {})
    assert cfg.listen == (("127.0.0.1", 5300), ("::1", 5301), ("localhost", 5300))
    assert cfg.http == ("::1", 8080)
    assert cfg.zones == str(etc / "zones.d") and cfg.geoip == str(tmp_path / "data" / "GeoLite2-City.mmdb")
    assert cfg.region == "eu-west"
    assert dict(cfg.regions) == {"eu-west": (53.35, -6.26), "us-east": (38.95, -77.45), "lab": None}
    assert cfg.state == "redis://redis.example.net:6380/2" and cfg.checks is False
    assert cfg.api_token_file == str(etc / "token")
    assert cfg.acl == Acl(allow=("192.0.2.0/24", "2001:db8::/32"), deny=("192.0.2.128/25",))
    assert cfg.rate_limit == RateLimit(20, 3, 2, 22, 48, ("192.0.2.0/26", "2001:db8::/32"))
    assert cfg.rate_limit.enabled and not RateLimit().enabled
    assert cfg.tcp == TcpLimits(2.5, 100, 4)
    assert cfg.workers == 2 and cfg.file == str(path)
    assert cfg.reload == "manual" and cfg.max_zone_file_bytes == 1048576


def test_file_defaults_are_relative_to_the_file_and_http_null(tmp_path):
    path = tmp_path / "srv" / "gslb.yaml"
    path.parent.mkdir()
    path.write_text("http: null\ngeoip: null\n")
    cfg = load_server_config(str(path), {})
    assert cfg.http is None and cfg.geoip is None and cfg.zones == str(tmp_path / "srv" / "zones")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert load_server_config(str(empty), {}).listen == (("127.0.0.1", 5300),)


def test_overrides_win_and_are_relative_to_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "etc" / "gslb.yaml"
    path.parent.mkdir()
    path.write_text("listen: ['127.0.0.1:53']\nhttp: '127.0.0.1:80'\nzones: z\nregion: a\nchecks: true\n")
    cfg = load_server_config(str(path), {
        "listen": ["[::1]:5300", "127.0.0.2:5301"], "http": "127.0.0.1:9000", "zones": "myzones",
        "geoip": "db.mmdb", "state": "rediss://r.example:6379/0", "region": "b", "checks": False,
        "workers": 3})
    assert cfg.listen == (("::1", 5300), ("127.0.0.2", 5301)) and cfg.http == ("127.0.0.1", 9000)
    assert cfg.zones == str(tmp_path / "myzones") and cfg.geoip == str(tmp_path / "db.mmdb")
    assert (cfg.state, cfg.region, cfg.checks, cfg.workers) == ("rediss://r.example:6379/0", "b", False, 3)
    assert load_server_config(str(path), {"http": None}).http is None
    assert load_server_config(str(path), {"http": "off"}).http is None
    assert load_server_config(str(path), {"zones": None}).zones == str(path.parent / "z")


@pytest.mark.parametrize("text,host,port", [
    ("127.0.0.1:5300", "127.0.0.1", 5300),
    ("[::1]:5300", "::1", 5300),
    ("[2001:db8::1]", "2001:db8::1", 53),
    ("::1", "::1", 53),
    ("localhost", "localhost", 53),
    ("dns.example.net:5353", "dns.example.net", 5353),
])
def test_parse_hostport(text, host, port):
    assert parse_hostport(text, 53) == (host, port)


@pytest.mark.parametrize("text,message", [
    ("127.0.0.1:99999", "port '99999' is not a number 1..65535"),
    ("127.0.0.1:0", "port '0' is not a number 1..65535"),
    ("127.0.0.1:x", "port 'x' is not a number"),
    (":5300", "missing host"),
    ("[::1:5300", "missing ']'"),
    ("[::1]5300", "expected ':PORT' after ']'"),
    ("[nothost]:53", "is not an IPv6 address"),
    ("2001:db8::1:5300:x", "write an IPv6 address with a port as [ADDRESS]:PORT"),
    ("bad host:53", "is not an IP address or host name"),
    ("*.example.net:53", "is not an IP address or host name"),
    ("-dns.example.net:53", "is not an IP address or host name"),
    ("", "expected HOST:PORT"),
])
def test_parse_hostport_errors(text, message):
    with pytest.raises(ValueError) as info:
        parse_hostport(text, 53)
    assert message in str(info.value)


CASES = [
    ("unknown-key", "listen: ['127.0.0.1:53']\nlisen: x  #<\n", "lisen", "unknown key 'lisen' (allowed: listen, http"),
    ("listen-port", "listen:\n  - 127.0.0.1:53\n  - 127.0.0.1:99999  #<\n", "listen", "port '99999' is not a number"),
    ("listen-type", "listen: [5300]  #<\n", "listen", "expected HOST:PORT, got an integer"),
    ("http-bad", "http: '[::1'  #<\n", "http", "missing ']'"),
    ("zones-type", "zones: [a]  #<\n", "zones", "expected a non-empty string, got a list"),
    ("regions-latitude", "regions:\n  eu: {location: [95, 1]}  #<\n", "regions.eu.location", "latitude 95 is out of range -90..90"),
    ("regions-shape", "regions:\n  eu: {location: dublin}  #<\n", "regions.eu.location", "expected [latitude, longitude]"),
    ("regions-key", "regions:\n  eu: {loc: [1, 2]}  #<\n", "regions.eu.loc", "unknown key 'loc' (allowed: location)"),
    ("state-scheme", "state: http://x  #<\n", "state", "the scheme must be one of memory://, redis://, rediss://"),
    ("state-db", "state: redis://localhost:6379/x  #<\n", "state", "the database must be a number"),
    ("state-host", "state: redis://  #<\n", "state", "missing the Redis host"),
    ("checks-yes", "checks: yes  #<\n", "checks", "expected true or false, got 'yes'"),
    ("token-missing", "api_token_file: nope.txt  #<\n", "api_token_file", "not found"),
    ("acl-network", "acl:\n  allow:\n    - 10.0.0.1/8  #<\n", "acl.allow", "'10.0.0.1/8' is not a network in CIDR form"),
    ("acl-key", "acl: {permit: []}  #<\n", "acl.permit", "unknown key 'permit' (allowed: allow, deny)"),
    ("rrl-negative", "rate_limit: {responses_per_second: -1}  #<\n", "rate_limit.responses_per_second", "responses_per_second -1 is out of range >= 0"),
    ("rrl-slip", "rate_limit: {slip: 11}  #<\n", "rate_limit.slip", "slip 11 is out of range 0..10"),
    ("rrl-window", "rate_limit: {window: 0}  #<\n", "rate_limit.window", "window 0 is out of range 1..3600"),
    ("rrl-rate-type", "rate_limit: {responses_per_second: fast}  #<\n", "rate_limit.responses_per_second", "expected an integer, got a string"),
    ("rrl-v4", "rate_limit: {ipv4_prefix: 33}  #<\n", "rate_limit.ipv4_prefix", "ipv4_prefix 33 is out of range 0..32"),
    ("rrl-v6", "rate_limit: {ipv6_prefix: 129}  #<\n", "rate_limit.ipv6_prefix", "ipv6_prefix 129 is out of range 0..128"),
    ("rrl-exempt", "rate_limit:\n  exempt:\n    - 10.0.0.0/8\n    - 10.1.2.3/8  #<\n", "rate_limit.exempt", "'10.1.2.3/8' is not a network in CIDR form"),
    ("rrl-exempt-type", "rate_limit:\n  exempt: [5]  #<\n", "rate_limit.exempt", "expected a network such as 192.0.2.0/24, got an integer"),
    ("rrl-key", "rate_limit: {burst: 5}  #<\n", "rate_limit.burst", "unknown key 'burst' (allowed: responses_per_second, window, slip"),
    ("tcp-idle", "tcp: {idle_timeout: 0}  #<\n", "tcp.idle_timeout", "idle_timeout 0 is out of range > 0"),
    ("tcp-max", "tcp: {max_connections: 0}  #<\n", "tcp.max_connections", "max_connections 0 is out of range >= 1"),
    ("tcp-type", "tcp: 5  #<\n", "tcp", "expected a mapping, got an integer"),
    ("workers", "workers: 0  #<\n", "workers", "workers 0 is out of range 1..256"),
    ("ecs-scope", "ecs_scope: wide  #<\n", "ecs_scope", "unknown ecs_scope 'wide' (one of: merged, network)"),
    ("reload-mode", "reload: sometimes  #<\n", "reload", "unknown reload mode 'sometimes' (one of: auto, manual)"),
    ("reload-type", "reload: true  #<\n", "reload", "unknown reload mode a boolean (one of: auto, manual)"),
    ("max-zone-small", "max_zone_file_bytes: 100  #<\n", "max_zone_file_bytes", "max_zone_file_bytes 100 is out of range >= 1024"),
    ("max-zone-type", "max_zone_file_bytes: 64MiB  #<\n", "max_zone_file_bytes", "expected an integer, got a string"),
    ("cookies-enabled", "cookies:\n  enabled: yes  #<\n", "cookies.enabled", "expected true or false, got 'yes'"),
    ("cookies-size", "cookies: {max_nocookie_udp: 100}  #<\n", "cookies.max_nocookie_udp",
     "max_nocookie_udp 100 is out of range 128..1232"),
    ("cookies-key", "cookies: {secret: x}  #<\n", "cookies.secret",
     "unknown key 'secret' (allowed: enabled, secret_file, max_nocookie_udp)"),
    ("cookies-missing", "cookies:\n  secret_file: nope.hex  #<\n", "cookies.secret_file", "nope.hex: No such file"),
    ("cookies-short", "cookies:\n  secret_file: short.hex  #<\n", "cookies.secret_file",
     "short.hex: expected 32 hex digits (16 bytes), got 30 characters"),
    ("cookies-not-hex", "cookies:\n  secret_file: nothex.hex  #<\n", "cookies.secret_file",
     "nothex.hex: expected 32 hex digits (16 bytes), got a character that is not a hex digit"),
    ("duplicate", "region: a\nregion: b  #<\n", "", "duplicate key 'region' (first at line 1)"),
    ("syntax", "listen: [a\nhttp: x  #<\n", "", "YAML syntax error"),
    ("top-list", "- a  #<\n", "", "the top level must be a mapping, got a list"),
]


@pytest.mark.parametrize("text,path,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_server_file_errors(tmp_path, text, path, message):
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "#<" in ln)
    (tmp_path / "short.hex").write_text("00" * 15 + "\n")
    (tmp_path / "nothex.hex").write_text("zz" * 16 + "\n")
    file = tmp_path / "gslb.yaml"
    file.write_text(text)
    with pytest.raises(ConfigErrors) as info:
        load_server_config(str(file), {})
    errors = [str(e) for e in info.value.errors]
    prefix = f"{file}:{line}: " + (f"{path}: " if path else "")
    assert any(e.startswith(prefix) and message in e for e in errors), (prefix, message, errors)


def test_all_errors_at_once_and_override_errors(tmp_path):
    file = tmp_path / "gslb.yaml"
    file.write_text("workers: 0\nchecks: no\n")
    with pytest.raises(ConfigErrors) as info:
        load_server_config(str(file), {"listen": ["[::1]:x"], "state": "mem://"})
    errors = [str(e) for e in info.value.errors]
    assert len(errors) == 4
    assert errors[2].startswith("command line: --listen: ") and errors[3].startswith("command line: --state: ")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigErrors) as info:
        load_server_config(str(tmp_path / "nope.yaml"), {})
    assert str(info.value).startswith(f"{tmp_path / 'nope.yaml'}: cannot read the server file")


def test_result_is_a_frozen_server_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_server_config(None, {"checks": False})
    assert isinstance(cfg, ServerConfig) and cfg.checks is False
    with pytest.raises(AttributeError):
        cfg.region = "x"  # type: ignore[misc]
    assert os.path.isabs(cfg.zones)


@pytest.mark.parametrize("url", ["redis://:s3cret@localhost:6379/x", "redis://u:s3cret@:6379/0",
                                 "rediss://:s3cret@localhost:99999/0", "http://:s3cret@x/",
                                 "unix:///run/r.sock?db=x&password=s3cret"])
def test_state_url_errors_never_show_the_password(url):
    problem = check_state_url(url)
    assert problem is not None and "s3cret" not in problem and "***" in problem
    with pytest.raises(ConfigErrors) as info:
        load_server_config(None, {"state": url})
    assert "s3cret" not in str(info.value)


def test_redact_url():
    assert redact_url("redis://:pw@127.0.0.1:6379/2?password=x&db=1") == \
        "redis://:***@127.0.0.1:6379/2?password=***&db=1"
    assert redact_url("memory://") == "memory://"


def test_region_location_reports_latitude_and_longitude(tmp_path):
    file = tmp_path / "gslb.yaml"
    file.write_text("regions:\n  eu:\n    location:\n      - 95\n      - 200\n")
    with pytest.raises(ConfigErrors) as info:
        load_server_config(str(file), {})
    assert [str(e) for e in info.value.errors] == [
        f"{file}:4: regions.eu.location: latitude 95 is out of range -90..90",
        f"{file}:5: regions.eu.location: longitude 200 is out of range -180..180"]


def test_ecs_scope_defaults_to_merged_and_takes_network(tmp_path):
    file = tmp_path / "gslb.yaml"
    file.write_text("region: a\n")
    assert load_server_config(str(file), {}).ecs_scope == "merged"
    file.write_text("ecs_scope: network\n")
    assert load_server_config(str(file), {}).ecs_scope == "network"


def test_readme_rate_limit_example_loads_with_the_documented_defaults(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Response rate limiting", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    file = tmp_path / "gslb.yaml"
    file.write_text(block)
    assert load_server_config(str(file), {}).rate_limit == RateLimit()


def test_cookies_defaults_and_secret_file(tmp_path):
    from gslb.config import CookieConfig

    file = tmp_path / "gslb.yaml"
    file.write_text("zones: zones\n")
    assert load_server_config(str(file), {}).cookies == CookieConfig(True, None, 1232, None)
    (tmp_path / "cookie.hex").write_text("e5e973e5 a6b2a43f\n48e7dc84 9e37bfcf\n")  # whitespace ignored
    file.write_text("cookies:\n  enabled: false\n  secret_file: cookie.hex\n  max_nocookie_udp: 512\n")
    cookies = load_server_config(str(file), {}).cookies
    assert cookies.enabled is False and cookies.max_nocookie_udp == 512
    assert cookies.secret_file == str(tmp_path / "cookie.hex")
    assert cookies.secret == bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
    assert "e5e973" not in repr(cookies)  # the secret is never shown (reload warnings print the value)
