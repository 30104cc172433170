"""The plugin config file: YAML in, a typed and validated `Config` out.

gpbackup copies the file to every host and adds `pgport` and
`backup_plugin_version` to `options`. Option names of the reference Go plugin
keep their meaning; everything else is ours and documented in the README.
Unknown options are an error: a typo in a backup config must not pass silently.
"""

from __future__ import annotations

import dataclasses
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
LOG_LEVELS = ("debug", "info", "warning", "error")

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": KiB,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": MiB,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": GiB,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: object, name: str) -> int:
    """`500MB`, `64MiB`, `10485760` -> bytes (MB = 10^6, MiB = 2^20, like the Go plugin)."""
    match = _SIZE_RE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise ConfigError(
            f"option {name}: {text!r} is not a size (examples: 500MB, 64MiB, 10485760)"
        )
    value = int(float(match.group(1)) * _UNITS[unit])
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
    if value <= 0:
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


def parse_folder(text: object, name: str) -> str:
    value = parse_text(text, name).strip("/")
    if not value or any(part in ("", ".", "..") for part in value.split("/")):
        raise ConfigError(
            f"option {name}: {text!r} is not a clean relative folder like prod/cluster1"
        )
    return value


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
        """The options as a dict with secrets masked, for the log."""
        out = dataclasses.asdict(self)
        for secret in ("aws_secret_access_key", "aws_access_key_id"):
            if out[secret]:
                out[secret] = "***"
        return out


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
    "path": parse_text,
    "backup_max_concurrent_requests": parse_count,
    "backup_multipart_chunksize": parse_size,
    "backup_queue_depth": parse_count,
    "restore_max_concurrent_requests": parse_count,
    "restore_multipart_chunksize": parse_size,
    "restore_splice": parse_switch,
    "max_retries": lambda v, n: parse_count(v, n, 0, 100),
    "request_timeout": parse_seconds,
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


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the plugin config file gpbackup passes as CONFIG_PATH."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read plugin config {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"plugin config {path} is not UTF-8 text") from None
    try:
        document = yaml.safe_load(text)
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
