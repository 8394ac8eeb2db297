"""Messages for the operator on stderr. Tiny on purpose: push imports it."""

import sys

QUIET, NORMAL, VERBOSE = 0, 1, 2
level = NORMAL


def warn(msg: str) -> None:
    if level >= NORMAL:
        print(f"walkeeper: {msg}", file=sys.stderr, flush=True)


def info(msg: str) -> None:
    if level >= NORMAL:
        print(msg, file=sys.stderr, flush=True)


def debug(msg: str) -> None:
    if level >= VERBOSE:
        print(f"walkeeper: {msg}", file=sys.stderr, flush=True)


def route_library_logging(name: str) -> None:
    """A library that logs through `logging` (paramiko; boto3 and botocore alike): with
    no handler configured, Python's last-resort handler prints its warnings and errors,
    tracebacks included (a port that accepts and closes, a server that is not SSH), on
    stderr, which is PostgreSQL's log for push and fetch. walkeeper says what failed in
    its own one line; the library's detail shows only with -v, on prefixed lines. Call
    it before the library's first use (`logging` is imported here, not at start-up)."""
    import logging

    logger = logging.getLogger(name)
    if getattr(logger, "_walkeeper_routed", False):
        return
    if level >= VERBOSE:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"walkeeper: {name}: %(message)s"))
    else:
        handler = logging.NullHandler()
    logger.addHandler(handler)
    logger.propagate = False
    logger._walkeeper_routed = True
    _route_thread_exceptions(name)


def _route_thread_exceptions(name: str) -> None:
    """An exception that ends one of the library's own threads (paramiko's SFTP prefetch
    thread, when walkeeper closes a file it stopped reading) would be printed by
    threading's default hook, traceback and all. It goes where the library's logging
    goes: one prefixed line with -v, nothing otherwise. Other threads are untouched."""
    import threading

    previous = threading.excepthook
    marker = f"/{name}/"

    def hook(args) -> None:
        tb = args.exc_traceback
        while tb is not None:
            if marker in tb.tb_frame.f_code.co_filename:
                debug(f"{name}: thread {getattr(args.thread, 'name', '?')}: "
                      f"{args.exc_type.__name__}: {args.exc_value}")
                return
            tb = tb.tb_next
        previous(args)

    threading.excepthook = hook


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 segment', '2 segments' ('store', 'stores'; many for irregular plurals)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
