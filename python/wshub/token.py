"""Development JWTs, as ``wshub token`` mints them (PROTOCOL.md section 2)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
from typing import Iterable, Optional, Union

#: The latest ``exp`` the hub accepts: the end of the year 9999.
MAX_NUMERIC_DATE = 253402300799


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _patterns(value: Union[str, Iterable[str], None]) -> Optional[list[str]]:
    if value is None:
        return None
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return [str(p) for p in value]


def mint_token(
    secret: Union[str, bytes],
    sub: str,
    *,
    rooms: Union[str, Iterable[str], None] = None,
    publish: Union[str, Iterable[str], None] = None,
    admin: bool = False,
    ttl: Union[float, datetime.timedelta] = 3600,
) -> str:
    """An HS256 JWT for a hub whose ``jwt_secret`` is ``secret``.

    ``sub`` is the user; ``rooms`` the room patterns it may join and ask
    presence of (None: all; a trailing ``*`` is a prefix wildcard; a
    comma-separated string or a list); ``publish`` the patterns it may
    publish to (None: none); ``admin`` lets it do anything, the admin HTTP
    routes included; ``ttl`` is seconds (or a ``timedelta``) until ``exp``.

    >>> token = mint_token("dev-secret", "alice", rooms=["project:*"], ttl=600)
    >>> token.count(".")
    2
    """
    if not sub:
        raise ValueError("sub must not be empty")
    seconds = ttl.total_seconds() if isinstance(ttl, datetime.timedelta) else float(ttl)
    exp = int(time.time() + seconds)
    if exp > MAX_NUMERIC_DATE:
        raise ValueError("ttl ends after the year 9999, which the hub refuses")
    claims: dict[str, object] = {"sub": sub, "exp": exp}
    room_list = _patterns(rooms)
    if room_list is not None:
        claims["rooms"] = room_list
    publish_list = _patterns(publish)
    if publish_list is not None:
        claims["publish"] = publish_list
    if admin:
        claims["admin"] = True
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    key = secret.encode() if isinstance(secret, str) else secret
    signature = hmac.new(key, f"{header}.{body}".encode("ascii"), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"
