#!/usr/bin/env bash
# postgres.sh — throwaway PostgreSQL (Debian package) for microseg's warehouse tests, on
# 127.0.0.1 only (./test starts and stops it; written from the team's tested recipe).
#
#   URL=$(bash postgres.sh start [PORT])   # installs if needed, starts, creates db microseg_test,
#                                          # prints the URL as the only line on stdout
#   bash postgres.sh stop [PORT]           # fast shutdown + removes the temp dir
#   bash postgres.sh install               # install only
#   bash postgres.sh cert [PORT]           # prints the path of the CA of the server's TLS certificate
#
# PORT: argument, else $PGPORT, else 55432. Data and log: ${TMPDIR:-/tmp}/microseg-pg-PORT/.
# Auth is "trust" (no password) and the server listens on 127.0.0.1 only.
# Safe to run twice: start on a running server just re-prints the URL; stop on a stopped one is a no-op.
set -euo pipefail
# runuser, useradd and friends live in sbin, which a minimal PATH (env -i, CI) leaves out.
export PATH="$PATH:/usr/sbin:/sbin"

MODE=${1:-start}
PORT=${2:-${PGPORT:-55432}}
BASE=${TMPDIR:-/tmp}/microseg-pg-$PORT
DATA=$BASE/data
DB=microseg_test
log() { echo "postgres.sh: $*" >&2; }

bindir() {   # newest installed server version, e.g. /usr/lib/postgresql/15/bin
  local c
  c=$(printf '%s\n' /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -n1)
  [[ -x $c ]] || return 1
  dirname "$c"
}

install_pg() {
  if bindir >/dev/null; then return 0; fi
  log "installing postgresql from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The image's /usr/sbin/policy-rc.d (exit 101) keeps the package's own "main"
  # cluster on 5432 from being started; we never use that cluster.
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

# Postgres refuses to run as root: run server tools as the 'postgres' system user.
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start_pg() {
  install_pg
  local bin; bin=$(bindir)
  if [[ -f $DATA/postmaster.pid ]] && as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    log "already running on port $PORT"
  else
    rm -rf "$BASE"                       # stale leftovers from an unclean stop
    mkdir -p "$BASE"
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$BASE"; fi
    as_pg test -w "$BASE" || { log "user postgres cannot write $BASE: use a TMPDIR it can reach (e.g. /tmp)"; exit 1; }
    # -N: no fsync during initdb. C.UTF-8 locale, UTF8 encoding.
    as_pg "$bin/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 -N >"$BASE/initdb.log" 2>&1 \
      || { cat "$BASE/initdb.log" >&2; exit 1; }
    # TLS with a throwaway certificate for 127.0.0.1 from a throwaway CA ($BASE/ca.crt, the
    # warehouse tests' CA file); plain connections still work.
    local ssl=""
    if command -v openssl >/dev/null; then
      # A throwaway CA ($BASE/ca.crt) and the server's certificate for 127.0.0.1 signed by it.
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=microseg test CA" \
        -keyout "$BASE/ca.key" -out "$BASE/ca.crt" 2>/dev/null
      openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$BASE/server.key" -out "$BASE/server.csr" 2>/dev/null
      printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$BASE/server.ext"
      openssl x509 -req -in "$BASE/server.csr" -CA "$BASE/ca.crt" -CAkey "$BASE/ca.key" \
        -CAcreateserial -days 2 -extfile "$BASE/server.ext" -out "$BASE/server.crt" 2>/dev/null
      chmod 600 "$BASE/server.key"
      if [[ $(id -u) -eq 0 ]]; then chown postgres: "$BASE/server.key" "$BASE/server.crt"; fi
      ssl="-c ssl=on -c ssl_cert_file=$BASE/server.crt -c ssl_key_file=$BASE/server.key"
    fi
    # TCP on 127.0.0.1 only; unix socket in $BASE (not /var/run/postgresql);
    # durability off: this database is thrown away.
    as_pg "$bin/pg_ctl" -D "$DATA" -l "$BASE/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $BASE -c fsync=off -c synchronous_commit=off -c full_page_writes=off $ssl" \
      start >/dev/null || { cat "$BASE/server.log" >&2; exit 1; }
  fi
  # Wait until it accepts TCP connections (pg_ctl -w already waited; this is a belt-and-braces check).
  for _ in $(seq 1 60); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break
    sleep 0.5
  done
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PORT" || { log "not ready"; exit 1; }
  local psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
  if [[ -z $("${psql[@]}" -d postgres -Atc "select 1 from pg_database where datname='$DB'") ]]; then
    # A linguistic collation (ICU en-US: 'a' < 'B'), as many real databases have, so the
    # tests see that microseg's SQL compares text by bytes whatever the database's collation.
    "${psql[@]}" -d postgres -c "create database $DB locale_provider icu icu_locale 'en-US' template template0" 2>/dev/null \
      || "${psql[@]}" -d postgres -c "create database $DB"
  fi
  echo "postgres://postgres@127.0.0.1:$PORT/$DB"
}

stop_pg() {
  local bin
  if bin=$(bindir) && [[ -f $DATA/postmaster.pid ]]; then
    # pg_ctl signals the PID recorded in $DATA/postmaster.pid
    as_pg "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || true
  fi
  rm -rf "$BASE"
  log "stopped (port $PORT), removed $BASE"
}

case $MODE in
  cert)    [[ -f $BASE/ca.crt ]] || { log "no certificate (not started, or no openssl)"; exit 1; }
           echo "$BASE/ca.crt" ;;
  install) install_pg ;;
  start)   start_pg ;;
  stop)    stop_pg ;;
  *) echo "usage: $0 [install|start|stop|cert] [PORT]" >&2; exit 2 ;;
esac
