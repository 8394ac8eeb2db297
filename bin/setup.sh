# Shared by bin/test and bin/demo (sourced, not run): install what a fresh Debian 12
# machine lacks, and, as root, hand the work to an unprivileged user, since
# PostgreSQL refuses to run as root.

# chromium: tests/test_status.py renders the status --html page headless.
# ceph-mon ceph-osd radosgw (ceph-common comes along): the throwaway S3 server of
# tests/rgwharness.py (Ceph RGW 16 on memstore, unprivileged; no service is started);
# openssl makes its TLS certificates.
APT_PACKAGES=(postgresql-15 postgresql-client-15 openssh-server openssh-sftp-server python3-venv zstd chromium
              ceph-mon ceph-osd radosgw openssl)
PY=/usr/bin/python3

# shell_words ARGS...: the words as one line a shell reads back as the same words
# (bin/demo prints its commands so that they can be pasted: a --target-time has a space).
shell_words() {
    local out=() w
    for w in "$@"; do
        if [[ -n "$w" && "$w" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
            out+=("$w")
        else
            out+=("'${w//\'/\'\\\'\'}'")
        fi
    done
    printf '%s\n' "${out[*]}"
}

say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# ensure_packages PKG...: apt-get install the ones that are missing (root only).
ensure_packages() {
    export DEBIAN_FRONTEND=noninteractive
    local missing=() p
    for p in "$@"; do
        if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then
            missing+=("$p")
        fi
    done
    ((${#missing[@]})) || return 0
    say "installing missing packages: ${missing[*]}"
    apt-get update -q </dev/null >/tmp/walkeeper-apt.log 2>&1 \
        || { tail -n 30 /tmp/walkeeper-apt.log >&2; die "apt-get update failed (log: /tmp/walkeeper-apt.log)"; }
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >>/tmp/walkeeper-apt.log 2>&1 \
        || { tail -n 30 /tmp/walkeeper-apt.log >&2; die "apt-get install failed (log: /tmp/walkeeper-apt.log)"; }
}

# ensure_user NAME: an unprivileged user with a home directory.
ensure_user() {
    id -u "$1" >/dev/null 2>&1 || { say "creating user $1"; useradd -m -s /bin/bash "$1"; }
}

# copy_checkout SRC DEST USER: a private copy of the checkout owned by USER.
copy_checkout() {
    local src="$1" dest="$2" user="$3"
    [[ "$src" == "$dest" ]] && return 0
    rm -rf "$dest"
    mkdir -p "$dest"
    tar -C "$src" --exclude=./.git --exclude=./.venv --exclude=__pycache__ \
        --exclude='*.egg-info' --exclude=./.pytest_cache -cf - . | tar -C "$dest" -xf -
    chown -R "$user:" "$dest"
}

# run_as USER HOME SCRIPT ARGS...: re-run a script as USER with a clean environment.
run_as() {
    local user="$1" home="$2"
    shift 2
    exec runuser -u "$user" -- env \
        -u PYENV_ROOT -u PYENV_VERSION -u VIRTUAL_ENV -u PYTHONPATH -u WALKEEPER_VENV \
        -u TMPDIR -u XDG_STATE_HOME -u XDG_CACHE_HOME -u XDG_CONFIG_HOME -u XDG_RUNTIME_DIR \
        HOME="$home" USER="$user" LOGNAME="$user" PATH=/usr/local/bin:/usr/bin:/bin \
        CI="${CI:-}" WALKEEPER_TEST_SLOT="${WALKEEPER_TEST_SLOT:-}" \
        WALKEEPER_INSTALLED="${WALKEEPER_INSTALLED:-}" WALKEEPER_BIN="${WALKEEPER_BIN:-}" \
        bash "$@" </dev/null
}

# ensure_venv VENV EXTRAS: a venv from /usr/bin/python3 with this checkout installed
# (editable), reinstalled only when pyproject.toml, the checkout or Python changed.
ensure_venv() {
    local venv="$1" extras="$2" want stamp
    [[ -x "$PY" ]] || die "$PY not found (apt-get install python3 python3-venv)"
    want="$( { cat pyproject.toml bin/walkeeper bin/walkeeper-fast; pwd; echo "$extras"; "$PY" --version; } | sha256sum | cut -d' ' -f1)"
    stamp="$venv/.walkeeper-install-stamp"
    if [[ ! -x "$venv/bin/python" ]]; then
        say "creating venv $venv"
        mkdir -p "$(dirname "$venv")"
        "$PY" -m venv "$venv" || die "could not create a venv at $venv (is python3-venv installed?)"
        rm -f "$stamp"
    fi
    if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
        say "installing walkeeper$extras into $venv"
        local log
        log="$(mktemp)"
        if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".$extras" >"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            die "pip install -e '.$extras' failed"
        fi
        rm -f "$log"
        printf '%s\n' "$want" >"$stamp"
    fi
}
