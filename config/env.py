"""Reading settings from the environment, failing loudly at start-up.

Every knob Cairn has comes from an environment variable with a sane default.
A malformed value stops the process with a message naming the variable, so a
typo in a deployment file never turns into a confusing runtime error.  Any
value can also be given as ``NAME_FILE`` pointing at a file (Docker/Kubernetes
secrets), which wins over ``NAME``.  A setting that was renamed keeps its old
name as an alias (``aliases=``), read through the same function: the new name
wins, and the two set to different values is an error rather than a guess.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import select
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class ConfigError(Exception):
    """A setting in the environment is missing or malformed."""


def _read(name: str) -> str | None:
    """``NAME_FILE``'s content, else ``NAME``; None when neither is set (an empty value is unset)."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={file_path!r} cannot be read: {exc.strerror}") from exc
    value = os.environ.get(name)
    return None if value is None or value == "" else value


def env_str(name: str, default: str | None = None, *, aliases: tuple[str, ...] = ()) -> str | None:
    """The value of ``name``, else of the first of its old names (``aliases``) that is set."""
    value = _read(name)
    for alias in aliases:
        old = _read(alias)
        if old is None:
            continue
        if value is not None and old != value:
            raise ConfigError(f"{name} and its old name {alias} are set to different values; keep {name} only")
        if value is None:
            value = old
    return default if value is None else value


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name} must be one of 1/0/true/false/yes/no/on/off, got {raw!r}")


def env_choice(name: str, default: str, choices: tuple[str, ...], *, aliases: tuple[str, ...] = ()) -> str:
    raw = env_str(name, default, aliases=aliases) or default
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_str(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_CLAIM = re.compile(r"^[A-Za-z0-9_:./-]{1,100}$")


_RATE_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
                 "d": 86400, "day": 86400}


def env_rate(name: str, default: str) -> tuple[int, int] | None:
    """``600/min`` → (600, 60): requests per window of seconds; ``0`` or ``off`` → None (no limit)."""
    raw = env_str(name, default) or default
    value = raw.strip().lower()
    if value in ("0", "off", "none"):
        return None
    count, _, unit = value.partition("/")
    seconds = _RATE_PERIODS.get(unit.strip())
    if not count.strip().isdigit() or int(count) < 1 or seconds is None:
        raise ConfigError(f"{name} must look like 600/min (a count per s, min, hour or day), or 0 for no limit; "
                          f"got {raw!r}")
    return int(count), seconds


def oidc_attribute_claims(name: str) -> dict[str, str]:
    """``department=dept,clearance=clearance`` → {ABAC attribute: IdP claim}."""
    mapping: dict[str, str] = {}
    for item in (_read(name) or "").split(","):
        if not item.strip():
            continue
        attribute, sep, claim = (part.strip() for part in item.partition("="))
        if not sep or not _ATTRIBUTE.match(attribute) or not _CLAIM.match(claim):
            raise ConfigError(f"{name}: expected ATTRIBUTE=CLAIM pairs separated by commas, got {item.strip()!r}")
        mapping[attribute] = claim
    return mapping


def oidc_issuer_check(name: str, issuer: str) -> None:
    """An issuer is an https URL (http only on a loopback host, for a provider on this machine)."""
    parts = urlsplit(issuer)
    loopback = parts.hostname in {"127.0.0.1", "::1", "localhost"}
    if parts.scheme not in {"https", "http"} or not parts.hostname or (parts.scheme == "http" and not loopback):
        raise ConfigError(f"{name} must be an https:// URL (http:// only for a provider on loopback), got {issuer!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name} must not carry a query or fragment: {issuer!r}")


def env_networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A comma-separated list of addresses or networks (``127.0.0.1, 10.0.0.0/8, ::1``)."""
    networks = []
    for item in env_list(name, []):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP address or network") from None
    return networks


def database_from_url(name: str, url: str) -> dict[str, object]:
    """Django DATABASES entry from a ``postgres://`` or ``sqlite:///`` URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in {"postgres", "postgresql", "pgsql"}:
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        db_name = unquote(parts.path.lstrip("/"))
        if not db_name:
            raise ConfigError(f"{name} has no database name: expected postgres://user@host:5432/dbname")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": db_name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    if scheme == "sqlite":
        path = unquote(parts.path)
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        if not path:
            raise ConfigError(f"{name}: sqlite URLs look like sqlite:////absolute/path.sqlite3")
        return sqlite_database(Path(path))
    raise ConfigError(f"{name} must be a postgres:// or sqlite:// URL, got scheme {scheme!r}")


# A pooled connection last lent less than this long ago is lent again without a round trip to check it;
# one lent longer ago may have sat idle that long and is checked first (``pool_connections``).
POOL_CHECK_IDLE_S = 1.0
_LENT_AT = "_cairn_lent_at"


def pool_connections(database: dict[str, Any], size: int, timeout: float = 3.0) -> None:
    """Make a PostgreSQL ``DATABASES`` entry share a pool of ``size`` connections (Django's psycopg pool).

    For the web process: under ASGI every request runs its view in a thread
    of its own, and a persistent connection (``CONN_MAX_AGE``) stays open
    after its thread is gone, so ten concurrent users used up PostgreSQL's
    hundred connections.  From the pool a request borrows a connection and
    gives it back when it ends; when none can be had — all busy, or the
    database away — it waits up to ``timeout`` seconds, then the request gets a
    503.  The wait is short on purpose: a longer one hid a database outage
    behind requests that hung for its whole length, and under overload it
    queues work the clients have given up on.

    A connection that may have sat in the pool for over ``POOL_CHECK_IDLE_S``
    (last lent longer ago) is checked when borrowed (an empty query), so one
    that a database restart broke is replaced, not handed out.  One lent
    more recently worked through its last use (psycopg_pool drops a
    connection given back in a broken state) and is checked without a round
    trip: only whether its socket has something to read, which an idle
    connection has not and one whose server process ended has (a restart
    sends its goodbye to every connection).  Checking every loan with a
    query (Django's ``CONN_HEALTH_CHECKS`` with a pool) added a round trip
    to every request under load, where connections come back within
    milliseconds.  What the socket cannot show yet (a network cut without
    a reset) fails its request with a 503 (``kb.api.errors``), and the
    connection is dropped when given back.
    """
    if database.get("ENGINE") != "django.db.backends.postgresql":
        return
    database["CONN_MAX_AGE"] = 0  # the pool keeps them instead
    database["CONN_HEALTH_CHECKS"] = True  # Django then has the pool check each loan (narrowed: pool_check_if_idle)
    options = database.setdefault("OPTIONS", {})
    options["pool"] = {"min_size": 1, "max_size": size, "timeout": timeout, "max_idle": 120}


def pool_check_if_idle(pool: Any) -> bool:
    """Have the pool Django made check a lent connection only with ``check_if_idle``'s rule.

    Django gives its pool psycopg_pool's check-every-loan and takes no other
    (a ``check`` in the pool's options collides with its own argument), so
    the pool's check is replaced after Django created it, before it opens.
    False, and every loan still checked, where this psycopg_pool keeps its
    check elsewhere.
    """
    from psycopg_pool import ConnectionPool

    if getattr(pool, "_check", None) is not ConnectionPool.check_connection:
        return False
    pool._check = check_if_idle
    return True


def pool_web_database(handler: Any, alias: str, size: int, timeout: float) -> None:
    """The web process's pool for database ``alias`` of Django's ``connections`` (``handler``), check narrowed.

    Before anything opens a connection: the pool is created here, opened by the first request.  A no-op
    for a database other than PostgreSQL.
    """
    pool_connections(handler.settings[alias], size, timeout)
    pool = getattr(handler[alias], "pool", None)
    if pool is not None and not pool_check_if_idle(pool):
        logging.getLogger(__name__).warning(
            "psycopg_pool keeps its check elsewhere in this version: every pooled connection is checked with a "
            "query when lent")


def check_if_idle(connection: Any) -> None:
    """psycopg_pool's ``check`` callback: an empty query, unless the connection was lent moments ago.

    Raises (and the pool replaces the connection) when the check fails; notes the loan otherwise.
    """
    now = time.monotonic()
    lent = getattr(connection, _LENT_AT, None)
    # An idle connection has nothing to read; one whose server process ended (a restart, a failover) has
    # its goodbye or end of stream waiting, seen without a round trip (a stray notice only costs a check).
    if lent is None or now - lent >= POOL_CHECK_IDLE_S or select.select([connection.fileno()], [], [], 0)[0]:
        from psycopg_pool import ConnectionPool

        ConnectionPool.check_connection(connection)
    setattr(connection, _LENT_AT, now)


def sqlite_database(path: Path) -> dict[str, object]:
    """SQLite tuned for one web process plus a background worker thread.

    WAL lets readers run while the worker writes; IMMEDIATE transactions take
    the write lock up front so two writers queue on the busy timeout instead of
    failing with "database is locked" half-way through a transaction.
    """
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": (
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=NORMAL;"
                "PRAGMA foreign_keys=ON;"
                "PRAGMA busy_timeout=30000;"
            ),
        },
    }
