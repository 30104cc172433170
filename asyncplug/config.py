"""The plugin config file: YAML in, a typed and validated `Config` out.

gpbackup copies the file to every host and adds `pgport` and
`backup_plugin_version` to `options`. Option names of the reference Go plugin
keep their meaning; everything else is ours and documented in the README.
Unknown options are an error: a typo in a backup config must not pass silently.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from asyncplug.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

COMPRESSIONS = ("none", "zstd", "gzip", "lz4")
ADDRESSING_STYLES = ("auto", "path", "virtual")
LOG_LEVELS = ("debug", "info", "warning", "error")
SSE_MODES = {m.lower(): m for m in ("AES256", "aws:kms", "aws:kms:dsse")}
UPLOAD_CHECKSUMS = ("crc32c", "md5", "none")

# The reference Go plugin reads sizes with go-bytesize: a number (digits and a dot), then
# a unit in any case, spaces allowed around it; KB, MB, GB... are powers of 1024 and have
# long names (megabyte, megabytes). The IEC names (MiB) and plain bytes are ours.
_UNITS: dict[str, int] = {"": 1, "B": 1, "BYTE": 1, "BYTES": 1} | {
    name: 1024**power
    for power, (short, long) in enumerate(
        zip("KMGTPE", ("KILO", "MEGA", "GIGA", "TERA", "PETA", "EXA"), strict=True), start=1
    )
    for name in (f"{short}B", f"{long}BYTE", f"{long}BYTES", f"{short}IB")
}
_NUMBER_RE = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+")


def parse_size(text: object, name: str) -> int:
    """A size as the Go plugin reads it (`500MB` = 500 x 2^20, `1.5GB`, `2 megabytes`),
    or `64MiB`, or whole bytes (`10485760`). Fractions of a byte are dropped, as in Go."""
    raw = str(text).strip()
    digits = len(raw) - len(raw.lstrip("0123456789."))  # go-bytesize splits here
    number, unit = raw[:digits], raw[digits:].strip().upper()
    if not _NUMBER_RE.fullmatch(number) or unit not in _UNITS or (not unit and "." in number):
        raise ConfigError(
            f"option {name}: {text!r} is not a size (examples: 500MB, 1.5GB, 64MiB, 10485760)"
        )
    value = int(float(number) * _UNITS[unit]) if unit else int(number)
    if value <= 0:
        raise ConfigError(f"option {name}: size must be greater than zero, got {text!r}")
    return value


def parse_switch(text: object, name: str) -> bool:
    """on/off (also true/false, yes/no; YAML turns bare on/off into booleans)."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ConfigError(f"option {name}: {text!r} is not on or off")


def parse_count(text: object, name: str, low: int = 1, high: int = 1024) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ConfigError(f"option {name}: {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"option {name}: {value} is outside {low}..{high}")
    return value


def parse_seconds(text: object, name: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ConfigError(f"option {name}: {text!r} is not a number of seconds") from None
    if not 0 < value < math.inf:  # nan and inf too: every wait must end
        raise ConfigError(f"option {name}: must be greater than zero, got {text!r}")
    return value


def parse_choice(choices: tuple[str, ...]) -> Callable[[object, str], str]:
    def parse(text: object, name: str) -> str:
        value = str(text).strip().lower()
        if value not in choices:
            raise ConfigError(f"option {name}: {text!r} is not one of {', '.join(choices)}")
        return value

    return parse


def parse_text(text: object, name: str) -> str:
    value = "" if text is None else str(text).strip()
    if not value:
        raise ConfigError(f"option {name}: must not be empty")
    return value


def parse_token(text: object, name: str) -> str:
    """A header-safe word such as STANDARD_IA (it goes into a request header as is)."""
    value = parse_text(text, name)
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value):
        raise ConfigError(f"option {name}: {text!r} is not a valid value")
    return value


def parse_sse(text: object, name: str) -> str:
    mode = SSE_MODES.get(parse_text(text, name).lower())
    if mode is None:
        raise ConfigError(f"option {name}: {text!r} is not one of {', '.join(SSE_MODES.values())}")
    return mode


def parse_folder(text: object, name: str) -> str:
    """The folder as the Go plugin's keys have it: its SDK cleans the request path, so
    `/prod//cluster1/`, `./prod/cluster1` and `prod/cluster1` are the same folder. `..` is
    refused (the SDK would resolve it, even out of the bucket), and so is a folder that
    cleans to nothing (keys at the bucket root)."""
    parts = [part for part in parse_text(text, name).split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise ConfigError(
            f"option {name}: {text!r} is not a clean relative folder like prod/cluster1"
        )
    return "/".join(parts)


@dataclass(frozen=True)
class Config:
    """Validated plugin options. Field names are the YAML option names.

    Memory cost of a backup_data process (see README):
        buffered bytes <= backup_multipart_chunksize
                          * (backup_max_concurrent_requests + backup_queue_depth)
    and of a restore_data process:
        buffered bytes <= restore_multipart_chunksize * (restore_max_concurrent_requests + 1)
    """

    folder: str
    storage: str = "s3"
    # s3
    bucket: str = ""
    region: str = ""
    endpoint: str = ""
    aws_access_key_id: str = ""
    aws_secret_access_key: str = ""
    encryption: bool = True
    http_proxy: str = ""
    remove_duplicate_bucket: bool = False
    # s3: how requests are addressed and whom TLS trusts (storage/endpoints.py, storage/tls.py)
    addressing_style: str = "auto"
    ca_bundle: str = ""
    # s3, AWS in production (storage/credentials.py, storage/s3options.py)
    aws_profile: str = ""  # a profile of the shared config files ("" = AWS_PROFILE/default)
    credential_cache: bool = True  # temporary credentials shared by the user's processes
    server_side_encryption: str = ""  # AES256 | aws:kms | aws:kms:dsse ("" = bucket default)
    sse_kms_key_id: str = ""
    sse_customer_key_file: str = ""  # SSE-C: a file holding the 256-bit key
    storage_class: str = ""  # "" = STANDARD (not sent)
    upload_checksum: str = "crc32c"  # crc32c | md5 | none
    # file
    path: str = ""
    # transfer
    backup_max_concurrent_requests: int = 6
    backup_multipart_chunksize: int = 8 * MiB
    backup_queue_depth: int = 2
    # Measured (bench/restore_probe.py): each GET costs ~2.5 ms of client CPU, so fewer,
    # larger ranges; 12 MiB x (4 + 1) keeps a compressed restore under 150 MB RSS too.
    restore_max_concurrent_requests: int = 4
    restore_multipart_chunksize: int = 12 * MiB
    restore_splice: bool = True  # pipeline/splice.py: whole raw restores over plain http
    max_retries: int = 8
    request_timeout: float = 120.0
    connect_timeout: float = 10.0  # DNS, TCP and TLS handshake of one connection
    # compression (backup side only: restore reads the format from the object)
    compression: str = "none"
    compression_level: int | None = None
    compression_workers: int = 2
    # where parts too big for the memory budget are buffered ("" = the system temp dir)
    spool_dir: str = ""
    # gprestore
    restore_subset: bool = False
    # logging
    log_dir: str = "~/gpAdminLogs"
    log_level: str = "info"
    # warm server (asyncplug/server.py): setup at segment_host scope starts it
    warm_server: bool = True
    # added by gpbackup; accepted and kept for the log
    pgport: str = ""
    backup_plugin_version: str = ""

    def redacted(self) -> dict[str, Any]:
        """The options as a dict with secrets masked (keys, URL user-info), for the log."""
        from asyncplug.redact import MASK, mask_url

        out = dataclasses.asdict(self)
        for secret in ("aws_secret_access_key", "aws_access_key_id"):
            if out[secret]:
                out[secret] = MASK
        for url in ("endpoint", "http_proxy"):
            out[url] = mask_url(out[url])
        return out

    def __repr__(self) -> str:  # dataclass keeps this one: no secret in any repr
        return f"Config({', '.join(f'{k}={v!r}' for k, v in self.redacted().items())})"


# YAML option name -> parser. One table: the names live here and nowhere else.
OPTIONS: Mapping[str, Callable[[object, str], Any]] = {
    "storage": parse_choice(("s3", "file")),
    "bucket": parse_text,
    "folder": parse_folder,
    "region": parse_text,
    "endpoint": parse_text,
    "aws_access_key_id": parse_text,
    "aws_secret_access_key": parse_text,
    "encryption": parse_switch,
    "http_proxy": parse_text,
    "remove_duplicate_bucket": parse_switch,
    "addressing_style": parse_choice(ADDRESSING_STYLES),
    "ca_bundle": parse_text,
    # s3, AWS in production
    "aws_profile": parse_text,
    "credential_cache": parse_switch,
    "server_side_encryption": parse_sse,
    "sse_kms_key_id": parse_text,
    "sse_customer_key_file": parse_text,
    "storage_class": lambda v, n: parse_token(v, n).upper(),
    "upload_checksum": parse_choice(UPLOAD_CHECKSUMS),
    "path": parse_text,
    "backup_max_concurrent_requests": parse_count,
    "backup_multipart_chunksize": parse_size,
    "backup_queue_depth": parse_count,
    "restore_max_concurrent_requests": parse_count,
    "restore_multipart_chunksize": parse_size,
    "restore_splice": parse_switch,
    "max_retries": lambda v, n: parse_count(v, n, 0, 100),
    "request_timeout": parse_seconds,
    "connect_timeout": parse_seconds,
    "compression": parse_choice(COMPRESSIONS),
    "compression_level": lambda v, n: parse_count(v, n, -7, 22),
    "compression_workers": lambda v, n: parse_count(v, n, 1, 64),
    "spool_dir": parse_text,
    "restore_subset": parse_switch,
    "log_dir": parse_text,
    "log_level": parse_choice(LOG_LEVELS),
    "warm_server": parse_switch,
    "pgport": lambda v, n: "" if v is None else str(v),
    "backup_plugin_version": lambda v, n: "" if v is None else str(v),
}

_LEVELS = {"gzip": (1, 9), "zstd": (-7, 22), "lz4": (0, 16)}


def build_config(options: Mapping[str, Any]) -> Config:
    """Validate a mapping of YAML options into a Config; each mistake gets its own message."""
    values: dict[str, Any] = {}
    for name, raw in options.items():
        parser = OPTIONS.get(str(name))
        if parser is None:
            raise ConfigError(
                f"unknown option {name!r} in the plugin config (see README for the list)"
            )
        values[str(name)] = parser(raw, str(name))
    if "folder" not in values:
        raise ConfigError("option folder is required (for example folder: prod/cluster1)")
    storage = values.get("storage", "s3")
    if storage == "s3":
        if not values.get("bucket"):
            raise ConfigError("option bucket is required when storage is s3")
        if not values.get("region") and not values.get("endpoint"):
            raise ConfigError("option region or endpoint is required when storage is s3")
        if bool(values.get("aws_access_key_id")) != bool(values.get("aws_secret_access_key")):
            raise ConfigError(
                "options aws_access_key_id and aws_secret_access_key go together: give both or "
                "neither (neither uses the AWS credential chain)"
            )
    elif not values.get("path"):
        raise ConfigError("option path is required when storage is file")
    level = values.get("compression_level")
    codec = values.get("compression", "none")
    if level is not None and codec in _LEVELS:
        low, high = _LEVELS[codec]
        if not low <= level <= high:
            raise ConfigError(
                f"option compression_level: {level} is outside {low}..{high} for {codec}"
            )
    return Config(**values)


# libyaml's safe loader when PyYAML was built with it, several times faster than the
# pure-Python one: every command that runs in a fresh worker parses its config.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the plugin config file gpbackup passes as CONFIG_PATH."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read plugin config {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"plugin config {path} is not UTF-8 text") from None
    try:
        document = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"plugin config {path} is not valid YAML{at}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"plugin config {path} must be a YAML mapping with an options section")
    unknown = set(map(str, document)) - {"executablepath", "options"}
    if unknown:
        raise ConfigError(f"unknown top-level key {sorted(unknown)[0]!r} in plugin config {path}")
    options = document.get("options")
    if not isinstance(options, dict):
        raise ConfigError(f"plugin config {path} has no options section")
    return build_config(options)
