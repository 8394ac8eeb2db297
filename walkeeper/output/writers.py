"""The writer layer: what a command returned, rendered as text, JSON, Prometheus or HTML.

render(command, data, fmt) is the one entry: "text" is walkeeper.output.text's function
for the command, "json" the object of docs/contract.md (an object's to_json(), else the
data as it is), "prometheus" and "html" exist for `status`.
"""

from __future__ import annotations

import json
import os
import time

from walkeeper.errors import OperationFailed, UsageError

FORMATS = ("text", "json", "prometheus", "html")


def render_json(data) -> str:
    if hasattr(data, "to_json"):
        data = data.to_json()
    return json.dumps(data, indent=2, default=str) + "\n"


def render(command: str, data, fmt: str = "text", **context) -> str:
    """data as `fmt`; context: what the text of a command needs beyond its data."""
    if fmt == "json":
        return render_json(data)
    if fmt == "text":
        from walkeeper.output.text import TEXT

        return TEXT[command](data, **context)
    if command != "status" or fmt not in FORMATS:
        raise ValueError(f"no {fmt} output for {command}")
    if fmt == "prometheus":
        from walkeeper.output.prometheus import render_prometheus

        return render_prometheus(data)
    from walkeeper.output.html import render as render_html

    return render_html(data)


def write_atomic(path: str, text: str) -> None:
    """Write a file so that a reader sees the old or the new content, never a part."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path),
                       f".{os.path.basename(path)}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        import errno

        bad_path = exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR,
                                 errno.ENOTDIR, errno.EROFS)
        cls = UsageError if bad_path else OperationFailed    # a typo is not a failure
        raise cls(f"cannot write {path}: {exc.strerror or exc}",
                  hint="give a file path in an existing directory this user can write"
                  if bad_path else None) from None
