#!/usr/bin/env bash
# A one-node Slurm cluster on localhost (with slurmdbd accounting) for segsweep's integration tests.
#
#   tests/slurm/cluster.sh start    install (apt) if needed, configure, start every daemon, wait until the node is idle
#   tests/slurm/cluster.sh stop     cancel all jobs, stop the daemons by their pid files, remove slurm.conf
#   tests/slurm/cluster.sh status   print what runs; exit 0 only when the cluster accepts jobs
#
# Needs root on Debian 12 (no systemd: daemons are started directly). Idempotent: `start` on a running
# cluster only re-checks it; `stop` on a stopped one does nothing.
# Environment (defaults): SEGSWEEP_TEST_CPUS (2), SEGSWEEP_TEST_ACCOUNT (ci, root's default account),
# SEGSWEEP_TEST_ALT_ACCOUNT (ci-alt), SEGSWEEP_TEST_CPU_PARTITION (cpu, the default), SEGSWEEP_TEST_GPU_PARTITION (gpu),
# SEGSWEEP_TEST_PROCTRACK (linuxproc; `cgroup` tracks job steps by cgroup v1 as real clusters do, which ends
# every process of a step with it: needs a writable /sys/fs/cgroup/freezer; to switch, `stop` first).
# (Not the SEGSWEEP_SLURM_* names the profile reads: those describe where to submit, these build the cluster.)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER=segsweep
NODE=segsweep-node
CPUS=${SEGSWEEP_TEST_CPUS:-2}
ACCOUNT=${SEGSWEEP_TEST_ACCOUNT:-ci}
ALT_ACCOUNT=${SEGSWEEP_TEST_ALT_ACCOUNT:-ci-alt}
CPU_PARTITION=${SEGSWEEP_TEST_CPU_PARTITION:-cpu}
GPU_PARTITION=${SEGSWEEP_TEST_GPU_PARTITION:-gpu}
PROCTRACK=${SEGSWEEP_TEST_PROCTRACK:-linuxproc}
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)
ETC=/etc/slurm
DB=slurm_acct_db
CONF_CHANGED=0

log() { printf '[cluster.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pid_alive PIDFILE: the pid file names a live process.
pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds.
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${limit}s waiting for $what"
    sleep 0.2
  done
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be stale or absent on a fresh image: refresh once before installing.
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

configure() {
  [[ -s /etc/munge/munge.key ]] || { log "creating munge key"; runuser -u munge -- mungekey --create; }
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o slurm -g slurm -m 0755 /run/slurm /var/spool/slurmctld /var/log/slurm
  install -d -o root -g root -m 0755 /var/spool/slurmd
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  install -d -m 0755 "$ETC"

  # 85 % of the memory slurmd sees, so jobs never push the machine into swap/OOM.
  local mem
  mem=$(/usr/sbin/slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  [[ -n $mem ]] || die "could not read RealMemory from 'slurmd -C'"
  mem=$((mem * 85 / 100))
  # `scontrol reconfigure` does not change a running slurmd's process tracking
  if pid_alive /run/slurm/slurmd.pid && [[ -f $ETC/slurm.conf ]] \
    && ! grep -qx "ProctrackType=proctrack/$PROCTRACK" "$ETC/slurm.conf"; then
    die "the running cluster tracks processes with $(sed -n 's/^ProctrackType=//p' "$ETC/slurm.conf"): run '$0 stop' first"
  fi
  case $PROCTRACK in
    linuxproc) rm -f "$ETC/cgroup.conf" ;;
    cgroup)
      [[ -w /sys/fs/cgroup/freezer ]] || die "SEGSWEEP_TEST_PROCTRACK=cgroup needs a writable cgroup v1 freezer at /sys/fs/cgroup/freezer"
      # cgroup v1 as mounted here (no systemd to mount or delegate); track only, confine nothing
      printf '%s\n' CgroupPlugin=cgroup/v1 CgroupAutomount=no ConstrainCores=no ConstrainRAMSpace=no \
        ConstrainDevices=no >"$ETC/cgroup.conf"
      ;;
    *) die "SEGSWEEP_TEST_PROCTRACK must be linuxproc or cgroup, not '$PROCTRACK'" ;;
  esac
  sed -e "s/@CLUSTER@/$CLUSTER/g" -e "s/@NODE@/$NODE/g" -e "s/@CPUS@/$CPUS/g" -e "s/@MEM_MB@/$mem/g" \
      -e "s/@DEF_MEM_PER_CPU@/$((mem / CPUS < 1024 ? mem / CPUS : 1024))/g" \
      -e "s/@CPU_PARTITION@/$CPU_PARTITION/g" -e "s/@GPU_PARTITION@/$GPU_PARTITION/g" -e "s/@PROCTRACK@/$PROCTRACK/g" \
      "$HERE/slurm.conf.in" >"$ETC/slurm.conf.tmp"
  # A changed config reaches already running daemons through `scontrol reconfigure` (start_slurm).
  cmp -s "$ETC/slurm.conf.tmp" "$ETC/slurm.conf" || CONF_CHANGED=1
  mv "$ETC/slurm.conf.tmp" "$ETC/slurm.conf"
  # A stand-in GPU so GPU requests (--gpus=1) schedule on this CPU-only node. slurmd drops a gres/gpu
  # without a device file, so point it at /dev/null (nothing is confined: TaskPlugin=task/none).
  printf 'NodeName=%s Name=gpu File=/dev/null\n' "$NODE" >"$ETC/gres.conf"

  # slurmdbd refuses a config readable by others; keep the DB password of an earlier run.
  local pass=""
  [[ -f $ETC/slurmdbd.conf ]] && pass=$(sed -n 's/^StoragePass=//p' "$ETC/slurmdbd.conf")
  [[ -n $pass ]] || pass=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  umask 077
  cat >"$ETC/slurmdbd.conf.tmp" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB
StorageUser=slurm
StoragePass=$pass
CONF
  umask 022
  chown slurm:slurm "$ETC/slurmdbd.conf.tmp"
  mv "$ETC/slurmdbd.conf.tmp" "$ETC/slurmdbd.conf"
  DB_PASS=$pass
}

start_munge() {
  pid_alive /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
  wait_for 10 munged bash -c 'munge -n | unmunge'
}

start_mariadb() {
  if ! mysqladmin ping --silent >/dev/null 2>&1; then
    # mysqld_safe stays in the foreground: detach it from this shell and its stdio.
    setsid /usr/bin/mysqld_safe --skip-syslog </dev/null >/dev/null 2>&1 &
    wait_for 60 MariaDB mysqladmin ping --silent
  fi
  mysql -u root <<SQL
CREATE DATABASE IF NOT EXISTS $DB;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB.* TO 'slurm'@'localhost';
SQL
}

start_slurm() {
  if ! pid_alive /run/slurm/slurmdbd.pid; then
    /usr/sbin/slurmdbd
  fi
  wait_for 30 slurmdbd sacctmgr -n list cluster
  if pid_alive /run/slurm/slurmctld.pid; then
    ((CONF_CHANGED)) && { log "slurm.conf changed: reconfiguring"; scontrol reconfigure; }
  else
    /usr/sbin/slurmctld
  fi
  wait_for 30 slurmctld bash -c 'scontrol ping | grep -q UP'
  # slurmctld registers the cluster in slurmdbd by itself; the association must exist before jobs run.
  wait_for 30 "cluster registration" bash -c "sacctmgr -n -P list cluster format=cluster | grep -qx $CLUSTER"
  # slurmdbd creates root with account `root`; jobs must run under $ACCOUNT like any user's on a real cluster.
  # $ALT_ACCOUNT is a second, non-default account, so a test can see that `-A` from the profile is honoured.
  local a
  for a in "$ACCOUNT" "$ALT_ACCOUNT"; do
    sacctmgr -n -P list account format=account | grep -qx "$a" || sacctmgr -i add account "$a" >/dev/null
    sacctmgr -n -P list assoc user=root format=account | grep -qx "$a" \
      || sacctmgr -i add user root Account="$a" >/dev/null
  done
  [[ $(sacctmgr -n -P list user root format=defaultaccount) == "$ACCOUNT" ]] \
    || sacctmgr -i modify user root set DefaultAccount="$ACCOUNT" >/dev/null
  pid_alive /run/slurm/slurmd.pid || /usr/sbin/slurmd -N "$NODE"
  # Right after a (re)start the node shows `idle*` (not responding yet): wait until it responds.
  wait_for 60 "node $NODE to register" bash -c "sinfo -h -r -n $NODE -o %t | grep -q ."
  # A drain/down reason saved by an earlier run (e.g. an aborted job, a changed config) survives restarts
  # in slurmctld's state files; on this throwaway node, put it back into service.
  if sinfo -h -n "$NODE" -o %t | grep -Eq 'drain|drng|down|inval|fail'; then
    log "resuming $NODE (was: $(sinfo -h -n "$NODE" -o '%t %E' | head -1))"
    scontrol update nodename="$NODE" state=resume
  fi
  wait_for 30 "node $NODE idle" bash -c "sinfo -h -r -n $NODE -o %t | grep -Eqx 'idle|mix|alloc'"
}

stop_pid() {  # stop_pid PIDFILE NAME: SIGTERM, wait up to 20 s, then SIGKILL
  local f=$1 name=$2 pid i
  pid_alive "$f" || return 0
  pid=$(cat "$f")
  kill "$pid"
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || { log "stopped $name"; return 0; }; sleep 0.2; done
  log "$name did not stop on SIGTERM; killing it"
  kill -9 "$pid" 2>/dev/null || true
}

cmd_start() {
  ((EUID == 0)) || die "must run as root (installs packages, starts daemons)"
  local t0=$SECONDS
  install_packages
  configure
  start_munge
  start_mariadb
  start_slurm
  log "cluster '$CLUSTER' up in $((SECONDS - t0))s: node $NODE ($CPUS CPUs, proctrack/$PROCTRACK), partitions $CPU_PARTITION (default), $GPU_PARTITION; accounts $ACCOUNT (default), $ALT_ACCOUNT"
}

cmd_stop() {
  ((EUID == 0)) || die "must run as root"
  if pid_alive /run/slurm/slurmctld.pid; then
    # A job still running when slurmd goes away stays RUNNING in the controller's state: cancel first.
    scancel --full --quiet --user=root 2>/dev/null || true
    scancel --quiet --state=PENDING 2>/dev/null || true
    local i
    for ((i = 0; i < 75; i++)); do
      [[ -z $(squeue -h -t RUNNING,COMPLETING,PENDING -o %i 2>/dev/null) ]] && break
      sleep 0.2
    done
  fi
  stop_pid /run/slurm/slurmd.pid slurmd
  stop_pid /run/slurm/slurmctld.pid slurmctld
  stop_pid /run/slurm/slurmdbd.pid slurmdbd
  if command -v mysqladmin >/dev/null && mysqladmin ping --silent >/dev/null 2>&1; then
    mysqladmin -u root shutdown && log "stopped MariaDB"
  fi
  stop_pid /run/munge/munged.pid munged
  # With slurm.conf present but no controller, every Slurm command retries for ~10 s, and so does every
  # Snakemake start (the slurm plugin runs `scontrol show config` when imported). Without it they fail at
  # once. `start` writes it again.
  rm -f "$ETC/slurm.conf"
}

cmd_status() {
  local ok=0 d f
  for d in munged:/run/munge/munged.pid slurmdbd:/run/slurm/slurmdbd.pid \
           slurmctld:/run/slurm/slurmctld.pid slurmd:/run/slurm/slurmd.pid; do
    f=${d#*:}
    if pid_alive "$f"; then echo "${d%%:*}: running (pid $(cat "$f"))"; else echo "${d%%:*}: stopped"; ok=1; fi
  done
  if command -v mysqladmin >/dev/null && mysqladmin ping --silent >/dev/null 2>&1; then
    echo "mariadb: running"
  else
    echo "mariadb: stopped"; ok=1
  fi
  if ((ok == 0)); then
    sinfo -N -o '%N %P %t %c %m %G'
    sinfo -h -r -n "$NODE" -o %t | grep -Eqx 'idle|mix|alloc' || ok=1
  fi
  return $ok
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
