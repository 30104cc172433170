"""AWS Signature Version 4 for S3 requests (Authorization header), standard library only.

Importing botocore costs about 0.17 CPU-s per process (aiobotocore with aiohttp about
0.45 s), more than the lean S3 path may spend, so this module signs on its own.
It follows the S3 API Reference, "Signature Calculations for the Authorization Header:
Transferring Payload in a Single Chunk", and tests/unit/test_sigv4.py checks it bit for
bit against botocore's S3SigV4Auth and against the documentation's GET Object example.

S3 differs from other services in two ways that matter here: the path is encoded once
and never normalised ('//' and '.' segments stay), and the payload may be sent as
UNSIGNED-PAYLOAD (the body is then protected by TLS and the checksum headers).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None  # session token (STS); sent as x-amz-security-token

    def __repr__(self) -> str:  # dataclass keeps this one: no key in any repr
        token = "'***'" if self.token else "None"
        return f"Credentials(access_key='***', secret_key='***', token={token})"


def quote_path(path: str) -> str:
    """S3 canonical URI of a raw (not yet encoded) path like "/bucket/my key+é": UTF-8, every
    byte outside A-Za-z0-9-._~ and '/' percent-encoded with upper-case hex. S3 encodes once
    (no double encoding, no normalisation of '//' or '.'). The same string goes on the
    request line."""
    # quote() always keeps A-Za-z0-9 and "-._~"; '/' is the only extra safe byte.
    return quote(path, safe="/")


def canonical_query(params: Mapping[str, str]) -> str:
    """Sorted by encoded name then value, names and values encoded like quote_path but '/'
    encoded too; a param with value "" gives "name=". Goes on the request line as is."""
    pairs = sorted((quote(name, safe=""), quote(value, safe="")) for name, value in params.items())
    return "&".join(f"{name}={value}" for name, value in pairs)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.digest(key, msg.encode(), "sha256")


class Signer:
    """Signs requests for one region and service with credentials fetched per request."""

    def __init__(
        self, region: str, credentials: Callable[[], Credentials], service: str = "s3"
    ) -> None:
        self._region = region
        self._service = service
        self._credentials = credentials
        self._scope_suffix = f"/{region}/{service}/aws4_request"
        # (date, secret key, signing key): the key changes only daily or on rotation, and
        # deriving it costs four HMACs. One tuple, so a reader never sees a torn update.
        self._key: tuple[str, str, bytes] | None = None

    def for_region(self, region: str) -> Signer:
        """The same credentials, signing for another region (after a region redirect)."""
        return Signer(region, self._credentials, self._service)

    def _signing_key(self, date: str, secret_key: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == date and cached[1] == secret_key:
            return cached[2]
        key = _hmac(f"AWS4{secret_key}".encode(), date)
        for part in (self._region, self._service, "aws4_request"):
            key = _hmac(key, part)
        self._key = (date, secret_key, key)
        return key

    def sign(
        self,
        method: str,
        host: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        now: float | None = None,
    ) -> dict[str, str]:
        """Headers to add to the request: x-amz-date, x-amz-content-sha256 (UNSIGNED-PAYLOAD;
        left out when `headers` already has x-amz-content-sha256, whose value is then the
        payload hash), x-amz-security-token when the credentials have a token, and
        authorization. `host` is the Host header value (with :port when non-default),
        `path` is already quote_path'ed, `query` already canonical_query'ed, `headers` are
        the other headers to sign (lower-case names, e.g. content-length, content-type,
        x-amz-checksum-crc32c, x-amz-meta-*, range). Signs host, every given header and the
        added x-amz-* ones; header values are trimmed and inner runs of whitespace
        collapsed as SigV4 requires. now: epoch seconds (default time.time())."""
        creds = self._credentials()
        stamp = time.strftime(TIMESTAMP_FORMAT, time.gmtime(time.time() if now is None else now))
        date = stamp[:8]

        signed = {name.lower(): value for name, value in headers.items()}
        added = {"x-amz-date": stamp}
        payload_hash = signed.get("x-amz-content-sha256")
        if payload_hash is None:
            payload_hash = added["x-amz-content-sha256"] = UNSIGNED_PAYLOAD
        if creds.token:
            added["x-amz-security-token"] = creds.token
        signed.update(added)
        signed["host"] = host
        names = sorted(signed)
        # Trimall as botocore does it: str.split() drops leading, trailing and inner runs.
        canonical_headers = "".join(f"{name}:{' '.join(signed[name].split())}\n" for name in names)
        signed_names = ";".join(names)
        canonical_request = "\n".join(
            (method.upper(), path, query, canonical_headers, signed_names, payload_hash)
        )
        scope = date + self._scope_suffix
        string_to_sign = (
            f"{ALGORITHM}\n{stamp}\n{scope}\n"
            f"{hashlib.sha256(canonical_request.encode()).hexdigest()}"
        )
        signature = _hmac(self._signing_key(date, creds.secret_key), string_to_sign).hex()
        added["authorization"] = (
            f"{ALGORITHM} Credential={creds.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return added
