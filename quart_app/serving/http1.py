"""Accept raw UTF-8 in the query string of an HTTP/1.1 request line; refuse ``get``.

``curl 'http://127.0.0.1:8000/login/?username=张三'`` sends the name as raw
UTF-8 bytes. Browsers and HTTP libraries percent-encode them, curl does not,
and h11 (hypercorn's HTTP/1.1 parser) accepts only visible ASCII in the request
target: it answers 400 before the app sees the request. nginx accepts such
bytes; so does this, in the query string only (hypercorn decodes the path as
ASCII), and only as well-formed UTF-8.

A method with lower-case letters is refused (400, ``illegal request line``):
hypercorn upper-cases the method, so ``get`` would be served, and logged, as
``GET``, a method the client did not send.

Neither h11 nor hypercorn has a setting for this, hence the replacement of
h11's two compiled patterns that check the request line.
"""

from __future__ import annotations

import re
import warnings

# Well-formed UTF-8 sequences of two to four bytes (RFC 3629): invalid UTF-8
# stays refused, as Quart would fail on it with a 500.
_UTF8_MULTIBYTE = (
    rb"[\xc2-\xdf][\x80-\xbf]"
    rb"|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
# A path of visible ASCII without "?", then optionally "?" and a query of
# visible ASCII and UTF-8 characters. Spaces and control bytes stay illegal.
_TARGET = rb"[\x21-\x3e\x40-\x7e]+(?:\?(?:[\x21-\x7e]|" + _UTF8_MULTIBYTE + rb")*)?"
# A token without lower-case letters: methods are case-sensitive (RFC 9110
# §9.1), but hypercorn upper-cases them, so "get" would be taken as GET.
_METHOD = rb"[-!#$%&'*+.^_`|~0-9A-Z]+"


def accept_utf8_query_strings() -> None:
    """Let h11 parse request lines whose query string holds raw UTF-8 bytes."""
    try:
        from h11 import _abnf, _events, _readers
    except ImportError:  # no h11, no HTTP/1.1 parser to relax
        return
    patterns = [
        getattr(_readers, "request_line_re", None),
        getattr(_events, "request_target_re", None),
    ]
    if not all(isinstance(p, re.Pattern) for p in patterns):
        warnings.warn("h11 changed: raw UTF-8 query strings stay refused", stacklevel=2)
        return
    _events.request_target_re = re.compile(_TARGET)
    _readers.request_line_re = re.compile(
        rb"(?P<method>" + _METHOD + rb")"
        rb" (?P<target>" + _TARGET + rb")"
        rb" " + _abnf.http_version.encode()
    )
