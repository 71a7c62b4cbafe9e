"""The logged IP behind trusted proxies: a valid, normalized address or ``-``, never junk."""

from __future__ import annotations

from pathlib import Path

import pytest

from quart_app.proxy import forwarded

from helpers.logs import read_records

PEER = ("10.0.0.2", 40000)  # the proxy's own address: never the client's

CASES = [
    # Whatever the header said was logged as the IP.
    ("legacy", 1, [("x-forwarded-for", "garbage")], "-"),
    ("legacy", 1, [("x-forwarded-for", "<script>alert(1)</script>")], "-"),
    ("legacy", 1, [("x-forwarded-for", '"[2001:db8:cafe::17]:4711"')], "-"),
    ("legacy", 1, [("x-forwarded-for", "unknown")], "-"),
    ("legacy", 1, [("x-forwarded-for", "203.0.113.5\u00c3\u00a9")], "-"),  # UTF-8 as Latin-1
    ("modern", 1, [("forwarded", 'for="[2001:db8:cafe::17]:4711"')], "2001:db8:cafe::17"),
    ("modern", 1, [("forwarded", 'for="_hidden"')], "-"),
    ("modern", 1, [("forwarded", "for=_hidden")], "-"),
    ("modern", 1, [("forwarded", "for=unknown")], "-"),
    ("modern", 1, [("forwarded", "for=garbage")], "-"),
    ("modern", 1, [("forwarded", 'for="<script>"')], "-"),
    ("modern", 1, [("forwarded", "for=192.0.2.1\u00c3\u00a9")], "-"),
    # RFC 7239 as written: case-insensitive keys, optional whitespace, quoted
    # strings (with commas and semicolons inside), ports.
    ("modern", 1, [("forwarded", "For=5.5.5.5")], "5.5.5.5"),
    ("modern", 1, [("forwarded", "proto=https; for=6.6.6.6")], "6.6.6.6"),
    ("modern", 1, [("forwarded", "for=6.6.6.6 ;by=10.0.0.2 ,\tfor=7.7.7.7")], "7.7.7.7"),
    ("modern", 1, [("forwarded", "for = 7.7.7.7")], "-"),  # no whitespace around "="
    ("modern", 1, [("forwarded", 'for="192.0.2.43:47011";proto=http')], "192.0.2.43"),
    ("modern", 1, [("forwarded", 'for="[2001:DB8::0:1]"')], "2001:db8::1"),
    # An IPv4 client of a dual-stack proxy: logged as the IPv4 address it is.
    ("legacy", 1, [("x-forwarded-for", "::ffff:1.2.3.4")], "1.2.3.4"),
    ("modern", 1, [("forwarded", 'for="[::ffff:1.2.3.4]"')], "1.2.3.4"),
    ("modern", 1, [("forwarded", 'for=192.0.2.1;ext="a,b;c", for=198.51.100.7')], "198.51.100.7"),
    ("modern", 2, [("forwarded", 'for=192.0.2.1;ext="a,b;c", for=198.51.100.7')], "192.0.2.1"),
    ("modern", 1, [("forwarded", 'for="\\1\\9\\8.51.100.8"')], "198.51.100.8"),
    ("modern", 1, [("forwarded", "for=1.1.1.1"), ("forwarded", "for=2.2.2.2")], "2.2.2.2"),
    ("modern", 2, [("forwarded", "for=1.1.1.1"), ("forwarded", "for=2.2.2.2")], "1.1.1.1"),
    ("modern", 1, [("forwarded", "for=1.1.1.1,, for=2.2.2.2 ,")], "2.2.2.2"),
    ("modern", 1, [("forwarded", "for=2001:db8::1")], "-"),  # IPv6 must be quoted
    ("modern", 1, [("forwarded", 'for="2001:db8::1"')], "-"),  # and bracketed
    ("modern", 1, [("forwarded", "for=1.1.1.1;for=2.2.2.2")], "-"),  # twice in one element
    ("modern", 1, [("forwarded", 'for="1.1.1.1')], "-"),  # unterminated quoted string
    ("modern", 1, [("forwarded", "by=10.0.0.2")], "-"),  # no for
    ("modern", 2, [("forwarded", "for=1.1.1.1")], "-"),  # fewer elements than hops
    # Zones: ipaddress accepts them; an inet column would drop them silently.
    ("modern", 1, [("forwarded", 'for="[fe80::1%25eth0]"')], "-"),
    ("legacy", 1, [("x-forwarded-for", "fe80::1%eth0")], "-"),
    ("legacy", 1, [("x-forwarded-for", "::1%anything")], "-"),
    # Each mode reads only its own header: modern fell back to X-Forwarded-For.
    ("modern", 1, [("x-forwarded-for", "6.6.6.6")], "-"),
    ("legacy", 1, [("forwarded", "for=6.6.6.6")], "-"),
    ("legacy", 1, [], "-"),  # was the proxy's own address
    # X-Forwarded-For as proxies write it.
    ("legacy", 1, [("x-forwarded-for", "6.6.6.6, 2001:DB8:0:0::1")], "2001:db8::1"),
    ("legacy", 1, [("x-forwarded-for", "203.0.113.5:8080")], "203.0.113.5"),
    ("legacy", 1, [("x-forwarded-for", "[2001:db8::1]:443")], "2001:db8::1"),
    (
        "legacy",
        2,
        [("x-forwarded-for", "203.0.113.5"), ("x-forwarded-for", "10.1.1.1")],
        "203.0.113.5",
    ),
    ("legacy", 1, [("x-forwarded-for", "\u00e9\u00e9, 198.51.100.4")], "198.51.100.4"),
    ("legacy", 1, [("x-forwarded-for", "010.1.1.1")], "-"),  # leading zeros: ambiguous
]


def _ids() -> list[str]:
    return [f"{mode}-{hops}-{headers}" for mode, hops, headers, _ in CASES]


@pytest.mark.parametrize(("mode", "hops", "headers", "expected"), CASES, ids=_ids())
async def test_the_logged_ip_is_a_valid_address_or_unknown(
    make_app, log_path: Path, mode: str, hops: int, headers: list, expected: str
) -> None:
    app = make_app(PROXY_TRUSTED_HOPS=hops, PROXY_MODE=mode)
    raw_headers = [(name.encode(), value.encode("latin-1")) for name, value in headers]
    async with app.test_app() as test_app:
        response = await test_app.test_client().get(
            "/login/",
            scope_base={
                "query_string": b"username=proxied",
                "headers": raw_headers,
                "client": PEER,
            },
        )
        assert response.status_code == 200
    assert [r.ip for r in read_records(log_path)] == [expected]


@pytest.mark.parametrize(("mode", "hops", "headers", "expected"), CASES, ids=_ids())
def test_forwarded_says_none_where_the_log_says_unknown(
    mode: str, hops: int, headers: list, expected: str
) -> None:
    # None is the seam for counting "the trusted header gave no address".
    raw_headers = [(name.encode(), value.encode("latin-1")) for name, value in headers]
    client = forwarded(raw_headers, mode, hops).client
    assert client == (None if expected == "-" else expected)


@pytest.mark.parametrize(
    ("mode", "headers", "location"),
    [
        (
            "modern",
            [("forwarded", "for=1.2.3.4;proto=https;host=example.com")],
            "https://example.com",
        ),
        (
            "modern",
            [("forwarded", 'for=1.2.3.4;Proto=HTTPS;host="[2001:db8::1]:8443"')],
            "https://[2001:db8::1]:8443",
        ),
        (
            "legacy",
            [("x-forwarded-proto", "https"), ("x-forwarded-host", "example.com:8443")],
            "https://example.com:8443",
        ),
        # Not valid: the request's own scheme and Host stay.
        (
            "modern",
            [("forwarded", 'for=1.2.3.4;proto=javascript;host="evil.com/<x>"')],
            "http://internal",
        ),
        ("legacy", [("x-forwarded-proto", "ftp"), ("x-forwarded-host", "a b")], "http://internal"),
        # Modern mode reads only Forwarded.
        (
            "modern",
            [("x-forwarded-proto", "https"), ("x-forwarded-host", "example.com")],
            "http://internal",
        ),
    ],
)
async def test_a_valid_forwarded_scheme_and_host_make_quarts_absolute_urls(
    make_app, mode: str, headers: list, location: str
) -> None:
    app = make_app(PROXY_TRUSTED_HOPS=1, PROXY_MODE=mode)
    raw_headers = [(b"host", b"internal"), *((n.encode(), v.encode()) for n, v in headers)]
    async with app.test_app() as test_app:
        response = await test_app.test_client().get(
            "/login", scope_base={"query_string": b"username=r", "headers": raw_headers}
        )
    assert response.status_code == 308  # Quart's redirect to /login/
    assert response.headers["Location"] == f"{location}/login/?username=r"


@pytest.mark.parametrize(
    ("peer", "logged"),
    [(("::ffff:192.0.2.9", 5000), "192.0.2.9"), (("2001:db8::9", 5000), "2001:db8::9")],
)
async def test_an_ipv4_client_of_a_dual_stack_socket_is_logged_as_ipv4(
    app, log_path: Path, peer: tuple[str, int], logged: str
) -> None:
    # hypercorn bound to [::] sees IPv4 clients as ::ffff:a.b.c.d; grep finds a.b.c.d.
    async with app.test_app() as test_app:
        response = await test_app.test_client().get(
            "/login/?username=dual", scope_base={"client": peer}
        )
        assert response.status_code == 200
    [record] = read_records(log_path)
    assert record.ip == logged
