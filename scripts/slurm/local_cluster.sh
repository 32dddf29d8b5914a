#!/usr/bin/env bash
# A single-node Slurm cluster on this machine (munge + slurmctld + slurmd on localhost), for the tests and CI.
# Usage: local_cluster.sh install|start|stop|status   (as root; Debian's slurm-wlm packages)
set -euo pipefail

STATE=/var/spool/fastervlm-slurm  # controller state, slurmd spool, pid and log files
CONF=/etc/slurm/slurm.conf        # where sbatch, sinfo and the daemons look without SLURM_CONF
MARKER="# Written by fastervlm scripts/slurm/local_cluster.sh"

do_install() {
  export DEBIAN_FRONTEND=noninteractive
  # A fresh CI image may have no package lists yet.
  apt-get update -q
  # The recommends are ~30 extra plugin packages (mysql, hdf5, rrd, ...) a one-node test cluster never loads.
  apt-get install -y -q --no-install-recommends slurm-wlm munge
}

write_conf() {
  if [[ -e $CONF ]] && ! grep -qxF "$MARKER" "$CONF"; then
    echo "error: $CONF exists and was not written by this script; refusing to replace a real cluster's config" >&2
    exit 1
  fi
  # slurmd -C prints this machine's sockets, cores, threads and memory as slurmd itself will detect them;
  # declaring more than it detects would drain the node ("Low RealMemory").
  local hardware
  hardware=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //')
  mkdir -p "$(dirname "$CONF")" "$STATE/ctld" "$STATE/d"
  cat >"$CONF" <<CONF
$MARKER
ClusterName=fastervlm-local
SlurmctldHost=localhost
# The daemons and the jobs run as root: there is no slurm user to create on a throwaway CI machine.
SlurmUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
# Containers and CI VMs rarely give a writable cgroup hierarchy, and the default plugins need one.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Cores, not whole nodes, are the unit: array tasks asking for one CPU each run side by side. Memory is
# not consumable, so a job without --mem does not take the whole node's memory.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# No slurmdbd (it needs MySQL): sacct has nothing to read; finished jobs stay in scontrol for MinJobAge.
AccountingStorageType=accounting_storage/none
MinJobAge=600
# A node that was DOWN (e.g. slurmd stopped) comes back by itself once slurmd registers again.
ReturnToService=2
NodeName=localhost $hardware State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
}

running() {  # running PIDFILE: the process the pid file names is alive
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

do_start() {
  write_conf
  # munged refuses a key or directories other users can write; the package made the key, a bare image may not.
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  # /run is a tmpfs that systemd-tmpfiles would populate; there is no systemd here.
  install -d -o munge -g munge -m 0755 /run/munge
  running /run/munge/munged.pid || runuser -u munge -- munged
  running "$STATE/slurmctld.pid" || slurmctld
  # -N: the node is named localhost in slurm.conf, not after this machine's hostname.
  running "$STATE/slurmd.pid" || slurmd -N localhost
  wait_idle
}

wait_idle() {
  local state=""
  for _ in $(seq 60); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
    [[ $state == idle || $state == mixed || $state == allocated ]] && { sinfo; return 0; }
    sleep 1
  done
  echo "error: node localhost not up after 60 s (state: '${state:-no answer from slurmctld}')" >&2
  for log in "$STATE/slurmctld.log" "$STATE/slurmd.log" /var/log/munge/munged.log; do
    echo "--- tail of $log" >&2
    tail -n 30 "$log" >&2 || true
  done
  exit 1
}

do_stop() {
  local pidfile pid
  for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/munged.pid; do
    running "$pidfile" || continue
    pid=$(cat "$pidfile")
    kill "$pid"
    # Wait, so that a start right after does not find the old daemon's port or pid file.
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "error: pid $pid ($pidfile) still running 30 s after SIGTERM" >&2
      exit 1
    fi
  done
}

do_status() {
  local pidfile down=0
  for pidfile in /run/munge/munged.pid "$STATE/slurmctld.pid" "$STATE/slurmd.pid"; do
    if running "$pidfile"; then echo "running: $pidfile ($(cat "$pidfile"))"; else echo "stopped: $pidfile"; down=1; fi
  done
  sinfo || down=1
  return "$down"
}

case ${1:-} in
  install | start | stop | status) "do_$1" ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
