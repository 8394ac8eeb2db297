"""Where things live inside a store. Pure: names in, relative keys out.

    <cluster>/identity.json                      the cluster this archive belongs to
    <cluster>/wal/<TLI><LOG>/<NAME><suffix>       segments, .partial and .backup files
    <cluster>/wal/<NAME>.history<suffix>          timeline history files

Grouping segments by their first 16 hex digits (timeline and log) bounds a directory
at 256 segments of 16 MiB (4096 of 1 MiB), so a million segments never make one huge
listing. Temporary uploads are `.tmp-<token>-<final name>` beside their final name.
"""

from __future__ import annotations

import os

from walkeeper.wal import WalKind, WalName

# The codec of a stored object is told by its suffix (objects.CODECS).
SUFFIX = {"none": ".raw", "zstd": ".zst"}
TEMP_PREFIX = ".tmp-"
# String methods, not `re`: config loading (every push and fetch) imports this module
# through the local store type, and `re` costs ~2 ms of their start-up.
_SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _safe_part(part: str) -> bool:
    return bool(part) and part[0] not in ".-" and all(c in _SAFE_CHARS for c in part)


def identity_key(cluster: str) -> str:
    return f"{cluster}/identity.json"


def encryption_key(cluster: str) -> str:
    """How the archive is encrypted (crypto.py): KDF parameters and a key check."""
    return f"{cluster}/encryption.json"


def wal_dir(cluster: str, wal: WalName) -> str:
    if wal.kind is WalKind.HISTORY:
        return f"{cluster}/wal"
    return f"{cluster}/wal/{wal.name[:16]}"


def wal_keys(cluster: str, wal: WalName, codec: str) -> list[str]:
    """Candidate keys, the configured codec's first: an archive may hold objects
    written under an earlier compression setting."""
    d = wal_dir(cluster, wal)
    order = [codec] + [c for c in SUFFIX if c != codec]
    return [f"{d}/{wal.name}{SUFFIX[c]}" for c in order]


def object_name(name: str, codec: str) -> str:
    """The file name of `name` (a WAL file name, base.tar, ...) stored with `codec`."""
    return name + SUFFIX[codec]


def stored_name(basename: str) -> str | None:
    """The name an object file stands for (its file name less the codec suffix), or
    None for anything that is not a stored object."""
    for suffix in SUFFIX.values():
        if basename.endswith(suffix):
            return basename[: -len(suffix)]
    return None


def temp_key(key: str) -> str:
    head, _, base = key.rpartition("/")
    name = f"{TEMP_PREFIX}{os.urandom(6).hex()}-{base}"
    return f"{head}/{name}" if head else name


def is_temp(basename: str) -> bool:
    return basename.startswith(TEMP_PREFIX)


def check_key(key: str) -> str:
    """Refuse any key that could escape the store's directory."""
    parts = key.split("/")
    if not key or any(not _safe_part(p) and not is_temp(p) for p in parts) \
            or any(p in (".", "..") for p in parts):
        raise ValueError(f"refusing unsafe object name {key!r}")
    return key


# Base backups and logical dumps:
#
#    <cluster>/backups/<ID>/base.tar<suffix>       the tar pg_basebackup wrote
#    <cluster>/backups/<ID>/backup.json            metadata: written last, the completion mark
#    <cluster>/dumps/<ID>/<DATABASE>.dump<suffix>  pg_dump -Fc of one database
#    <cluster>/dumps/<ID>/dump.json                metadata: written last
#
# ID is the UTC start time, YYYYMMDDTHHMMSSZ, with -2, -3, ... when already taken.

BACKUP_META = "backup.json"
DUMP_META = "dump.json"


def backups_dir(cluster: str) -> str:
    return f"{cluster}/backups"


def backup_dir(cluster: str, backup_id: str) -> str:
    return f"{cluster}/backups/{backup_id}"


def backup_meta_key(cluster: str, backup_id: str) -> str:
    return f"{backup_dir(cluster, backup_id)}/{BACKUP_META}"


def backup_file_key(cluster: str, backup_id: str, name: str, codec: str) -> str:
    return f"{backup_dir(cluster, backup_id)}/{name}{SUFFIX[codec]}"


def dumps_dir(cluster: str) -> str:
    return f"{cluster}/dumps"


def dump_dir(cluster: str, dump_id: str) -> str:
    return f"{cluster}/dumps/{dump_id}"


def dump_meta_key(cluster: str, dump_id: str) -> str:
    return f"{dump_dir(cluster, dump_id)}/{DUMP_META}"


def dump_file_key(cluster: str, dump_id: str, database: str, codec: str) -> str:
    """A database name may hold any character; the key keeps the safe ones
    (dump.json records the real name)."""
    safe = "".join(c if c in _SAFE_CHARS else "_" for c in database)
    if not safe or not safe[0].isalnum():
        safe = "_" + safe
    return f"{dump_dir(cluster, dump_id)}/{safe}.dump{SUFFIX[codec]}"
