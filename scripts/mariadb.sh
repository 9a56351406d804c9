#!/usr/bin/env bash
# Private, throw-away MariaDB instance for the test suite (no systemd).
#
#   scripts/mariadb.sh install        # apt-get install mariadb-server/client if missing
#   scripts/mariadb.sh start DIR      # start an instance in DIR, write DIR/env, print URL
#                                     # (again after stop: same datadir, same port if free)
#   scripts/mariadb.sh stop DIR       # stop the instance in DIR
#   scripts/mariadb.sh status DIR     # exit 0 if running
#
# MARIADB_BUFFER_POOL (default 256M) and MARIADB_LOG_FILE_SIZE (64M) size InnoDB; the benchmarks
# start their own instance with one that holds the whole table, as production would.
set -euo pipefail

DB_USER=metering
DB_PASS=metering-test-pw
DB_NAME=metering

log() { printf 'mariadb.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

find_bin() {
    # find_bin NAME...: print the first found binary (PATH or /usr/sbin, /usr/bin)
    local n d
    for n in "$@"; do
        if command -v "$n" >/dev/null 2>&1; then command -v "$n"; return 0; fi
        for d in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
            if [ -x "$d/$n" ]; then echo "$d/$n"; return 0; fi
        done
    done
    return 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

cmd_install() {
    if find_bin mariadbd mysqld >/dev/null && find_bin mariadb mysql >/dev/null \
        && find_bin mariadb-install-db mysql_install_db >/dev/null; then
        log "MariaDB already installed: $(find_bin mariadbd mysqld)"
        return 0
    fi
    log "installing mariadb-server mariadb-client via apt-get"
    # Keep the package's maintainer scripts from starting a system service.
    local prc=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$prc" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $prc && chmod 755 $prc"
        created=1
    fi
    local rc=0
    as_root apt-get update -qq || rc=$?
    if [ "$rc" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends mariadb-server mariadb-client || rc=$?
    fi
    if [ "$created" -eq 1 ]; then as_root rm -f "$prc"; fi
    [ "$rc" -eq 0 ] || die "apt-get failed (rc=$rc)"
    find_bin mariadbd mysqld >/dev/null || die "mariadbd not found after install"
}

free_port() {
    local py
    py=$(find_bin python3 python) || die "python3 needed to pick a free port"
    "$py" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

port_free() {
    local py
    py=$(find_bin python3 python) || return 1
    "$py" -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()' "$1"
}

pid_alive() {
    local dir=$1 pid
    [ -s "$dir/mariadb.pid" ] || return 1
    pid=$(cat "$dir/mariadb.pid")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

url_for() { echo "mysql+pymysql://$DB_USER:$DB_PASS@127.0.0.1:$1/$DB_NAME"; }

admin() {
    # admin DIR ARGS...: mariadb-admin as root over the private socket
    local dir=$1; shift
    "$ADMIN" --no-defaults --protocol=socket --socket="$dir/mysqld.sock" -uroot "$@"
}

client() {
    local dir=$1; shift
    "$CLIENT" --no-defaults --protocol=socket --socket="$dir/mysqld.sock" -uroot "$@"
}

resolve_bins() {
    MARIADBD=$(find_bin mariadbd mysqld) || die "mariadbd not found; run: $0 install"
    INSTALL_DB=$(find_bin mariadb-install-db mysql_install_db) || die "mariadb-install-db not found"
    ADMIN=$(find_bin mariadb-admin mysqladmin) || die "mariadb-admin not found"
    CLIENT=$(find_bin mariadb mysql) || die "mariadb client not found"
}

cmd_start() {
    local dir=${1:?usage: $0 start DIR}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    resolve_bins

    if pid_alive "$dir" && [ -s "$dir/port" ] && admin "$dir" ping >/dev/null 2>&1; then
        log "already running (pid $(cat "$dir/mariadb.pid"))"
        url_for "$(cat "$dir/port")"
        return 0
    fi

    # Socket paths are limited to ~107 bytes.
    if [ "${#dir}" -gt 90 ]; then die "DIR path too long for a unix socket: $dir"; fi

    local user_opt=()
    if [ "$(id -u)" -eq 0 ]; then user_opt=(--user=root); fi

    if [ ! -d "$dir/data/mysql" ]; then
        log "initialising datadir $dir/data"
        rm -rf "$dir/data"
        mkdir -p "$dir/data" "$dir/tmp"
        if ! "$INSTALL_DB" --no-defaults "${user_opt[@]}" \
                --datadir="$dir/data" \
                --auth-root-authentication-method=normal \
                --skip-test-db \
                >"$dir/install-db.log" 2>&1; then
            cat "$dir/install-db.log" >&2
            die "mariadb-install-db failed"
        fi
    fi
    mkdir -p "$dir/tmp"

    # A restart on an existing datadir keeps its port: URLs already handed out stay valid.
    local port
    if [ -s "$dir/port" ] && port_free "$(cat "$dir/port")"; then
        port=$(cat "$dir/port")
    else
        port=$(free_port)
    fi
    echo "$port" >"$dir/port"
    rm -f "$dir/mysqld.sock" "$dir/mariadb.pid"

    log "starting mariadbd on 127.0.0.1:$port (datadir $dir/data)"
    nohup "$MARIADBD" --no-defaults "${user_opt[@]}" \
        --datadir="$dir/data" \
        --tmpdir="$dir/tmp" \
        --socket="$dir/mysqld.sock" \
        --pid-file="$dir/mariadb.pid" \
        --log-error="$dir/error.log" \
        --bind-address=127.0.0.1 \
        --port="$port" \
        --skip-name-resolve \
        --skip-log-bin \
        --sync-binlog=0 \
        --innodb-buffer-pool-size="${MARIADB_BUFFER_POOL:-256M}" \
        --innodb-log-file-size="${MARIADB_LOG_FILE_SIZE:-64M}" \
        --innodb-flush-log-at-trx-commit=2 \
        --innodb-doublewrite=0 \
        --innodb-flush-method=O_DIRECT_NO_FSYNC \
        --default-time-zone=+00:00 \
        --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_unicode_ci \
        --max-connections=500 \
        --performance-schema=OFF \
        </dev/null >"$dir/mariadbd.out" 2>&1 &
    local bgpid=$!
    echo "$bgpid" >"$dir/launcher.pid"

    local i ok=0
    for i in $(seq 1 120); do
        if admin "$dir" ping >/dev/null 2>&1; then ok=1; break; fi
        if ! kill -0 "$bgpid" 2>/dev/null; then break; fi
        sleep 0.5
    done
    if [ "$ok" -ne 1 ]; then
        log "mariadbd did not come up; error log follows"
        cat "$dir/error.log" "$dir/mariadbd.out" >&2 2>/dev/null || true
        kill "$bgpid" 2>/dev/null || true
        die "start failed"
    fi
    # The server writes its own pid file; fall back to the launcher pid.
    for i in $(seq 1 20); do [ -s "$dir/mariadb.pid" ] && break; sleep 0.25; done
    [ -s "$dir/mariadb.pid" ] || echo "$bgpid" >"$dir/mariadb.pid"

    client "$dir" <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'localhost' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
FLUSH PRIVILEGES;
SQL

    local url
    url=$(url_for "$port")
    printf 'export METERING_TEST_MYSQL_URL=%s\n' "$url" >"$dir/env"
    log "ready (pid $(cat "$dir/mariadb.pid")); env written to $dir/env"
    echo "$url"
}

cmd_stop() {
    local dir=${1:?usage: $0 stop DIR}
    if [ ! -s "$dir/mariadb.pid" ]; then
        log "no pid file in $dir; nothing to stop"
        return 0
    fi
    local pid i
    pid=$(cat "$dir/mariadb.pid")
    if ! kill -0 "$pid" 2>/dev/null; then
        log "pid $pid not running"
        rm -f "$dir/mariadb.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still alive after 30s; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$dir/mariadb.pid"
    log "stopped (pid $pid)"
}

cmd_status() {
    local dir=${1:?usage: $0 status DIR}
    if pid_alive "$dir"; then
        echo "running pid=$(cat "$dir/mariadb.pid") port=$(cat "$dir/port" 2>/dev/null || echo '?')"
        [ -s "$dir/port" ] && url_for "$(cat "$dir/port")"
        return 0
    fi
    echo "not running"
    return 1
}

# Sourced (scripts/galera.sh reuses the functions above): define, do not dispatch.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then return 0; fi

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    start)   shift; cmd_start "$@" ;;
    stop)    shift; cmd_stop "$@" ;;
    status)  shift; cmd_status "$@" ;;
    *) echo "usage: $0 {install|start DIR|stop DIR|status DIR}" >&2; exit 2 ;;
esac
