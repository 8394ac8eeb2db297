"""A store on an SFTP server, through paramiko.

Safety: the server's host key must already be in known_hosts (RejectPolicy: an
unknown key is refused, never learnt). Secrets come from the environment or a key
file that only its owner can read. Every socket operation has a timeout.

Durability: upload to a temporary name (0600, O_EXCL), fsync@openssh.com, check the
size the server holds, then the plain SFTP rename, which OpenSSH refuses when the
target exists (it links, then unlinks): an atomic no-clobber placement.
"""

from __future__ import annotations

import os
import socket
import stat
import time

import paramiko
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY

from walkeeper import log
from walkeeper.stores.registry import StoreConfig
from walkeeper.errors import ConfigError, ObjectExists, ObjectNotFound, StoreError
from walkeeper.format.layout import check_key, temp_key
from walkeeper.stores.base import Entry, missing_root

_TRANSIENT = (OSError, EOFError, socket.timeout, paramiko.SSHException)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, EOFError):
        return "connection closed by the server"
    text = str(exc) or type(exc).__name__
    return text


def load_key(path: str, passphrase_env: str) -> paramiko.PKey:
    path = os.path.expanduser(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"key file {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise ConfigError(f"key file {path} is readable by others (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")
    passphrase = None
    if passphrase_env:
        passphrase = os.environ.get(passphrase_env)
        if passphrase is None:
            raise ConfigError(f"key_passphrase_env names {passphrase_env}, which is not set")
    try:
        return paramiko.PKey.from_path(path, passphrase.encode() if passphrase else None)
    except (paramiko.SSHException, TypeError, ValueError, OSError) as exc:
        if passphrase is None and isinstance(exc, (paramiko.PasswordRequiredException, TypeError)):
            raise ConfigError(f"key file {path} is encrypted; set key_passphrase_env to a "
                              f"variable holding its passphrase") from None
        hint = "wrong passphrase or not a private key" if passphrase else "not a private key"
        raise ConfigError(f"cannot load key file {path}: {hint} "
                          f"({type(exc).__name__})") from None


class SftpUpload:
    def __init__(self, store: SftpStore, key: str):
        self.store = store
        self.final = store._path(key)
        self.temp = store._path(temp_key(key))
        self.written = 0
        self.f = None
        def create(sftp):
            try:
                f = sftp.open(self.temp, "wbx")
            except FileNotFoundError:
                store._makedirs(os.path.dirname(self.final))
                f = sftp.open(self.temp, "wbx")
            f.chmod(0o600)
            f.set_pipelined(True)
            return f

        self.f = store._retrying("cannot create", self.temp, create)

    def write(self, data: bytes) -> None:
        try:
            self.f.write(data)
            self.written += len(data)
        except _TRANSIENT as exc:
            self.abort()
            raise self.store._error("cannot write", self.temp, exc) from None

    def commit(self) -> None:
        sftp = self.store.sftp()
        try:
            self.f.flush()
            sftp._request(CMD_EXTENDED, "fsync@openssh.com", self.f.handle)
            self.f.close()
            self.f = None
            size = sftp.stat(self.temp).st_size
            if size != self.written:
                raise OSError(f"server holds {size} bytes of {self.written} written")
        except _TRANSIENT as exc:
            self.abort()
            raise self.store._error("cannot store", self.temp, exc) from None
        try:
            sftp.rename(self.temp, self.final)
        except _TRANSIENT as exc:
            exists = self._exists(self.final)
            self.abort()
            if exists:
                raise ObjectExists(self.store.name, f"{self.final} already exists") from None
            raise self.store._error("cannot rename into", self.final, exc) from None

    def _exists(self, path: str) -> bool:
        try:
            self.store.sftp().stat(path)
            return True
        except _TRANSIENT:
            return False

    def abort(self) -> None:
        try:
            if self.f is not None:
                self.f.close()
        except Exception:
            pass
        self.f = None
        if not self.store._alive():
            return      # a leftover .tmp- object is recognisable and never read as data
        try:
            self.store.sftp().remove(self.temp)
        except Exception:
            pass


class SftpReader:
    def __init__(self, store: SftpStore, f, path: str):
        self.store = store
        self.f = f
        self.path = path

    def read(self, n: int) -> bytes:
        try:
            return self.f.read(n)
        except _TRANSIENT as exc:
            raise self.store._error("cannot read", self.path, exc) from None

    def close(self) -> None:
        try:
            self.f.close()
        except Exception:
            pass


class SftpStore:
    def __init__(self, cfg: StoreConfig):
        self.cfg = cfg
        self.name = cfg.name
        self.root = cfg.directory.rstrip("/") or "/"
        self.location = f"{cfg.user}@{cfg.host}:{cfg.port}{self.root}"
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._dirs: set[str] = set()
        self._pkey = None
        self._password = None
        if cfg.key_file:
            self._pkey = load_key(cfg.key_file, cfg.key_passphrase_env)
        if cfg.password_env:
            self._password = os.environ.get(cfg.password_env)
            if self._password is None:
                raise ConfigError(f"store {cfg.name!r}: password_env names {cfg.password_env}, "
                                  f"which is not set")
        if not self._pkey and not self._password:
            raise ConfigError(f"store {cfg.name!r}: set key_file or password_env")
        self.known_hosts = os.path.expanduser(cfg.known_hosts)
        if not os.path.isfile(self.known_hosts):
            raise ConfigError(f"store {cfg.name!r}: known_hosts file {self.known_hosts} does not "
                              f"exist; add the server's key after checking its fingerprint "
                              f"(ssh-keyscan -p {cfg.port} {cfg.host})")

    def _path(self, key: str) -> str:
        try:
            return f"{self.root}/{check_key(key)}"
        except ValueError as exc:
            raise StoreError(self.name, str(exc)) from None

    def _error(self, what: str, path: str, exc: BaseException) -> StoreError:
        if not self._alive():
            self.close()        # the next call reconnects
        return StoreError(self.name, f"{what} {self.cfg.user}@{self.cfg.host}:{self.cfg.port}"
                                     f"{path}: {_reason(exc)}")

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return transport is not None and transport.is_active()

    def _retrying(self, what: str, path: str, fn):
        """fn(sftp), reconnecting and trying again when the connection has died
        (an idle connection dropped by a NAT, a restarted server). A live
        connection's error (permission, timeout) is not retried."""
        for attempt in range(1, self.cfg.retries + 1):
            sftp = self.sftp()
            try:
                return fn(sftp)
            except FileNotFoundError:
                raise
            except _TRANSIENT as exc:
                if self._alive() or attempt == self.cfg.retries:
                    raise self._error(what, path, exc) from None
                log.debug(f"store {self.name}: connection lost ({_reason(exc)}); reconnecting")
                self.close()

    def _connect(self) -> None:
        cfg = self.cfg
        log.route_library_logging("paramiko")
        delay = 0.5
        for attempt in range(1, cfg.retries + 1):
            client = paramiko.SSHClient()
            try:
                client.load_host_keys(self.known_hosts)
            except (OSError, paramiko.SSHException) as exc:
                raise ConfigError(f"store {cfg.name!r}: cannot read known_hosts "
                                  f"{self.known_hosts}: {exc}") from None
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(cfg.host, cfg.port, username=cfg.user, pkey=self._pkey,
                               password=self._password, timeout=cfg.timeout,
                               banner_timeout=cfg.timeout, auth_timeout=cfg.timeout,
                               channel_timeout=cfg.timeout, look_for_keys=False,
                               allow_agent=False)
                sftp = client.open_sftp()
                sftp.get_channel().settimeout(cfg.timeout)
                self._client, self._sftp = client, sftp
                return
            except paramiko.BadHostKeyException:
                client.close()
                raise StoreError(self.name, f"host key of {cfg.host}:{cfg.port} does not match "
                                 f"{self.known_hosts}: refusing to connect (possible "
                                 f"man-in-the-middle, or the server was reinstalled)") from None
            except paramiko.AuthenticationException:
                client.close()
                raise StoreError(self.name, f"authentication as {cfg.user} at {cfg.host}:"
                                 f"{cfg.port} failed; check the key or password") from None
            except paramiko.SSHException as exc:
                client.close()
                if "not found in known_hosts" in str(exc):
                    raise StoreError(self.name, f"host key of {cfg.host}:{cfg.port} is not in "
                                     f"{self.known_hosts}: refusing an unknown host; add it "
                                     f"after checking its fingerprint") from None
                last = exc
            except _TRANSIENT as exc:
                client.close()
                last = exc
            if attempt < cfg.retries:
                log.debug(f"store {self.name}: connect attempt {attempt} failed "
                          f"({_reason(last)}); retrying in {delay:.1f}s")
                time.sleep(delay)
                delay *= 2
        raise StoreError(self.name, f"cannot connect to {cfg.host}:{cfg.port} after "
                         f"{cfg.retries} attempts: {_reason(last)}")

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._connect()
        return self._sftp

    def _makedirs(self, directory: str, create_root: bool = False) -> None:
        """Create missing directories 0700; the store's root itself only when
        create_root (first-time setup)."""
        sftp = self.sftp()
        missing = []
        d = directory
        while d not in self._dirs and d not in ("", "/"):
            try:
                if stat.S_ISDIR(sftp.stat(d).st_mode):
                    break
            except FileNotFoundError:
                pass
            if d == self.root and not create_root:
                raise missing_root(self.name, self.location)
            missing.append(d)
            d = os.path.dirname(d)
        for d in reversed(missing):
            try:
                sftp.mkdir(d, 0o700)
            except OSError:
                if not self._is_dir(d):
                    raise
        self._dirs.add(directory)

    def _is_dir(self, d: str) -> bool:
        try:
            return stat.S_ISDIR(self.sftp().stat(d).st_mode)
        except OSError:
            return False

    def root_exists(self) -> bool:
        try:
            attrs = self._retrying("cannot stat", self.root, lambda sftp: sftp.stat(self.root))
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(attrs.st_mode or 0)

    def create_root(self) -> bool:
        if self.root_exists():
            return False
        self._retrying("cannot create directory", self.root,
                       lambda sftp: self._makedirs(self.root, create_root=True))
        return True

    def begin_put(self, key: str) -> SftpUpload:
        return SftpUpload(self, key)

    def put_bytes(self, key: str, data: bytes) -> None:
        up = self.begin_put(key)
        up.write(data)
        up.commit()

    def open(self, key: str) -> SftpReader:
        path = self._path(key)
        def op(sftp):
            f = sftp.open(path, "rb")
            f.prefetch()
            return f

        try:
            return SftpReader(self, self._retrying("cannot read", path, op), path)
        except FileNotFoundError:
            raise ObjectNotFound(self.name, f"{path} does not exist") from None

    def read_tail(self, key: str, n: int) -> bytes:
        path = self._path(key)
        def op(sftp):
            with sftp.open(path, "rb") as f:
                size = f.stat().st_size
                f.seek(max(0, size - n))
                return f.read(n)

        try:
            return self._retrying("cannot read", path, op)
        except FileNotFoundError:
            raise ObjectNotFound(self.name, f"{path} does not exist") from None

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            self._retrying("cannot stat", path, lambda sftp: sftp.stat(path))
            return True
        except FileNotFoundError:
            return False

    def list(self, prefix: str) -> list[Entry]:
        path = self._path(prefix)
        try:
            attrs = self._retrying("cannot list", path, lambda sftp: sftp.listdir_attr(path))
        except FileNotFoundError:
            return []
        return [Entry(a.filename, a.st_size or 0, stat.S_ISDIR(a.st_mode or 0),
                      float(a.st_mtime or 0)) for a in attrs]

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            self._retrying("cannot delete", path, lambda sftp: sftp.remove(path))
        except FileNotFoundError:
            pass

    def remove_dir(self, prefix: str) -> None:
        """Remove the directory `prefix` if it is empty; nothing otherwise."""
        path = self._path(prefix)
        try:
            self._retrying("cannot remove", path, lambda sftp: sftp.rmdir(path))
        except (FileNotFoundError, StoreError):
            pass

    def free_bytes(self) -> int | None:
        """Bytes available on the server's file system holding the store, through
        OpenSSH's statvfs@openssh.com extension; None when the server does not offer
        it or cannot answer. Raises StoreError only when the server is unreachable."""
        sftp = self.sftp()
        d = self.root
        while True:
            try:
                t, msg = sftp._request(CMD_EXTENDED, "statvfs@openssh.com", d)
            except FileNotFoundError:
                parent = os.path.dirname(d)
                if parent == d:
                    return None
                d = parent       # not created yet: the file system it will be on
                continue
            except _TRANSIENT:
                return None
            if t != CMD_EXTENDED_REPLY:
                return None
            # f_bsize f_frsize f_blocks f_bfree f_bavail ...: uint64 each
            fields = [msg.get_int64() for _ in range(5)]
            return fields[4] * (fields[1] or fields[0])

    def abort_stale_uploads(self, prefix: str, before: float, dry_run: bool = False) -> list[str]:
        return []       # leftovers are .tmp- files, which verify-chain reports

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._sftp = None

