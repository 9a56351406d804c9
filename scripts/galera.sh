#!/usr/bin/env bash
# Private, throw-away 3-node MariaDB Galera cluster on 127.0.0.1 for the tests (no systemd).
#
#   scripts/galera.sh install        # apt-get install mariadb-server, galera-4, rsync if missing
#   scripts/galera.sh start DIR      # start the nodes in DIR/node{1,2,3}, write DIR/env
#                                    # (again after a node died: restarts the nodes that are
#                                    # down, which rejoin by IST/SST; same ports)
#   scripts/galera.sh stop DIR       # stop every node
#   scripts/galera.sh status DIR     # exit 0 if all three nodes are up, synced, in one cluster
#
# Each node has its own datadir, socket, SQL port, group port (gmcast.listen_addr), IST
# port and rsync SST port. The nodes run as the mysql user: the rsync SST script runs as
# the server's user, and as root it fails with 'Permission denied'. DIR/env exports
# METERING_TEST_GALERA_URLS (one URL per node, user `metering`, may create databases) and
# METERING_TEST_GALERA_DIR (for tests that kill and restart a node).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/mariadb.sh
. "$HERE/mariadb.sh"

NODES=(1 2 3)
RUN_USER=mysql
CLUSTER_NAME=metering-test
READY_TIMEOUT_S=${GALERA_READY_TIMEOUT:-180}

log() { printf 'galera.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

find_provider() {
    local p
    for p in /usr/lib/galera/libgalera_smm.so /usr/lib/libgalera_smm.so \
        /usr/lib64/galera-4/libgalera_smm.so; do
        if [ -f "$p" ]; then echo "$p"; return 0; fi
    done
    if command -v dpkg >/dev/null 2>&1; then
        p=$(dpkg -L galera-4 2>/dev/null | grep '/libgalera_smm\.so$' | head -n1 || true)
        if [ -n "$p" ] && [ -f "$p" ]; then echo "$p"; return 0; fi
    fi
    return 1
}

cmd_galera_install() {
    if find_provider >/dev/null && command -v rsync >/dev/null 2>&1 \
        && find_bin mariadbd >/dev/null && [ -x /usr/bin/wsrep_sst_rsync ]; then
        log "galera-4 already installed: $(find_provider)"
        return 0
    fi
    log "installing mariadb-server galera-4 rsync via apt-get"
    local prc=/usr/sbin/policy-rc.d created=0 rc=0
    if [ ! -e "$prc" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $prc && chmod 755 $prc"
        created=1
    fi
    as_root apt-get update -qq || rc=$?
    if [ "$rc" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends mariadb-server mariadb-client galera-4 rsync lsof || rc=$?
    fi
    if [ "$created" -eq 1 ]; then as_root rm -f "$prc"; fi
    [ "$rc" -eq 0 ] || die "apt-get failed (rc=$rc)"
    find_provider >/dev/null || die "libgalera_smm.so not found after install"
}

node_dir() { echo "$1/node$2"; }

# Status variable of a running node, empty when it cannot be asked.
wsrep_var() {
    local nd=$1 name=$2
    client "$nd" -N -B -e "SHOW GLOBAL STATUS LIKE '$name'" 2>/dev/null | awk '{print $2}'
}

node_up() {
    local nd=$1
    pid_alive "$nd" && admin "$nd" ping >/dev/null 2>&1
}

node_synced() {
    local nd=$1
    node_up "$nd" && [ "$(wsrep_var "$nd" wsrep_ready)" = "ON" ] \
        && [ "$(wsrep_var "$nd" wsrep_local_state_comment)" = "Synced" ]
}

# A port kept in FILE across restarts while it is free, else a new free one.
keep_port() {
    local file=$1 port
    if [ -s "$file" ] && port_free "$(cat "$file")"; then
        port=$(cat "$file")
    else
        port=$(free_port)
    fi
    echo "$port" >"$file"
    echo "$port"
}

assign_ports() {
    local dir=$1 n nd
    for n in "${NODES[@]}"; do
        nd=$(node_dir "$dir" "$n")
        # A running node's ports are in use by itself: keep them as they are.
        if node_up "$nd"; then continue; fi
        keep_port "$nd/port" >/dev/null
        keep_port "$nd/gport" >/dev/null
        keep_port "$nd/ist_port" >/dev/null
        keep_port "$nd/sst_port" >/dev/null
    done
}

cluster_address() {
    local dir=$1 n addrs=()
    for n in "${NODES[@]}"; do addrs+=("127.0.0.1:$(cat "$(node_dir "$dir" "$n")/gport")"); done
    local IFS=,
    echo "gcomm://${addrs[*]}"
}

launch_node() {
    # launch_node DIR N [--wsrep-new-cluster]
    local dir=$1 n=$2 bootstrap=${3:-} nd
    nd=$(node_dir "$dir" "$n")
    mkdir -p "$nd/data" "$nd/tmp"
    if [ "$n" -eq 1 ] && [ ! -d "$nd/data/mysql" ]; then
        log "initialising datadir $nd/data"
        if ! "$INSTALL_DB" --no-defaults --user="$RUN_USER" \
                --datadir="$nd/data" \
                --auth-root-authentication-method=normal \
                --skip-test-db \
                >"$nd/install-db.log" 2>&1; then
            cat "$nd/install-db.log" >&2
            die "mariadb-install-db failed"
        fi
    fi
    if [ -n "$bootstrap" ] && [ -f "$nd/data/grastate.dat" ]; then
        # A cluster stopped whole: this node starts it again.
        sed -i 's/^safe_to_bootstrap: 0/safe_to_bootstrap: 1/' "$nd/data/grastate.dat"
    fi
    chown -R "$RUN_USER:" "$nd"
    rm -f "$nd/mysqld.sock" "$nd/mariadb.pid"

    local port gport ist sst opts
    port=$(cat "$nd/port")
    gport=$(cat "$nd/gport")
    ist=$(cat "$nd/ist_port")
    sst=$(cat "$nd/sst_port")
    # Failure detection in seconds, not tens of seconds: a test kills a node.
    opts="gmcast.listen_addr=tcp://127.0.0.1:$gport;ist.recv_addr=127.0.0.1:$ist"
    opts+=";gcache.size=128M;evs.suspect_timeout=PT4S;evs.inactive_timeout=PT8S"
    opts+=";evs.inactive_check_period=PT1S;evs.keepalive_period=PT1S"
    opts+=";pc.wait_prim_timeout=PT60S"
    log "starting node $n on 127.0.0.1:$port (group $gport, IST $ist, SST $sst)${bootstrap:+, new cluster}"
    # shellcheck disable=SC2086
    nohup "$MARIADBD" --no-defaults --user="$RUN_USER" \
        --datadir="$nd/data" \
        --tmpdir="$nd/tmp" \
        --socket="$nd/mysqld.sock" \
        --pid-file="$nd/mariadb.pid" \
        --log-error="$nd/error.log" \
        --bind-address=127.0.0.1 \
        --port="$port" \
        --skip-name-resolve \
        --skip-log-bin \
        --binlog-format=ROW \
        --default-storage-engine=InnoDB \
        --innodb-autoinc-lock-mode=2 \
        --innodb-buffer-pool-size="${GALERA_BUFFER_POOL:-64M}" \
        --innodb-log-file-size="${GALERA_LOG_FILE_SIZE:-48M}" \
        --innodb-flush-log-at-trx-commit=2 \
        --innodb-doublewrite=0 \
        --default-time-zone=+00:00 \
        --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_unicode_ci \
        --max-connections=300 \
        --performance-schema=OFF \
        --wsrep-on=ON \
        --wsrep-provider="$PROVIDER" \
        --wsrep-provider-options="$opts" \
        --wsrep-cluster-name="$CLUSTER_NAME" \
        --wsrep-cluster-address="$(cluster_address "$dir")" \
        --wsrep-node-name="node$n" \
        --wsrep-node-address="127.0.0.1:$gport" \
        --wsrep-node-incoming-address="127.0.0.1:$port" \
        --wsrep-sst-method=rsync \
        --wsrep-sst-receive-address="127.0.0.1:$sst" \
        $bootstrap \
        </dev/null >"$nd/mariadbd.out" 2>&1 &
    echo "$!" >"$nd/launcher.pid"
}

wait_node() {
    # wait_node DIR N: until the node answers and is Synced (an SST can take a while)
    local dir=$1 n=$2 nd launcher i
    nd=$(node_dir "$dir" "$n")
    launcher=$(cat "$nd/launcher.pid")
    for i in $(seq 1 $((READY_TIMEOUT_S * 2))); do
        if node_synced "$nd"; then return 0; fi
        if ! kill -0 "$launcher" 2>/dev/null && ! pid_alive "$nd"; then break; fi
        sleep 0.5
    done
    log "node $n did not become ready; its error log follows"
    tail -n 60 "$nd/error.log" "$nd/mariadbd.out" >&2 2>/dev/null || true
    die "start failed"
}

cluster_size_everywhere() {
    local dir=$1 n
    for n in "${NODES[@]}"; do
        [ "$(wsrep_var "$(node_dir "$dir" "$n")" wsrep_cluster_size)" = "${#NODES[@]}" ] || return 1
    done
}

cmd_galera_start() {
    local dir=${1:?usage: $0 start DIR}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "${#dir}" -gt 80 ]; then die "DIR path too long for a unix socket: $dir"; fi
    resolve_bins
    PROVIDER=$(find_provider) || die "libgalera_smm.so not found; run: $0 install"
    [ -x /usr/bin/wsrep_sst_rsync ] || command -v wsrep_sst_rsync >/dev/null \
        || die "wsrep_sst_rsync not found; run: $0 install"
    command -v rsync >/dev/null 2>&1 || die "rsync not found; run: $0 install"
    id "$RUN_USER" >/dev/null 2>&1 || die "user $RUN_USER missing (the mariadb-server package makes it)"
    # The nodes run as mysql: every directory above their datadirs must let it through.
    chmod 755 "$dir"
    local n nd
    for n in "${NODES[@]}"; do mkdir -p "$(node_dir "$dir" "$n")"; done
    assign_ports "$dir"

    local running=0
    for n in "${NODES[@]}"; do
        if node_up "$(node_dir "$dir" "$n")"; then running=$((running + 1)); fi
    done
    for n in "${NODES[@]}"; do
        nd=$(node_dir "$dir" "$n")
        if node_up "$nd"; then continue; fi
        if [ "$running" -eq 0 ]; then
            launch_node "$dir" "$n" --wsrep-new-cluster
        else
            launch_node "$dir" "$n"
        fi
        # One at a time: a joiner's SST makes its donor busy.
        wait_node "$dir" "$n"
        running=$((running + 1))
    done

    local i
    for i in $(seq 1 $((READY_TIMEOUT_S * 2))); do
        if cluster_size_everywhere "$dir"; then break; fi
        sleep 0.5
    done
    cluster_size_everywhere "$dir" || die "wsrep_cluster_size is not ${#NODES[@]} on every node"

    # DDL and grants replicate (TOI): made once, through node 1.
    client "$(node_dir "$dir" 1)" <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'localhost' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
SQL

    local urls=()
    for n in "${NODES[@]}"; do urls+=("$(url_for "$(cat "$(node_dir "$dir" "$n")/port")")"); done
    local joined
    joined=$(IFS=,; echo "${urls[*]}")
    {
        printf 'export METERING_TEST_GALERA_URLS=%s\n' "$joined"
        printf 'export METERING_TEST_GALERA_DIR=%s\n' "$dir"
    } >"$dir/env"
    log "ready: ${#NODES[@]} nodes synced; env written to $dir/env"
    printf '%s\n' "${urls[@]}"
}

cmd_galera_stop() {
    local dir=${1:?usage: $0 stop DIR} n
    # Last node first: the one stopped last holds the newest state and bootstraps next time.
    for n in 3 2 1; do
        if [ -d "$(node_dir "$dir" "$n")" ]; then cmd_stop "$(node_dir "$dir" "$n")"; fi
    done
}

cmd_galera_status() {
    local dir=${1:?usage: $0 status DIR} n nd ok=0
    resolve_bins
    for n in "${NODES[@]}"; do
        nd=$(node_dir "$dir" "$n")
        if node_up "$nd"; then
            echo "node$n running pid=$(cat "$nd/mariadb.pid") port=$(cat "$nd/port")" \
                "state=$(wsrep_var "$nd" wsrep_local_state_comment)" \
                "cluster_size=$(wsrep_var "$nd" wsrep_cluster_size)"
            node_synced "$nd" || ok=1
        else
            echo "node$n not running"
            ok=1
        fi
    done
    return "$ok"
}

case "${1:-}" in
    install) shift; cmd_galera_install "$@" ;;
    start)   shift; cmd_galera_start "$@" ;;
    stop)    shift; cmd_galera_stop "$@" ;;
    status)  shift; cmd_galera_status "$@" ;;
    *) echo "usage: $0 {install|start DIR|stop DIR|status DIR}" >&2; exit 2 ;;
esac
