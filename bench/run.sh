#!/usr/bin/env bash
# The push/fetch benchmark in one command:
#
#   WALKEEPER_CMD=/path/to/walkeeper bench/run.sh [push_fetch.py options]
#
# and the base backup / restore benchmark (issues 3 and 4):
#
#   bench/run.sh --backup-restore [backup_restore.py options]
#
# the live run of issue 6 (pgbench against a cluster archiving with cp, then walkeeper):
#
#   bench/run.sh --live [live.py options]
#
# and peak memory of push and fetch with 16 MiB and 1 GiB WAL segments:
#
#   bench/run.sh --memory [memory.py options]
#
# and issue 17's S3 figures on Ceph RGW (loopback, HTTPS): push/fetch beside pgBackRest
# async (repo1-type=s3) and barman-cloud, and basebackup to RGW beside a local store:
#
#   bench/run.sh --s3 [s3_compare.py options]
#   bench/run.sh --s3-backup [s3_backup.py options]
#
# (these two need walkeeper[s3]: without WALKEEPER_CMD the venv gets the extra, and the
# script runs with walkeeper's own interpreter, which has botocore to make buckets).
# As root it runs everything as the unprivileged user $WKBENCH_USER (default
# wkbench, created with `useradd -m` if missing), because PostgreSQL refuses root,
# and copies the JSON into bench/out/. As any other user it runs the script directly.
# The WAL set is made on first use (bench/make_wal.py, ~10 min) and reused after;
# so is the pgbench cluster of --backup-restore (~5 min).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script=push_fetch.py
case "${1:-}" in
    --backup-restore) script=backup_restore.py; shift ;;
    --live) script=live.py; shift ;;
    --memory) script=memory.py; shift ;;
    --s3) script=s3_compare.py; shift ;;
    --s3-backup) script=s3_backup.py; shift ;;
esac
extras=
case $script in s3_compare.py|s3_backup.py) extras='[s3]' ;; esac
user=${WKBENCH_USER:-wkbench}
wal_dir=${WKBENCH_WAL_DIR:-/tmp/walkeeper-bench/wal}
py=${WKBENCH_PY:-/usr/bin/python3}
[ -x "$py" ] || py=$(command -v python3)

# With no WALKEEPER_CMD, measure this checkout as users get it: a regular (not
# editable) install in a venv of its own, readable by the bench user.
# As root, the bench user owns the parent of the WAL set (and of the venv below):
# created first, or the venv would make it root's and the user could write nothing there.
if [ "$(id -u)" = 0 ]; then
    id -u "$user" >/dev/null 2>&1 || useradd -m "$user"
    parent=$(dirname "$wal_dir")
    [ -d "$parent" ] || install -d -o "$user" -g "$user" "$parent"
fi
if [ -z "${WALKEEPER_CMD:-}" ]; then
    venv=$(dirname "$wal_dir")/venv
    [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall \
        --no-deps "$here/.." >/dev/null 2>&1 \
        || "$venv/bin/python" -m pip install -q --disable-pip-version-check "$here/..$extras"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$here/..$extras" >/dev/null
    chmod -R a+rX "$venv"
    WALKEEPER_CMD=$venv/bin/walkeeper
fi

# Resolve the walkeeper command now: the bench user's PATH is not ours.
read -ra words <<< "${WALKEEPER_CMD:-walkeeper}"
exe=$(command -v "${words[0]}") || {
    echo "run.sh: walkeeper command not found: ${words[0]} (set WALKEEPER_CMD)" >&2; exit 2; }
words[0]=$(realpath -s "$exe")   # absolute, symlinks kept (a venv's bin/python must stay)
printf -v WALKEEPER_CMD '%q ' "${words[@]}"
export WALKEEPER_CMD WKBENCH_WAL_DIR=$wal_dir
if [ -n "$extras" ]; then   # the S3 modes: run with walkeeper's interpreter (botocore)
    first=$(head -n 1 "${words[0]}")
    [[ $first == '#!'*python* ]] && py=${first#\#!} && py=${py%% *}
fi

if [ "$(id -u)" != 0 ]; then
    exec "$py" "$here/$script" "$@"
fi

runuser -u "$user" -- test -x "${words[0]}" || {
    echo "run.sh: $user cannot run ${words[0]} (install walkeeper somewhere readable by all)" >&2
    exit 2; }
tmp_out=$(mktemp -d /tmp/walkeeper-bench-out.XXXXXX)
chown "$user:" "$tmp_out"
trap 'rm -rf "$tmp_out"' EXIT
cd /tmp
rc=0
runuser -u "$user" -- env WALKEEPER_CMD="$WALKEEPER_CMD" WKBENCH_WAL_DIR="$wal_dir" \
    "$py" "$here/$script" --out-dir "$tmp_out" "$@" || rc=$?
mkdir -p "$here/out"
for f in "$tmp_out"/*.json; do
    [ -e "$f" ] || continue
    cp "$f" "$here/out/"
    echo "saved: $here/out/$(basename "$f")"
done
exit $rc
