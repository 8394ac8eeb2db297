"""A real OpenSSH sshd for SFTP tests, run as the current (unprivileged) user.

``/usr/sbin/sshd -D -e -f CONFIG`` listens on 127.0.0.1:<free port> with a
generated ed25519 host key; a generated client key is authorized. Password
authentication is on (UsePAM yes) only when a password for the current user is
known: $WALKEEPER_TEST_SSH_PASSWORD, else ~/.wktest-password (bin/test writes
/home/wktest/.wktest-password when it runs as root).

Faults without root: kill_connections() (SIGKILL: the client sees OSError or
EOFError), freeze_connections()/thaw_connections() (SIGSTOP/SIGCONT: a hang
only a timeout ends), chmod on ``directory``.
"""

from __future__ import annotations

import getpass
import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path

from procs import children_map, free_port

SSHD = Path(os.environ.get("WALKEEPER_SSHD", "/usr/sbin/sshd"))
SSH_KEYGEN = "ssh-keygen"


class SshHarnessError(RuntimeError):
    pass


def find_password() -> str | None:
    env = os.environ.get("WALKEEPER_TEST_SSH_PASSWORD")
    if env:
        return env
    candidates = [Path(pwd.getpwuid(os.getuid()).pw_dir) / ".wktest-password"]
    if getpass.getuser() == "wktest":
        candidates.append(Path("/home/wktest/.wktest-password"))
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return None


def keygen(path: Path, comment: str = "walkeeper-test") -> Path:
    """Generate an ed25519 key pair without passphrase at path (+ .pub)."""
    proc = subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment,
                           "-f", str(path)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SshHarnessError(f"ssh-keygen failed: {proc.stderr}")
    os.chmod(path, 0o600)
    return path


class SshServer:
    """sshd on 127.0.0.1:port, serving SFTP (internal-sftp) for the current user.

    Attributes: host, port, user, key_file (client private key, 0600),
    known_hosts (file with the server's host key for [127.0.0.1]:PORT),
    directory (absolute, writable directory for a store), password (or None),
    workdir, log.
    """

    def __init__(self, workdir: Path, directory: Path | None = None,
                 password: str | None | bool = True, extra_config: str = ""):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = getpass.getuser()
        self.password = find_password() if password is True else (password or None)
        self.directory = Path(directory).resolve() if directory else self.workdir / "store"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / "sshd.log"
        self.config = self.workdir / "sshd_config"
        self.pid_file = self.workdir / "sshd.pid"
        self.host_key = keygen(self.workdir / "ssh_host_ed25519_key", "walkeeper-test-host")
        self.key_file = keygen(self.workdir / "client_ed25519_key", "walkeeper-test-client")
        self.authorized_keys = self.workdir / "authorized_keys"
        self.authorized_keys.write_text(Path(f"{self.key_file}.pub").read_text())
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.write_text(self.known_hosts_line(Path(f"{self.host_key}.pub")))
        self.extra_config = extra_config
        self.proc: subprocess.Popen | None = None
        self._log_fh = None

    def __repr__(self) -> str:
        return f"<SshServer {self.user}@{self.host}:{self.port}>"

    # ----------------------------------------------------------------- files
    def known_hosts_line(self, pub_file: Path) -> str:
        keytype, key = pub_file.read_text().split()[:2]
        return f"[{self.host}]:{self.port} {keytype} {key}\n"

    def wrong_known_hosts(self, path: Path | str) -> Path:
        """Write a known_hosts at path naming this host:port with a different key."""
        path = Path(path)
        other = self.workdir / f"other_host_key_{time.monotonic_ns()}"
        keygen(other, "walkeeper-test-impostor")
        path.write_text(self.known_hosts_line(Path(f"{other}.pub")))
        return path

    def write_config(self) -> None:
        pam = "yes" if self.password else "no"
        # Our own file with no Include: the first value of a setting wins.
        self.config.write_text(
            f"{self.extra_config}\n"
            f"Port {self.port}\n"
            f"ListenAddress {self.host}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.pid_file}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            "StrictModes no\n"
            f"UsePAM {pam}\n"
            f"PasswordAuthentication {pam}\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            f"AllowUsers {self.user}\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel VERBOSE\n"
            "MaxStartups 100\n"
            "MaxSessions 100\n"
            "ClientAliveInterval 0\n"
            "UseDNS no\n"
        )

    # ------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 10) -> "SshServer":
        if not SSHD.exists():
            raise SshHarnessError(f"{SSHD} not found (apt-get install openssh-server)")
        self.write_config()
        check = subprocess.run([str(SSHD), "-t", "-f", str(self.config)],
                               capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check.returncode != 0:
            raise SshHarnessError(f"sshd -t rejected {self.config}: {check.stderr}")
        self._log_fh = open(self.log, "ab")
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=self._log_fh,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SshHarnessError(
                    f"sshd exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SshHarnessError(f"sshd not listening on {self.port} after {timeout}s:\n"
                                      f"{self.log_tail()}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None:
            for pid in self.connection_pids():
                _signal(pid, signal.SIGCONT)
            self.kill_connections()
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.proc = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def __enter__(self) -> "SshServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no sshd log)"

    # ---------------------------------------------------------------- faults
    def connection_pids(self) -> list[int]:
        """The per-connection sshd processes (descendants of the listener)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        children = children_map()
        out: list[int] = []
        todo = list(children.get(self.proc.pid, []))
        while todo:
            p = todo.pop(0)
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def wait_connections(self, count: int = 1, timeout: float = 5) -> list[int]:
        """Wait until at least count connection processes exist."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.connection_pids()
            if len(pids) >= count or time.monotonic() > deadline:
                return pids
            time.sleep(0.01)

    def kill_connections(self) -> list[int]:
        """SIGKILL every open connection (the listener keeps running)."""
        pids = self.connection_pids()
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        return pids

    def freeze_connections(self) -> list[int]:
        """SIGSTOP every open connection: the client hangs until a timeout."""
        pids = self.connection_pids()
        for pid in pids:
            _signal(pid, signal.SIGSTOP)
        return pids

    def thaw_connections(self) -> list[int]:
        pids = self.connection_pids()
        for pid in pids:
            _signal(pid, signal.SIGCONT)
        return pids

    # --------------------------------------------------------------- helpers
    def paramiko_client(self, known_hosts: Path | str | None = None, timeout: float = 10):
        """A connected paramiko SSHClient (RejectPolicy, key auth)."""
        import paramiko
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts or self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.host, port=self.port, username=self.user,
                           key_filename=str(self.key_file), look_for_keys=False,
                           allow_agent=False, timeout=timeout, banner_timeout=timeout,
                           auth_timeout=timeout)
        except BaseException:
            client.close()
            raise
        return client

    def store_config(self, name: str = "offsite", directory: Path | str | None = None,
                     password_env: str | None = None, use_key: bool = True) -> str:
        """A [[stores]] TOML table for walkeeper pointing at this server."""
        lines = ["[[stores]]", f'name = "{name}"', 'type = "sftp"',
                 f'host = "{self.host}"', f"port = {self.port}", f'user = "{self.user}"',
                 f'directory = "{directory or self.directory}"',
                 f'known_hosts = "{self.known_hosts}"']
        if use_key:
            lines.append(f'key_file = "{self.key_file}"')
        if password_env:
            lines.append(f'password_env = "{password_env}"')
        return "\n".join(lines) + "\n"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
