# shellcheck shell=bash
# Slurm accounting for the host's 22.05 dev cluster: MariaDB and slurmdbd, started
# without systemd and stopped by pid file, like the other daemons of dev/cluster (which
# sources this file; it uses that script's say/die/live_pid/stop_daemons/$RUN/$LOG).
#
# `isense reconcile` compares the ledger with `sacct`, and sacct needs slurmdbd. The
# Slurm roots of 24.11 and 26.05 (dev/slurm-root) run without accounting: there,
# accounting_enabled is false and sacct says "Slurm accounting storage is disabled".
#
#   mariadbd   socket only (--skip-networking), data in $DEV/mysql, log $LOG/mariadb.log
#   slurmdbd   DbdPort $DBD_PORT, /etc/slurm/slurmdbd.conf (0600, SlurmUser slurm)

DBD_PORT=${ISENSE_DEV_SLURMDBD_PORT:-6819}
DB_DATA=$DEV/mysql
DB_RUN=/run/mysqld
DB_SOCKET=$DB_RUN/mysqld.sock
DB_PID=$DB_RUN/mariadbd.pid
DBD_PID=$RUN/slurmdbd.pid
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=isense-dev-only # a local socket-only database of the dev cluster
ACCOUNTING_PACKAGES=(mariadb-server slurmdbd)

# Accounting runs with the host's own Slurm only (not inside a dev/slurm-root root).
accounting_enabled() { [ -z "${ISENSE_SLURM_VERSION:-}" ]; }

ensure_accounting_packages() {
  local missing=()
  [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
  [ -x /usr/sbin/slurmdbd ] || missing+=(slurmdbd)
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} (Slurm accounting for sacct)"
  local policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
  } >"$DEV/apt-accounting.log" 2>&1 || rc=$?
  [ $own_policy = 1 ] && rm -f "$policy"
  [ $rc = 0 ] || die "apt-get install ${missing[*]} failed (see $DEV/apt-accounting.log): $(tail -n 1 "$DEV/apt-accounting.log")"
  # The package's own daemon, if its scripts started one despite policy-rc.d, is not ours.
  local pid
  for pid in $(pids_of mariadbd) $(pids_of slurmdbd); do
    [ "$pid" = "$(live_pid "$DB_PID" mariadbd)" ] || [ "$pid" = "$(live_pid "$DBD_PID" slurmdbd)" ] ||
      { kill -TERM "$pid" 2>/dev/null || true; wait_gone "$pid" 100 || true; }
  done
}

# Lines for slurm.conf (empty when accounting is off).
accounting_slurm_conf() {
  accounting_enabled || {
    echo "# No accounting inside this Debian root: sacct says accounting storage is disabled."
    return 0
  }
  cat <<EOF
# Accounting through slurmdbd (dev/cluster-accounting.bash): sacct for isense reconcile.
# gres/gpu is tracked so sacct's AllocTRES carries the GPUs of each job.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/none
EOF
}

slurmdbd_conf() {
  cat <<EOF
# Written by $ROOT/dev/cluster: slurmdbd of the isense dev cluster. Edits are overwritten.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=slurm
PidFile=$DBD_PID
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB_NAME
StorageUser=$DB_USER
StoragePass=$DB_PASS
EOF
}

write_slurmdbd_conf() {
  local tmp
  tmp=$(mktemp "$ETC/slurmdbd.conf.XXXXXX")
  slurmdbd_conf >"$tmp"
  if [ -f "$ETC/slurmdbd.conf" ] && cmp -s "$tmp" "$ETC/slurmdbd.conf"; then
    rm -f "$tmp"
  else
    chown slurm:slurm "$tmp" && chmod 0600 "$tmp" && mv -f "$tmp" "$ETC/slurmdbd.conf"
  fi
}

db_query() { mariadb --socket="$DB_SOCKET" -u root -N -e "$1"; }

start_mariadbd() {
  install -d -m 0755 -o mysql -g mysql "$DB_RUN"
  if [ ! -d "$DB_DATA/mysql" ]; then
    install -d -m 0750 -o mysql -g mysql "$DB_DATA"
    mariadb-install-db --user=mysql --datadir="$DB_DATA" --auth-root-authentication-method=socket \
      --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed (see $LOG/mariadb-install.log)"
  fi
  live_pid "$DB_PID" mariadbd >/dev/null && return 0
  rm -f "$DB_SOCKET"
  # mariadbd does not fork: start it in its own session, output to its log.
  setsid /usr/sbin/mariadbd --user=mysql --datadir="$DB_DATA" --socket="$DB_SOCKET" \
    --pid-file="$DB_PID" --skip-networking --log-error="$LOG/mariadb.log" \
    </dev/null >/dev/null 2>&1 &
  local i
  for ((i = 0; i < 600; i++)); do
    db_query "SELECT 1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "mariadbd does not answer after 60 s: $(tail -n 2 "$LOG/mariadb.log" 2>/dev/null)"
}

ensure_db_user() {
  db_query "CREATE DATABASE IF NOT EXISTS $DB_NAME;
    CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';" ||
    die "could not create the slurm database user in MariaDB"
}

dbd_up() { sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1; }

start_slurmdbd() {
  if ! live_pid "$DBD_PID" slurmdbd >/dev/null; then
    /usr/sbin/slurmdbd || die "slurmdbd did not start: $(tail -n 2 "$LOG/slurmdbd.log" 2>/dev/null)"
  fi
  local i
  for ((i = 0; i < 600; i++)); do
    dbd_up && return 0
    sleep 0.1
  done
  die "slurmdbd does not answer after 60 s: $(tail -n 2 "$LOG/slurmdbd.log" 2>/dev/null)"
}

# The cluster, an account and the dev users, once (sacctmgr -i: no questions).
register_cluster() {
  local name user
  name=$(awk -F= '$1 == "ClusterName" { print $2 }' "$ETC/slurm.conf")
  if [ -z "$(sacctmgr -n -P show cluster "$name" format=cluster 2>/dev/null)" ]; then
    sacctmgr -i add cluster "$name" >/dev/null || die "sacctmgr add cluster $name failed"
    sacctmgr -i add account isense-dev cluster="$name" Description="isense dev" Organization=isense >/dev/null ||
      die "sacctmgr add account failed"
    for user in root trainer isense; do
      sacctmgr -i add user "$user" account=isense-dev cluster="$name" >/dev/null ||
        die "sacctmgr add user $user failed"
    done
    say "registered cluster $name in slurmdbd"
  fi
}

# Before slurmctld starts: it sends its jobs to slurmdbd.
accounting_up() {
  accounting_enabled || return 0
  ensure_accounting_packages
  write_slurmdbd_conf
  local digest
  digest=$(sha1sum <"$ETC/slurmdbd.conf" | cut -c1-16)
  if [ "$(cat "$RUN/slurmdbd.digest" 2>/dev/null)" != "$digest" ]; then
    stop_daemons "slurmdbd:$DBD_PID"
  fi
  start_mariadbd
  ensure_db_user
  start_slurmdbd
  echo "$digest" >"$RUN/slurmdbd.digest"
  register_cluster
}

# After slurmctld has stopped (it flushes its last records to slurmdbd first).
accounting_down() {
  stop_daemons "slurmdbd:$DBD_PID"
  stop_daemons "mariadbd:$DB_PID"
  local pid
  for pid in $(pids_of slurmdbd); do # one whose pid file was replaced
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 100 || kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$RUN/slurmdbd.digest"
}

accounting_status() {
  accounting_enabled || return 0
  show mariadbd "$DB_PID" mariadbd
  show slurmdbd "$DBD_PID" slurmdbd
}
