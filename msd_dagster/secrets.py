"""The one place that hides secrets in text shown to people: URLs, error messages, logs.

* :func:`mask_url`: a URL for display (``postgresql+psycopg://msd:***@host/db``). The user name
  stays; everything else of the userinfo is masked.
* :func:`mask_text`: free text (a driver's error, a log line). Every ``scheme://userinfo@`` loses
  its whole userinfo, and values of the caller's ``known`` secrets are masked wherever they
  appear, also URL-encoded.

Both mask ``pwd=`` / ``password=`` / ``accesstoken=`` ... values (in URL queries, ODBC
connection strings, also percent-encoded inside ``odbc_connect``) and AWS access key ids.

A password runs to the **last** ``@`` of the URL, so one with an unencoded ``@``, ``:``, ``/``
or ``?`` (``postgres:S3cret@PW@host/db``) is masked whole;
:func:`split_userinfo` is that rule, and :func:`msd_dagster.warehouse.urls.make_url` parses
URLs with it. Nothing here imports SQLAlchemy: ``sqlalchemy.URL`` objects are rendered through
their ``render_as_string`` method.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NamedTuple
from urllib.parse import quote, quote_plus, unquote, unquote_plus

MASK = "***"

# scheme://user[:password]@ - the password runs to the last '@' before whitespace, so it may
# hold '@', ':', '/' and '?' (a query holding '@' is then masked too: never too little); the
# user may hold '@' (user@server) but no '/', ':' or '?', so sqlite:///path/with@sign.db and
# https://host/@name have no userinfo.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s?/:]*(?::\S*)?)@"
)
# The same for text that is one URL: the password may also hold whitespace.
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s?/:]*(?::.*)?)@", re.DOTALL
)

SECRET_KEYS = (
    "pwd",
    "password",
    "passwd",
    "accesstoken",
    "access_token",
    "token",
    "secret",
    "client_secret",
)
# key=value with '=' or its encoding '%3D'; the key ends in one of SECRET_KEYS (sslpassword,
# client_secret) and starts the text or follows a non-word character or an encoded ';' / '&'.
# Values: {braced;ODBC}, %7Bencoded braces%7D, or up to the next ';', '&', whitespace or
# their encodings.
_KEY_VALUE = re.compile(
    r"(?i)(?:(?<![0-9A-Za-z_])|(?<=%3B)|(?<=%26))"
    rf"(?P<key>[0-9A-Za-z_]*?(?:{'|'.join(sorted(SECRET_KEYS, key=len, reverse=True))}))"
    r"(?P<sep>\s*(?:=|%3D)\s*)"
    r"(?P<value>\{(?:[^}]|\}\})*\}|%7B.*?%7D|(?:(?!%3B|%26)[^;&\s])*)"
)
# AWS access key ids, should a server echo one back.
_AWS_ACCESS_KEY = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b")


class Userinfo(NamedTuple):
    """``scheme://user:password@rest`` split by :func:`split_userinfo`."""

    scheme: str  # 'postgresql+psycopg://'
    user: str
    password: str | None  # None: no ':' in the userinfo
    rest: str  # host, port, path and query


def split_userinfo(url: str) -> Userinfo | None:
    """The userinfo of the URL ``url``, or None when it has none; a password ends at the
    URL's last ``@``: ``'p://u:a@b:c/d@h/db'`` -> user ``u``, password ``a@b:c/d``."""
    match = _URL_USERINFO.search(url)
    if match is None:
        return None
    user, colon, password = match["userinfo"].partition(":")
    return Userinfo(match["scheme"], user, password if colon else None, url[match.end() :])


def _mask_keys(text: str) -> str:
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)


def _rendered(url: Any) -> str:
    render = getattr(url, "render_as_string", None)  # sqlalchemy.URL
    return render(hide_password=False) if render is not None else str(url)


def mask_url(url: Any) -> str:
    """``url`` (a string or ``sqlalchemy.URL``) for display: the password, secret query values
    (also inside ``odbc_connect``) and access key ids shown as ``***``; the user name kept."""

    def userinfo(match: re.Match[str]) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}{colon and ':' + MASK}@"

    text = _URL_USERINFO.sub(userinfo, _rendered(url), count=1)
    return _AWS_ACCESS_KEY.sub(MASK, _mask_keys(text))


def mask_text(text: str, known: Iterable[str | None] = ()) -> str:
    """Free ``text`` with every URL userinfo, secret ``key=value``, access key id and each of
    the ``known`` secret values (as given, and URL-encoded) replaced by ``***``."""
    for secret in sorted({s for s in known if s}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, MASK)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _AWS_ACCESS_KEY.sub(MASK, _mask_keys(text))


def url_secrets(url: Any) -> list[str]:
    """The secret values of ``url``: its password and secret query / ODBC values, to pass as
    ``known`` to :func:`mask_text` (a driver may repeat them in its error)."""
    text = _rendered(url)
    found = [m["value"] for m in _KEY_VALUE.finditer(text) if m["value"]]
    parts = split_userinfo(text)
    if parts is not None and parts.password:
        found.append(parts.password)
    # As written, decoded (a rendered URL encodes its password), and without ODBC braces.
    decoded = [unquote_plus(v) for v in found] + [unquote(v) for v in found]
    return sorted({v for v in found + decoded for v in (v, v.strip("{}")) if v})


def error_line(exc: BaseException) -> str:
    """``Type: first line`` of an error (the driver's own inside SQLAlchemy's wrapper); not yet
    masked: pass it through :func:`mask_text` with the secrets it may repeat."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return f"{type(orig).__name__}: {lines[0] if lines else 'no details'}"
