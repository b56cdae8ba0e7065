"""Pytest plugin: a real S3 HTTP endpoint (moto in server mode) and a fault-injecting proxy.

Register with ``pytest_plugins = ["msd_dagster_tests.s3_fixtures"]`` in the root conftest.

- ``s3_endpoint`` (session): moto's ``ThreadedMotoServer`` on 127.0.0.1 and a free port, with
  fake credentials in the environment for the session only (restored afterwards).
- ``s3_bucket`` (function): ``(client, bucket)`` for a fresh, randomly named bucket, emptied
  and deleted afterwards.
- ``flaky_s3_endpoint`` (function): an HTTP forwarding proxy in front of moto that answers
  the first N GetObject requests with ``503 SlowDown`` and forwards everything else byte for
  byte; it can also fail listing pages after the first, or drop their continuation tokens.
"""

from __future__ import annotations

import http.client
import http.server
import json
import logging
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from msd_dagster.source.s3 import make_s3_client

FAKE_ACCESS_KEY_ID = "testing"
FAKE_SECRET_ACCESS_KEY = "testing-secret-never-shown"
REGION = "us-east-1"

# Query parameters that turn a GET on a key into another operation (ListParts, GetObjectAcl...).
_SUBRESOURCES = {
    "list-type",
    "acl",
    "tagging",
    "uploads",
    "uploadId",
    "location",
    "versioning",
    "versions",
    "policy",
    "cors",
    "lifecycle",
    "attributes",
    "legal-hold",
    "retention",
    "torrent",
    "restore",
    "select",
    "delete",
}


def _error_body(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>FLAKYPROXY</RequestId><HostId>flaky-proxy</HostId></Error>"
    ).encode()


_SLOW_DOWN_BODY = _error_body("SlowDown", "Please reduce your request rate.")
# (status, reason, body) of the faults the proxy can answer a listing page with.
LIST_FAULTS = {
    "SlowDown": (503, "Slow Down", _SLOW_DOWN_BODY),
    "AccessDenied": (403, "Forbidden", _error_body("AccessDenied", "Access Denied")),
}
_TOKEN_RE = re.compile(rb"<NextContinuationToken>[^<]*</NextContinuationToken>")


@dataclass
class S3Endpoint:
    """A running moto server: ``url`` is the ``endpoint_url`` for boto3."""

    url: str
    host: str
    port: int

    def client(self, **kwargs: Any) -> Any:
        """A client built by the project's own ``make_s3_client`` (path-style: custom endpoint)."""
        kwargs.setdefault("region_name", REGION)
        return make_s3_client(endpoint_url=self.url, **kwargs)

    def _reset_auth(self, value: str) -> str:
        request = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth",
            data=value.encode(),
            method="POST",
            # not form-encoded: moto reads the raw body
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]

    @contextmanager
    def enforce_auth(self) -> Iterator[None]:
        """Make moto check signatures and IAM permissions (off by default) inside the block.

        Global to the server: fixtures run sequentially per process, so nothing else is
        talking to it meanwhile.
        """
        previous = self._reset_auth("0")
        try:
            yield
        finally:
            self._reset_auth(previous)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as env:
        # Fake credentials only; nothing may reach a real account or read the developer's
        # ~/.aws files, and no instance-metadata lookups (slow, and not ours).
        env.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
        env.setenv("AWS_SECURITY_TOKEN", "testing")
        env.setenv("AWS_SESSION_TOKEN", "testing")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        env.setenv("AWS_REGION", REGION)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        for name in (
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ):
            env.delenv(name, raising=False)
        # werkzeug logs every request at INFO: thousands of lines per test run.
        werkzeug_log = logging.getLogger("werkzeug")
        previous_level = werkzeug_log.level
        werkzeug_log.setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield S3Endpoint(url=f"http://{host}:{port}", host=host, port=port)
        finally:
            server.stop()
            werkzeug_log.setLevel(previous_level)


def _empty_and_delete(client: Any, bucket: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objects:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_bucket(s3_endpoint: S3Endpoint) -> Iterator[tuple[Any, str]]:
    """``(client, bucket)``: a fresh bucket with a random name on the moto endpoint."""
    client = s3_endpoint.client()
    bucket = f"msd-test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    try:
        yield client, bucket
    finally:
        _empty_and_delete(client, bucket)


# --------------------------------------------------------------------------------------------
# Fault-injecting proxy


@dataclass
class FlakyS3Proxy:
    """Forwards HTTP to ``upstream``; the first ``fail_get_objects`` GetObject requests get a
    ``503 SlowDown`` instead. Path-style requests only (what boto3 sends to an IP endpoint)."""

    upstream_host: str
    upstream_port: int
    fail_get_objects: int = 3
    delay_seconds: float = 0.0  # added to every request: simulates a far-away endpoint
    injected_faults: int = 0
    get_object_requests: int = 0
    forwarded: int = 0
    # Listings: answer the next N requests for a page after the first with ``list_fault``
    # (a LIST_FAULTS key), and/or forward pages without their NextContinuationToken.
    fail_list_pages: int = 0
    list_fault: str = "SlowDown"
    list_faults_injected: int = 0
    strip_continuation_tokens: bool = False
    # Sets max-keys on every ListObjectsV2 request (small pages without thousands of objects;
    # moto does not check signatures unless told to).
    list_page_size: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: http.server.ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def arm(self, faults: int) -> None:
        """Fail the next ``faults`` GetObject requests."""
        with self._lock:
            self.fail_get_objects = faults

    def client(self, **kwargs: Any) -> Any:
        kwargs.setdefault("region_name", REGION)
        return make_s3_client(endpoint_url=self.url, **kwargs)

    def _rewrite(self, method: str, target: str) -> str:
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        if method != "GET" or "list-type" not in query or self.list_page_size is None:
            return target
        query["max-keys"] = [str(self.list_page_size)]
        return parts._replace(query=urlencode(query, doseq=True)).geturl()

    def _list_fault(self, method: str, target: str) -> tuple[int, str, bytes] | None:
        query = parse_qs(urlsplit(target).query, keep_blank_values=True)
        if method != "GET" or "list-type" not in query or "continuation-token" not in query:
            return None
        with self._lock:
            if self.fail_list_pages <= 0:
                return None
            self.fail_list_pages -= 1
            self.list_faults_injected += 1
        return LIST_FAULTS[self.list_fault]

    def _should_fail(self, method: str, target: str) -> bool:
        if method != "GET" or not _is_get_object(target):
            return False
        with self._lock:
            self.get_object_requests += 1
            if self.fail_get_objects > 0:
                self.fail_get_objects -= 1
                self.injected_faults += 1
                return True
        return False

    def start(self) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like a real endpoint

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # quiet

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    return _read_raw_chunked(self.rfile)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._read_body()
                if proxy.delay_seconds:
                    time.sleep(proxy.delay_seconds)
                fault = proxy._list_fault(self.command, self.path)
                if fault is None and proxy._should_fail(self.command, self.path):
                    fault = LIST_FAULTS["SlowDown"]
                if fault is not None:
                    status, reason, error = fault
                    self.send_response_only(status, reason)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.send_header("x-amz-request-id", "FLAKYPROXY")
                    self.end_headers()
                    self.wfile.write(error)
                    return
                target = proxy._rewrite(self.command, self.path)
                upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                try:
                    # Same method, target (path + query) and headers in the same order.
                    upstream.putrequest(
                        self.command, target, skip_host=True, skip_accept_encoding=True
                    )
                    for name, value in self.headers.items():
                        upstream.putheader(name, value)
                    upstream.endheaders(body if body else None)
                    response = upstream.getresponse()
                    payload = response.read()
                    headers = response.getheaders()
                finally:
                    upstream.close()
                with proxy._lock:
                    proxy.forwarded += 1
                if proxy.strip_continuation_tokens and "list-type=" in self.path:
                    payload = _TOKEN_RE.sub(b"", payload)
                    headers = [
                        (k, str(len(payload)) if k.lower() == "content-length" else v)
                        for k, v in headers
                    ]
                chunked = any(
                    k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in headers
                )
                self.send_response_only(response.status, response.reason)
                for name, value in headers:
                    # http.client already de-chunked the body: re-frame it with a length.
                    if chunked and name.lower() in ("transfer-encoding", "content-length"):
                        continue
                    self.send_header(name, value)
                if chunked:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _is_get_object(target: str) -> bool:
    """GET ``/bucket/key...`` without a sub-resource or listing query (``list-type=2``)."""
    parts = urlsplit(target)
    bucket, _, key = parts.path.lstrip("/").partition("/")
    if not bucket or not key:
        return False
    query = parse_qs(parts.query, keep_blank_values=True)
    return not (_SUBRESOURCES & set(query))


def _read_raw_chunked(rfile: Any) -> bytes:
    """The raw bytes of a chunked body, framing included, so it can be forwarded unchanged."""
    raw = bytearray()
    while True:
        size_line = rfile.readline()
        raw += size_line
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, up to the empty line
                line = rfile.readline()
                raw += line
                if line in (b"\r\n", b"\n", b""):
                    return bytes(raw)
        raw += rfile.read(size + 2)  # data + CRLF


@pytest.fixture
def flaky_s3_endpoint(s3_endpoint: S3Endpoint) -> Iterator[FlakyS3Proxy]:
    """A proxy in front of moto failing the first 3 GetObject requests (``arm(n)`` to change);
    ``.url`` is its endpoint_url, ``.injected_faults`` counts the 503s sent."""
    proxy = FlakyS3Proxy(s3_endpoint.host, s3_endpoint.port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
