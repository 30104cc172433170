"""Secrets out of every message: URL user-info (`user:password@` in endpoint or
http_proxy) and the values of the keys themselves.

Errors on stderr are built from fixed text and masked URLs (storage.s3common.translate);
the log also gets tracebacks, whose foreign messages may quote a URL or a request, so
log.py passes every line through `Redactor` too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from asyncplug.config import Config

MASK = "***"
# Up to the last @ before a space: a password may hold an unencoded / or @.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s]*@")
# Shorter values would mask ordinary words; real keys and passwords are longer.
MIN_SECRET = 4
ENV_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def mask_url(text: object) -> str:
    """The text with `scheme://user:password@` turned into `scheme://***@`."""
    return _USERINFO.sub(rf"\1{MASK}@", str(text))


def _userinfo(url: str) -> list[str]:
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
    except ValueError:
        return []
    found = [parts.username or "", parts.password or ""]
    return [*found, *(unquote(v) for v in found)]


def secret_values(config: Config) -> list[str]:
    """Every secret this process may hold: keys, session tokens, URL user names and passwords."""
    values = [config.aws_access_key_id, config.aws_secret_access_key]
    values += [os.environ.get(name, "") for name in ENV_SECRETS]
    for url in (config.endpoint, config.http_proxy):
        values += _userinfo(url)
    return sorted({v for v in values if len(v) >= MIN_SECRET}, key=len, reverse=True)


class Redactor:
    """Masks URL user-info and the given secret values in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = mask_url(text)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text
