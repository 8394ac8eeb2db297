"""`<cluster>/identity.json`: which database system an archive belongs to.

Written by the first push ({"system_identifier": "<decimal>", "wal_segment_size": N}),
read by push and basebackup (to refuse WAL or a backup of another system under the
same cluster name), by the catalog (segment size, system identifier) and so by
fetch's content checks. The one reader and writer of that file. json is imported
inside the functions: push imports this module on its path.
"""

from __future__ import annotations

from walkeeper.errors import ObjectExists, ObjectNotFound, OperationFailed
from walkeeper.format.layout import identity_key
from walkeeper.record import record

Identity = record("Identity", "system_identifier wal_segment_size")

DEFAULT_SEGMENT_SIZE = 16 << 20


def encode(system_identifier: int, wal_segment_size: int) -> bytes:
    import json

    return (json.dumps({"system_identifier": str(system_identifier),
                        "wal_segment_size": wal_segment_size}) + "\n").encode()


def parse(data: bytes) -> Identity:
    """ValueError when the file is not an identity."""
    quick = _identity_fields(data)
    if quick is not None:
        return Identity(quick["system_identifier"], quick["wal_segment_size"])
    import json

    try:
        doc = json.loads(data)
        sysid = doc.get("system_identifier")
        return Identity(int(sysid) if sysid is not None else None,
                        int(doc.get("wal_segment_size", DEFAULT_SEGMENT_SIZE)))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an identity file: {exc}") from None


def read(store, cluster: str) -> Identity | None:
    """The store's identity of this cluster; None when it has none; ValueError when
    it is damaged."""
    try:
        reader = store.open(identity_key(cluster))
    except ObjectNotFound:
        return None
    try:
        data = reader.read(1 << 16)
    finally:
        reader.close()
    return parse(data)


def refuse_other(ident: Identity | None, store, cluster: str, system_identifier: int,
                 what: str) -> None:
    """OperationFailed when the store's identity `ident` is another system's (`what`
    names what was refused: "WAL", "a base backup")."""
    if ident is not None and ident.system_identifier not in (None, system_identifier):
        raise OperationFailed(
            f"{what} from database system {system_identifier} but store {store.name!r} holds "
            f"the archive of system {ident.system_identifier} under cluster {cluster!r}: "
            f"refusing to mix two clusters; give this one its own `cluster` name")


def claim(store, cluster: str, system_identifier: int, wal_segment_size: int) -> None:
    """Write the identity when the store has none (racing pushes: one wins, the others
    compare), else refuse another system's archive or a damaged identity."""
    for _ in range(2):
        try:
            ident = read(store, cluster)
        except ValueError:
            raise OperationFailed(
                f"store {store.name!r}: {identity_key(cluster)} is damaged; it records which "
                f"cluster the archive belongs to, restore it by hand") from None
        if ident is not None:
            refuse_other(ident, store, cluster, system_identifier, "WAL")
            return
        try:
            store.put_bytes(identity_key(cluster), encode(system_identifier, wal_segment_size))
            return
        except ObjectExists:
            continue


def _identity_fields(data: bytes) -> dict | None:
    """The two numbers of an identity.json as push writes it, read with string methods:
    importing json costs a served fetch ~2 ms (json.decoder, json.scanner). None when
    the text is not that simple shape (json decides then)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    out = {}
    for key in ("system_identifier", "wal_segment_size"):
        at = text.find(f'"{key}"')
        if at < 0 or text.count(f'"{key}"') != 1:
            return None
        rest = text[at + len(key) + 2:].lstrip()
        if not rest.startswith(":"):
            return None
        rest = rest[1:].lstrip().lstrip('"')
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        if not digits:
            return None
        out[key] = int(digits)
    return out
