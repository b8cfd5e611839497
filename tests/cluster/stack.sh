#!/usr/bin/env bash
# The cluster test stack: a one-node Slurm cluster (munge, MariaDB + slurmdbd for accounting, slurmctld,
# slurmd with 2 CPUs) and a PostgreSQL-backed `mlflow server --app-name basic-auth`, all on 127.0.0.1,
# every port chosen free, every process started here and stopped by its id.
#
#   tests/cluster/stack.sh up   [DIR]   start it (installs the Debian packages when missing; needs root)
#   tests/cluster/stack.sh down [DIR]   stop it (every process by the pid recorded in DIR/pids)
#
# DIR defaults to $RNNGRAD_STACK_DIR, else /tmp/rnngrad-stack. `up` writes DIR/stack.env (mode 600):
# SLURM_CONF, the server's URL and the credentials of a user made for the jobs. To use it by hand:
#   set -a; . /tmp/rnngrad-stack/stack.env; set +a
#   export MLFLOW_TRACKING_USERNAME=$STACK_MLFLOW_USER MLFLOW_TRACKING_PASSWORD=$STACK_MLFLOW_PASSWORD
#   .venv/bin/python -m rnngrad.train -m ... hydra/launcher=slurm tracking.uri=$STACK_MLFLOW_URL
# PYTHON (default: the project's .venv/bin/python) is the interpreter whose `mlflow` serves.
# Exit codes: 0 up/down, 1 a component failed (its log is printed), 3 the packages are missing and
# cannot be installed (apt-get failed), or this is not root: the tests skip on 3, with this script's message.
set -euo pipefail

ACTION=${1:-}
DIR=${2:-${RNNGRAD_STACK_DIR:-/tmp/rnngrad-stack}}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
WAIT=${STACK_WAIT:-60}            # seconds any one component may take to come up
APT_TIMEOUT=${STACK_APT_TIMEOUT:-900}
PACKAGES=(slurm-wlm slurmdbd slurm-client munge mariadb-server)
COMMANDS=(munged mungekey slurmctld slurmd slurmdbd sbatch sacct sacctmgr scontrol scancel mariadbd mariadb-install-db mariadb)
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
CLUSTER=rnngrad
export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true} DO_NOT_TRACK=${DO_NOT_TRACK:-true}  # the server and its client

say() { echo "stack: $*" >&2; }
fail() { say "$*"; exit 1; }

ensure_packages() {
    local missing=()
    for c in "${COMMANDS[@]}"; do
        command -v "$c" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    if [[ -z "$PG_BIN" || ! -x "$PG_BIN/initdb" ]]; then
        say "PostgreSQL's server binaries (initdb, pg_ctl) are not installed (looked in /usr/lib/postgresql/*/bin; set PG_BIN)"
        exit 3
    fi
    [[ ${#missing[@]} -eq 0 ]] && return 0
    say "missing ${missing[*]}: apt-get install ${PACKAGES[*]}"
    local start=$SECONDS
    if ! timeout "$APT_TIMEOUT" apt-get update -qq >"$DIR/apt.log" 2>&1 \
        || ! DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT" apt-get install -y -qq --no-install-recommends \
            "${PACKAGES[@]}" >>"$DIR/apt.log" 2>&1; then
        tail -n 20 "$DIR/apt.log" >&2
        say "apt-get could not install ${PACKAGES[*]} (log: $DIR/apt.log)"
        exit 3
    fi
    say "packages installed in $((SECONDS - start)) s"
}

# free_ports N: N distinct ports free on 127.0.0.1, below the kernel's ephemeral range: a port from bind(0)
# comes from that range, where any outgoing connection (a client, another server's bind(0)) may take it
# between this check and the server's own bind
free_ports() {
    "$PYTHON" - "$1" <<'PY'
import random, socket, sys
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
ports = []
for port in random.sample(range(low // 2, low), k=low // 2):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    ports.append(port)
    if len(ports) == int(sys.argv[1]):
        break
print(*ports)
PY
}

secret() { "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(18))'; }

# start NAME CMD...: run CMD in its own session (so a server's workers can be stopped with it), output to
# DIR/logs/NAME.log, its pid (= its process group) recorded in DIR/pids/NAME
start() {
    local name=$1; shift
    setsid "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$DIR/pids/$name"
}

# wait_for NAME CMD...: retry CMD until it succeeds, for at most $WAIT s; on failure print NAME's log
wait_for() {
    local name=$1; shift
    local deadline=$((SECONDS + WAIT))
    until "$@" >/dev/null 2>&1; do
        if [[ -f "$DIR/pids/$name" ]] && ! kill -0 "$(cat "$DIR/pids/$name")" 2>/dev/null; then
            tail -n 30 "$DIR/logs/$name.log" >&2 || true
            fail "$name exited while starting (log: $DIR/logs/$name.log)"
        fi
        if ((SECONDS > deadline)); then
            tail -n 30 "$DIR/logs/$name.log" >&2 || true
            fail "$name not ready after $WAIT s (log: $DIR/logs/$name.log)"
        fi
        sleep 0.5
    done
}

up() {
    if [[ -f "$DIR/stack.env" ]]; then
        fail "$DIR/stack.env exists: a stack is up there (run: $0 down $DIR)"
    fi
    mkdir -p "$DIR"
    if [[ $(id -u) -ne 0 ]]; then
        say "the stack runs munged, slurmd and slurmctld as root and switches to the postgres user: run it as root (this is uid $(id -u))"
        exit 3
    fi
    # one installation at a time: a second stack waits here rather than start a MariaDB whose files the
    # first one's dpkg is still replacing
    local apt_lock
    exec {apt_lock}>/tmp/rnngrad-stack-apt.lock
    flock -w "$APT_TIMEOUT" "$apt_lock" || fail "another stack.sh held the package lock for $APT_TIMEOUT s"
    ensure_packages
    flock -u "$apt_lock"
    # a failed start stops whatever it had started
    trap 'status=$?; if [[ $status -ne 0 && $status -ne 3 ]]; then say "up failed: stopping what started"; down; fi' EXIT
    rm -rf "${DIR:?}"/{logs,pids,munge,slurm,mysql,pg,mlflow}
    export PATH=$PATH:/usr/sbin:/sbin
    [[ -x "$PYTHON" ]] || fail "no python at $PYTHON (set PYTHON, or run make test once to create .venv)"
    local mlflow_bin
    mlflow_bin=$(dirname "$PYTHON")/mlflow
    "$PYTHON" -c 'import psycopg' 2>/dev/null || fail "psycopg is not installed in $PYTHON's environment (pip install -e '.[test]')"
    local start_time=$SECONDS
    chmod 755 "$DIR"
    mkdir -p "$DIR"/{logs,pids,munge,slurm/state,slurm/spool,mysql,pg,mlflow/artifacts}
    chmod 700 "$DIR/munge"
    mkdir -p -m 755 "$DIR/munge/run"   # munged refuses a socket directory others cannot enter (mode 700)
    local host
    host=$(hostname -s)
    local p_ctld p_slurmd p_dbd p_mysql p_pg p_mlflow
    read -r p_ctld p_slurmd p_dbd p_mysql p_pg p_mlflow < <(free_ports 6)
    [[ -n "$p_mlflow" ]] || fail "fewer than 6 free ports below the ephemeral range"
    local sock=$DIR/munge/run/munge.socket
    local db_pass pg_pass admin_pass user_pass
    db_pass=$(secret); pg_pass=$(secret); admin_pass=$(secret); user_pass=$(secret)

    # munge: the key, then the daemon (foreground, so its pid is ours)
    mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null
    chmod 600 "$DIR/munge/munge.key"
    start munged munged --foreground --force --socket="$sock" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/seed"
    wait_for munged bash -c "munge -n -S '$sock' | unmunge -S '$sock'"

    # MariaDB for slurmdbd, private data dir, TCP on 127.0.0.1 only
    mariadb-install-db --no-defaults --datadir="$DIR/mysql/data" --user=root --auth-root-authentication-method=normal \
        --skip-test-db >"$DIR/logs/mariadb-install.log" 2>&1 || { tail -n 20 "$DIR/logs/mariadb-install.log" >&2; fail "mariadb-install-db failed"; }
    start mariadbd mariadbd --no-defaults --user=root --datadir="$DIR/mysql/data" --socket="$DIR/mysql/mysqld.sock" \
        --pid-file="$DIR/mysql/mysqld.pid" --bind-address=127.0.0.1 --port="$p_mysql" --skip-name-resolve
    wait_for mariadbd mariadb-admin --no-defaults --socket="$DIR/mysql/mysqld.sock" -u root ping
    mariadb --no-defaults --socket="$DIR/mysql/mysqld.sock" -u root -e \
        "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_pass'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

    # Slurm: slurmdbd (accounting: how submitit learns that a job died outside Python), slurmctld, slurmd
    local conf=$DIR/slurm/slurm.conf
    cat >"$conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$p_ctld
SlurmdPort=$p_slurmd
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$DIR/slurm/state
SlurmdSpoolDir=$DIR/slurm/spool
SlurmctldPidFile=$DIR/slurm/slurmctld.pid
SlurmdPidFile=$DIR/slurm/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# SIGTERM to SIGKILL (Slurm's default): a cancelled job's run has this long to close itself as KILLED
KillWait=30
InactiveLimit=0
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$p_dbd
AccountingStoragePass=$sock
NodeName=$host NodeHostname=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=2048 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/slurm/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$sock
DbdAddr=127.0.0.1
DbdHost=$host
DbdPort=$p_dbd
SlurmUser=root
PidFile=$DIR/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$p_mysql
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurm/slurmdbd.conf"
    export SLURM_CONF=$conf   # slurmdbd reads slurmdbd.conf from the same directory
    start slurmdbd slurmdbd -D
    wait_for slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    start slurmctld slurmctld -D -i
    wait_for slurmctld scontrol ping
    start slurmd slurmd -D -N "$host"
    wait_for slurmd bash -c "sinfo -h -N -o %T | grep -qx idle"

    # PostgreSQL in a private data dir (initdb refuses root: it runs as the postgres user)
    chown postgres "$DIR/pg"
    printf '%s\n' "$pg_pass" >"$DIR/pg/pwfile"
    chown postgres "$DIR/pg/pwfile"; chmod 600 "$DIR/pg/pwfile"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$DIR/pg/data" -U mlflow --auth=scram-sha-256 --pwfile="$DIR/pg/pwfile" \
        >"$DIR/logs/initdb.log" 2>&1 || { tail -n 20 "$DIR/logs/initdb.log" >&2; fail "initdb failed"; }
    rm -f "$DIR/pg/pwfile"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/postgres.log" -w -t "$WAIT" \
        -o "-c listen_addresses=127.0.0.1 -p $p_pg -k $DIR/pg" start >"$DIR/logs/pg_ctl.log" 2>&1 \
        || { tail -n 20 "$DIR/pg/postgres.log" >&2; fail "postgres did not start"; }
    head -n 1 "$DIR/pg/data/postmaster.pid" >"$DIR/pids/postgres"
    PGPASSWORD=$pg_pass "$PG_BIN/createdb" -h 127.0.0.1 -p "$p_pg" -U mlflow mlflow

    # the MLflow server with basic auth over PostgreSQL (psycopg 3: SQLAlchemy 2.1's postgresql:// driver)
    cat >"$DIR/mlflow/auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = sqlite:///$DIR/mlflow/auth.db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
# each request's PBKDF2 check costs a good part of a second on a busy 2-core machine: cache it for a minute
auth_cache_ttl_seconds = 60
EOF
    local url=http://127.0.0.1:$p_mlflow
    (
        cd "$DIR/mlflow"
        export MLFLOW_AUTH_CONFIG_PATH=$DIR/mlflow/auth.ini MLFLOW_AUTH_ADMIN_PASSWORD=$admin_pass \
            MLFLOW_FLASK_SERVER_SECRET_KEY=$(secret) MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
        start mlflow "$mlflow_bin" server --app-name basic-auth --host 127.0.0.1 --port "$p_mlflow" --workers 1 \
            --backend-store-uri "postgresql://mlflow:$pg_pass@127.0.0.1:$p_pg/mlflow" \
            --artifacts-destination "$DIR/mlflow/artifacts"
    )
    wait_for mlflow "$PYTHON" -c "import urllib.request; urllib.request.urlopen('$url/health', timeout=2)"
    # the jobs' user (not the admin)
    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=$admin_pass "$PYTHON" -W ignore - "$url" "$user_pass" <<'EOF' \
        || fail "could not create the MLflow user"
import sys
from mlflow.server.auth.client import AuthServiceClient
AuthServiceClient(sys.argv[1]).create_user("rnngrad", sys.argv[2])
EOF

    umask 077
    cat >"$DIR/stack.env" <<EOF
SLURM_CONF=$conf
STACK_PARTITION=debug
STACK_MLFLOW_URL=$url
STACK_MLFLOW_USER=rnngrad
STACK_MLFLOW_PASSWORD=$user_pass
STACK_MLFLOW_ADMIN_PASSWORD=$admin_pass
STACK_ARTIFACTS=$DIR/mlflow/artifacts
STACK_PG_URI=postgresql://mlflow:$pg_pass@127.0.0.1:$p_pg/mlflow
EOF
    trap - EXIT
    say "up in $((SECONDS - start_time)) s: Slurm cluster '$CLUSTER' (node $host, 2 CPUs), MLflow at $url; env in $DIR/stack.env"
}

# stop NAME: SIGTERM to the process group recorded for NAME, SIGKILL after a bounded wait
stop() {
    local name=$1 pid
    [[ -f "$DIR/pids/$name" ]] || return 0
    pid=$(cat "$DIR/pids/$name")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 20))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$DIR/pids/$name"
}

down() {
    [[ -d "$DIR/pids" ]] || { say "nothing is up in $DIR"; return 0; }
    export PATH=$PATH:/usr/sbin:/sbin
    local start_time=$SECONDS
    stop mlflow
    if [[ -f "$DIR/pids/postgres" ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1 || stop postgres
        rm -f "$DIR/pids/postgres"
    fi
    if [[ -f "$DIR/pids/slurmctld" ]]; then
        # the cluster's jobs first: slurmd's job steps would outlive slurmd
        export SLURM_CONF=$DIR/slurm/slurm.conf
        timeout 10 scancel --full --user=root >/dev/null 2>&1 || true
        local deadline=$((SECONDS + 20))
        while [[ -n "$(timeout 5 squeue -h -o %i 2>/dev/null)" ]] && ((SECONDS < deadline)); do sleep 0.5; done
    fi
    stop slurmd
    stop slurmctld
    stop slurmdbd
    stop mariadbd
    stop munged
    rm -f "$DIR/stack.env"
    say "down in $((SECONDS - start_time)) s (logs kept in $DIR/logs)"
}

case "$ACTION" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down [DIR]" >&2; exit 2 ;;
esac
