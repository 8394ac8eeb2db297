#!/bin/bash
# rgw-up.sh DIR: start a throwaway S3 server (Ceph 16 RADOS Gateway) on 127.0.0.1 as the
# CURRENT user (no root, no systemd): 1 ceph-mon + 1 ceph-osd on memstore (objects live in
# the OSD's RAM and are gone when it stops) + radosgw. All state, logs and sockets go under
# DIR, which must be empty or absent. Prints shell-evaluable lines on stdout (also kept in
# DIR/env): S3_ENDPOINT S3_ACCESS_KEY S3_SECRET_KEY S3_REGION S3_DIR CEPH_MON_PID
# CEPH_OSD_PID RGW_PID RGW_WATCHDOG_PID S3_PIDS. Stop everything with: rgw-down.sh DIR.
# Run it again on the same DIR after killing radosgw: it restarts radosgw only (same port,
# same data) and prints the updated lines: for "endpoint died and came back" tests.
# Env: S3_ACCESS_KEY/S3_SECRET_KEY (else random), RGW_UP_TIMEOUT (s, default 90),
# RGW_WATCH_PID (run rgw-down.sh when that process dies, e.g. pytest's PID),
# RGW_MEMSTORE_BYTES (OSD capacity, default 1 GiB), RGW_EXTRA_CONF (lines appended to
# ceph.conf, i.e. to [client.rgw.a]; e.g. "rgw gc obj min wait = 1"). Needs ceph-mon, ceph-osd and radosgw (bin/setup.sh installs them).
# RGW_TLS=1 adds an HTTPS endpoint next to the plain one (same radosgw, same data): a
# throwaway CA and a server certificate for 127.0.0.1/localhost (EC P-256, openssl) in
# DIR/tls, and two more printed lines, S3_TLS_ENDPOINT=https://127.0.0.1:PORT2 and
# S3_CA_FILE=DIR/tls/ca.pem (the CA to trust: curl --cacert, boto3 verify=, pgBackRest
# repo1-storage-ca-file). The certificate names 127.0.0.1 both as an IP and as a DNS SAN:
# pgBackRest 2.45 matches the host against DNS SANs only. Unset: no TLS, as before.
set -euo pipefail
D=${1:?usage: rgw-up.sh DIR}
mkdir -p "$D"; D=$(cd "$D" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
C=(-c "$D/ceph.conf")
DEADLINE=$((SECONDS + ${RGW_UP_TIMEOUT:-90}))
PIDS=()
fail() {  # say why (with log tails), kill what this run started, exit 1
  echo "rgw-up: $*" >&2; tail -n 5 "$D"/log/*.log >&2 2>/dev/null || true
  [ ${#PIDS[@]} -eq 0 ] || kill -9 "${PIDS[@]}" 2>/dev/null || true; exit 1; }
trap 'fail "command failed at line $LINENO"' ERR
left() { echo $((DEADLINE - SECONDS > 1 ? DEADLINE - SECONDS : 1)); }
# a daemon in the foreground (-f) of its own session: $! is its real PID, no pid files,
# and it holds no pipe of the caller's (so subprocess.run(capture_output=True) returns)
daemon() { setsid "$@" -f </dev/null >>"$D/log/stdio.out" 2>&1 & PIDS+=($!); }
http_up() { (exec 3<>"/dev/tcp/127.0.0.1/$RGWPORT" && printf 'GET / HTTP/1.0\r\n\r\n' >&3 &&
             read -r -t 5 l <&3 && [[ $l == HTTP/* ]]) 2>/dev/null &&
           { [ -z "${TLSPORT:-}" ] || (exec 3<>"/dev/tcp/127.0.0.1/$TLSPORT") 2>/dev/null; }; }
wait_http() {  # until radosgw answers HTTP (any status) or a daemon dies
  until http_up; do
    kill -0 "$@" 2>/dev/null || fail "a daemon died"
    [ "$SECONDS" -lt "$DEADLINE" ] || fail "radosgw not answering on port $RGWPORT"
    sleep 0.05
  done; }
emit() {  # write DIR/env atomically and print it
  { echo "S3_ENDPOINT=http://127.0.0.1:$RGWPORT"; echo "S3_ACCESS_KEY=$AK"; echo "S3_SECRET_KEY=$SK"
    echo "S3_REGION=us-east-1"; echo "S3_DIR=$D"
    [ -z "${TLSPORT:-}" ] || { echo "S3_TLS_ENDPOINT=https://127.0.0.1:$TLSPORT"; echo "S3_CA_FILE=$D/tls/ca.pem"; }
    echo "CEPH_MON_PID=$CEPH_MON_PID"
    echo "CEPH_OSD_PID=$CEPH_OSD_PID"; echo "RGW_PID=$RGW_PID"; echo "RGW_WATCHDOG_PID=${RGW_WATCHDOG_PID:-}"
    echo "S3_PIDS=\"$CEPH_MON_PID $CEPH_OSD_PID $RGW_PID${RGW_WATCHDOG_PID:+ $RGW_WATCHDOG_PID}\""
  } >"$D/env.new"; mv "$D/env.new" "$D/env"; cat "$D/env"; }

if [ -f "$D/env" ]; then  # restart mode: bring back radosgw if it is not running
  unset S3_TLS_ENDPOINT  # only DIR/env says whether this server has TLS
  # shellcheck disable=SC1091
  . "$D/env"; RGWPORT=${S3_ENDPOINT##*:}; AK=$S3_ACCESS_KEY; SK=$S3_SECRET_KEY
  TLSPORT=; [ -z "${S3_TLS_ENDPOINT:-}" ] || TLSPORT=${S3_TLS_ENDPOINT##*:}
  cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$RGW_PID/cmdline" || true)
  if [[ $cmd != *"$D/ceph.conf"* ]]; then
    daemon radosgw "${C[@]}" -n client.rgw.a; RGW_PID=$!
    wait_http "$RGW_PID"
  fi
  trap - ERR; emit; exit 0
fi
[ -z "$(ls -A "$D")" ] || fail "$D is neither empty nor an rgw-up.sh directory"
mkdir -p "$D"/{mon,osd,run,log}
# two free loopback ports (mon, rgw: bind port 0, read, close; a third for RGW_TLS=1) and
# random keys. The OSD's ports come from Ceph's own 6800-7300 range, where it skips ports
# already in use.
TLS=; [ "${RGW_TLS:-0}" = 0 ] || TLS=c
read -r MONPORT RGWPORT AK SK TLSPORT < <(/usr/bin/python3 -I -c 'import socket, secrets, sys
s = [socket.socket() for _ in "ab" + sys.argv[1]]
for x in s: x.bind(("127.0.0.1", 0))
p = [x.getsockname()[1] for x in s]
print(*p[:2], secrets.token_hex(10).upper(), secrets.token_hex(20), *p[2:])' "$TLS")
FRONTEND_TLS=
if [ -n "$TLS" ]; then  # a throwaway CA (ca.pem) and its server certificate (cert.pem, key.pem)
  T=$D/tls; mkdir -p "$T"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -days 3650 -subj "/CN=rgw-up.sh throwaway CA" \
    -keyout "$T/ca.key" -out "$T/ca.pem" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>>"$D/log/stdio.out"
  openssl req -new "${ec[@]}" -subj "/CN=127.0.0.1" -keyout "$T/key.pem" -out "$T/server.csr" \
    2>>"$D/log/stdio.out"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:127.0.0.1" \
    "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" > "$T/server.ext"
  openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -days 3650 \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$T/server.ext" -out "$T/cert.pem" 2>>"$D/log/stdio.out"
  FRONTEND_TLS=" ssl_endpoint=127.0.0.1:$TLSPORT ssl_certificate=$T/cert.pem ssl_private_key=$T/key.pem"
fi
AK=${S3_ACCESS_KEY:-$AK}; SK=${S3_SECRET_KEY:-$SK}
FSID=$(cat /proc/sys/kernel/random/uuid)
cat > "$D/ceph.conf" <<CONF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MONPORT]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
# loopback only: no cephx; msgr2 'crc' mode (radosgw loops on error -13 without it)
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms mon service mode = crc secure
ms mon cluster mode = crc secure
ms client mode = crc
ms service mode = crc secure
ms cluster mode = crc secure
run dir = $D/run
log file = $D/log/\$name.log
mon cluster log file = $D/log/cluster.log
keyring = $D/keyring
osd objectstore = memstore
memstore device bytes = ${RGW_MEMSTORE_BYTES:-1073741824}
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd max object name len = 460
osd max object namespace len = 64
# fast paxos and ticks: seconds instead of ~15 s to ready
paxos propose interval = 0.05
paxos min wait = 0.01
mon lease = 1
mon tick interval = 1
osd mon report interval = 1
osd heartbeat interval = 1
# librados re-checks stalled ops only every 5 s by default: 4 s of radosgw's start
objecter tick interval = 0.2
# a killed radosgw's watches linger this long, and until they expire every bucket
# create etc. stalls (its cache notify waits for them): 30 s by default
osd client watch timeout = 3
[mon.a]
mon data = $D/mon
[osd.0]
osd data = $D/osd
[client.rgw.a]
# tcp_nodelay: small GETs take ~45 ms without it (Nagle + delayed ACK), ~5 ms with it
rgw frontends = beast endpoint=127.0.0.1:$RGWPORT$FRONTEND_TLS tcp_nodelay=1
rgw data = $D/rgw
rgw thread pool size = 64
${RGW_EXTRA_CONF:-}
CONF
ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
# the monmap must carry a v2 address: with a v1 one, clients hang. No `ceph osd create`
# is needed: osd.0 registers itself when it boots.
monmaptool --create --addv a "[v2:127.0.0.1:$MONPORT]" --fsid "$FSID" "$D/monmap" >/dev/null
ceph-mon "${C[@]}" --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring"
daemon ceph-mon "${C[@]}" -i a; CEPH_MON_PID=$!
# --no-mon-config: otherwise mkfs waits (up to 300 s) for a mon to answer
timeout "$(left)" ceph-osd "${C[@]}" -i 0 --mkfs --no-mon-config >>"$D/log/stdio.out" 2>&1
daemon ceph-osd "${C[@]}" -i 0; CEPH_OSD_PID=$!
# radosgw waits for the OSD by itself, then creates its pools and opens the port
daemon radosgw "${C[@]}" -n client.rgw.a; RGW_PID=$!
wait_http "${PIDS[@]}"
timeout "$(left)" radosgw-admin "${C[@]}" user create --uid=test --display-name=test \
  --access-key="$AK" --secret-key="$SK" >/dev/null
RGW_WATCHDOG_PID=
if [ -n "${RGW_WATCH_PID:-}" ]; then  # watchdog: no orphan daemons if the caller dies (/proc, not kill -0: the caller may be another user)
  # shellcheck disable=SC2016  # $0..$2 are the inner shell's arguments
  setsid bash -c 'while [ -d "/proc/$0" ]; do sleep 1; done; exec "$1" "$2"' \
    "$RGW_WATCH_PID" "$HERE/rgw-down.sh" "$D" "$D/ceph.conf" </dev/null >/dev/null 2>&1 &
  RGW_WATCHDOG_PID=$!
fi
trap - ERR
emit
