"""Load transactions: the connection they run on, which errors are transient, and retries.

* Deadlocks and lock timeouts (each backend says which driver errors are: ``Backend.lock_error``)
  roll the transaction back, so :func:`retry_deadlocks` reruns the whole of it. A lock timeout
  that outlasts the retries becomes :class:`LockTimeoutError`, naming the statement, the
  backend's lock-timeout setting and how long it waited.
* :func:`is_transient_database_error`: worth retrying later (a lock error, a lost or refused
  connection); a constraint violation or a schema mismatch is not.
* :func:`retry_transient` also reruns after a lost connection: for work that is idempotent and
  cheap, like the schema check.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from msd_dagster.warehouse.dialects import (
    BACKENDS,
    Backend,
    LockErrorKind,
    PartitionLockTimeout,
    backend_for,
    backend_of_error,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class LockTimeoutError(TimeoutError):
    """A statement waited the backend's lock timeout for a lock that another session held, in
    every attempt. Transient: retry later (:func:`is_transient_database_error`)."""


def driver_error(exc: BaseException) -> BaseException:
    """The DB-API driver's exception inside a SQLAlchemy one (else ``exc`` itself)."""
    return exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc


def lock_error_kind(exc: BaseException) -> LockErrorKind | None:
    """``"deadlock"`` / ``"lock timeout"`` when ``exc`` is one, asked of the backend whose
    driver raised it (of every backend for an unknown driver)."""
    orig = driver_error(exc)
    if isinstance(orig, PartitionLockTimeout):
        return "lock timeout"
    owner = backend_of_error(orig)
    for backend in (owner,) if owner is not None else BACKENDS:
        kind = backend.lock_error(orig)
        if kind is not None:
            return kind
    return None


def is_retryable(exc: BaseException) -> bool:
    """A deadlock / lock timeout: the transaction was rolled back and can simply be rerun."""
    return isinstance(exc, LockTimeoutError) or lock_error_kind(exc) is not None


def is_transient_database_error(exc: BaseException) -> bool:
    """Worth retrying later: a deadlock, a lock timeout, a lost or refused connection."""
    if is_retryable(exc):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)


def _first_line(text: object, limit: int = 160) -> str:
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_lock_wait(exc: BaseException, backend: Backend | None) -> str:
    """What waited for which lock, and how long: for the warning and the final error."""
    statement = getattr(exc, "statement", None)
    waited = backend.lock_timeout_text() if backend is not None else "the lock timeout"
    on = f" on `{_first_line(statement, 100)}`" if statement else ""
    return (
        f"waited {waited}{on} for a lock held by another session "
        f"({type(driver_error(exc)).__name__}: {_first_line(driver_error(exc))})"
    )


def retry(
    attempt: Callable[[], T],
    what: str,
    retries: int,
    *,
    when: Callable[[BaseException], bool] = is_retryable,
    backend: Backend | None = None,
) -> T:
    """Run ``attempt`` (one whole transaction, or idempotent work); rerun it with backoff when
    ``when(error)``, at most ``retries`` times. ``what`` names it in the warnings. A lock
    timeout still failing after the retries raises :class:`LockTimeoutError`."""
    tries = 0
    started = time.monotonic()
    while True:
        try:
            return attempt()
        except Exception as exc:
            kind = lock_error_kind(exc)
            if tries >= retries or not when(exc):
                if kind == "lock timeout":
                    raise LockTimeoutError(
                        f"{what}: gave up after {tries + 1} attempt(s) in "
                        f"{time.monotonic() - started:.1f} s; the last "
                        f"{describe_lock_wait(exc, backend)}. Retry later, or find the session "
                        "holding the lock."
                    ) from exc
                raise
            tries += 1
            delay = 0.2 * 2**tries * (0.5 + random.random())
            cause = describe_lock_wait(exc, backend) if kind == "lock timeout" else None
            log.warning(
                "%s: %s; retrying %s in %.1f s (%d/%d)",
                what,
                cause or f"{kind or 'transient error'}: {type(driver_error(exc)).__name__}",
                "the whole transaction" if kind else "it",
                delay,
                tries,
                retries,
            )
            time.sleep(delay)


def retry_deadlocks(
    attempt: Callable[[], T], what: str, retries: int, *, backend: Backend | None = None
) -> T:
    """Run ``attempt`` (one whole transaction); rerun it with backoff after a deadlock or lock
    timeout, at most ``retries`` times. ``what`` names it in the warning."""
    return retry(attempt, what, retries, backend=backend)


def retry_transient(
    attempt: Callable[[], T], what: str, retries: int, *, backend: Backend | None = None
) -> T:
    """:func:`retry_deadlocks`, also after a lost or refused connection."""
    return retry(attempt, what, retries, when=is_transient_database_error, backend=backend)


def invalidate_if_disconnected(conn: sa.Connection, exc: BaseException) -> None:
    """Raw driver errors (COPY, fast_executemany) bypass SQLAlchemy's disconnect detection:
    make sure a killed connection is not returned to the pool."""
    try:
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            return
        orig = driver_error(exc)
        dbapi = conn.dialect.loaded_dbapi
        if isinstance(orig, dbapi.Error) and conn.dialect.is_disconnect(
            orig, conn.connection.dbapi_connection, None
        ):
            conn.invalidate()
    except Exception:  # pragma: no cover - best effort only
        log.debug("could not check the connection after an error", exc_info=True)


def open_load_connection(engine: sa.Engine) -> sa.Connection:
    """A connection set up by the engine's backend for a load transaction (not begun yet)."""
    conn = engine.connect()
    try:
        return backend_for(engine).prepare_load_connection(conn)
    except BaseException:
        conn.close()
        raise
