"""The one masker for URLs and free text (msd_dagster.secrets), and '@'-safe URL parsing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from msd_dagster.secrets import MASK, mask_text, mask_url, split_userinfo, url_secrets
from msd_dagster.source.s3 import parse_s3_url
from msd_dagster.warehouse.dialects import catalog_kind, make_url

# (password, what must never be shown): unencoded '@', ':', '/', '?' and their mixes.
PASSWORDS = [
    "S3cret@PW",
    "a:b",
    "p/w",
    "x@y:z/w",
    "@@",
    "end@",
    ":start",
    "q?uery@x",
    "Sup3r$ecret",
]


@pytest.mark.parametrize("password", PASSWORDS)
def test_passwords_with_at_colon_and_slash_are_masked_whole(password: str) -> None:
    url = f"postgresql+psycopg://postgres:{password}@db.example.com:5432/msd"
    assert mask_url(url) == f"postgresql+psycopg://postgres:{MASK}@db.example.com:5432/msd"
    shown = mask_text(f"cannot connect to {url}: timeout")
    assert (
        shown == f"cannot connect to postgresql+psycopg://{MASK}@db.example.com:5432/msd: timeout"
    )
    parts = split_userinfo(url)
    assert parts is not None and parts.user == "postgres" and parts.password == password
    assert parts.rest == "db.example.com:5432/msd"
    assert password in url_secrets(url)


@pytest.mark.parametrize("password", PASSWORDS)
def test_make_url_keeps_the_whole_password(password: str) -> None:
    url = make_url(f"postgresql+psycopg://postgres:{password}@db.example.com:5432/msd")
    assert (url.password, url.host, url.port, url.database) == (
        password,
        "db.example.com",
        5432,
        "msd",
    )
    assert (
        catalog_kind(f"postgresql+psycopg://postgres:{password}@db.example.com/msd") == "postgres"
    )
    # A sqlalchemy.URL renders its password encoded, and is masked whole as well.
    assert mask_url(url) == f"postgresql+psycopg://postgres:{MASK}@db.example.com:5432/msd"


def test_the_reported_leak() -> None:
    url = "postgresql+psycopg://postgres:S3cret@PW@host/db"
    assert mask_url(url) == "postgresql+psycopg://postgres:***@host/db"
    # SQLAlchemy alone takes host "PW@host", which a resolver error then repeats.
    assert sa.make_url(url).host == "PW@host"
    assert make_url(url).host == "host"
    driver_error = 'could not translate host name "PW@host" to address'
    assert "PW" not in mask_text(driver_error, known=url_secrets(url) + ["PW"])
    with pytest.raises(ValueError) as raised:
        make_url("postgresql+psycopg://postgres:S3cret@PW@host:notaport/db")
    assert "S3cret" not in str(raised.value) and "PW" not in str(raised.value)


def test_urls_without_a_password_are_unchanged_for_display() -> None:
    for url in (
        "postgresql+psycopg://postgres@127.0.0.1:5432/msd",
        "sqlite:////data/with@sign/msd.sqlite",
        "sqlite:///relative/msd.sqlite",
        "mysql+pymysql://root@db/msd?charset=utf8mb4",
        "https://example.com/@someone",
    ):
        assert mask_url(url) == url
    assert mask_url("postgresql://user@server:pw@host/db") == "postgresql://user@server:***@host/db"


def test_secret_keys_in_queries_and_odbc_strings() -> None:
    with_query = mask_url("mssql+pyodbc://h/db?driver=X&PWD=qwerty&AccessToken=tok123&Encrypt=yes")
    assert with_query == "mssql+pyodbc://h/db?driver=X&PWD=***&AccessToken=***&Encrypt=yes"
    encoded = (
        "mssql+pyodbc:///?odbc_connect="
        "DRIVER%3D%7BODBC+Driver+18%7D%3BSERVER%3Dh%3BUID%3Du%3BPWD%3Dzz_top_secret%3BX%3D1"
    )
    assert "zz_top_secret" not in mask_url(encoded) and "X%3D1" in mask_url(encoded)
    braced = mask_url("...PWD%3D%7Ba%3Bb%7D%3BX%3D1")
    assert "a%3Bb" not in braced and "X%3D1" in braced
    raw = "Driver={ODBC Driver 18};Server=h;UID=u;PWD={a;b=c}};d};Encrypt=yes"
    assert mask_text(raw) == "Driver={ODBC Driver 18};Server=h;UID=u;PWD=***;Encrypt=yes"
    assert mask_text("password = hunter2 and token=abc&x=1") == "password = *** and token=***&x=1"
    assert mask_text("keyword=stays passwords=stay") == "keyword=stays passwords=stay"
    assert set(url_secrets("mssql+pyodbc://h/db?PWD={a;b}&token=t%40k")) >= {"a;b", "t@k"}


def test_free_text_hides_known_secrets_also_url_encoded() -> None:
    secret = "p@ss w/rd"
    text = "login failed for p@ss w/rd, p%40ss%20w%2Frd and p%40ss+w%2Frd"
    assert mask_text(text, known=[secret, None, ""]) == "login failed for ***, *** and ***"
    # AWS's documentation example access key id, not a credential.
    assert mask_text("AKIAIOSFODNN7EXAMPLE leaked") == "*** leaked"


def test_s3_urls_lose_their_whole_userinfo() -> None:
    with pytest.raises(ValueError) as raised:
        parse_s3_url("s3://FAKEACCESSKEYID00000:se@cr/et@bucket/x")
    message = str(raised.value)
    assert "FAKEACCESSKEYID00000" not in message and "se@cr" not in message and "et@" not in message
    assert "s3://***@bucket/x" in message


@pytest.mark.parametrize("password", ["pa ss", "tab\tbed", " lead@ing"])
def test_passwords_with_whitespace_are_masked_whole(password: str) -> None:
    url = f"postgresql://msd:{password}@db.example.com/msd?sslmode=require"
    assert mask_url(url) == f"postgresql://msd:{MASK}@db.example.com/msd?sslmode=require"
    parts = split_userinfo(url)
    assert parts is not None and parts.password == password
    assert parts.rest == "db.example.com/msd?sslmode=require"
    # Free text cannot tell where such a password ends; the URL's own secrets are passed.
    shown = mask_text(f"login failed for {password!r} at {url}", known=url_secrets(url))
    assert password.strip() not in shown and "msd?sslmode=require" in shown


def test_keys_ending_in_a_secret_name_are_masked() -> None:
    url = "postgresql://msd@host/db?sslpassword=k3y&sslmode=verify-full&app_token=t0k"
    assert mask_url(url) == (
        f"postgresql://msd@host/db?sslpassword={MASK}&sslmode=verify-full&app_token={MASK}"
    )
    assert set(url_secrets(url)) >= {"k3y", "t0k"}
    assert mask_text("key file k3y is encrypted", known=url_secrets(url)) == (
        f"key file {MASK} is encrypted"
    )
