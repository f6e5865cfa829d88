#!/usr/bin/env bash
# Host discovery for elastic Horovod inside a SLURM allocation: the job's nodes that SLURM still
# considers usable, one "host:slots" per line. A node that goes down, fails or is drained during the
# job drops out of the list, and horovodrun moves the training onto the rest; when it comes back it
# rejoins at the next epoch end.
#
#   horovodrun -np $SLURM_NTASKS --min-np 1 --max-np $SLURM_NTASKS \
#       --host-discovery-script jobs/lib/discover_hosts_slurm.sh hvdweather-train --elastic ...
#
# Slots per node: HVDW_SLOTS_PER_NODE, else SLURM_NTASKS_PER_NODE, else 1.
set -euo pipefail
[[ -n ${SLURM_JOB_NODELIST:-} ]] \
  || { echo "discover_hosts_slurm.sh: error: SLURM_JOB_NODELIST is not set; run inside a SLURM job" >&2; exit 2; }
slots=${HVDW_SLOTS_PER_NODE:-${SLURM_NTASKS_PER_NODE:-1}}
slots=${slots%%(*}  # SLURM writes e.g. "2(x3)" for uneven layouts: take the first count
# sinfo's compact states: keep nodes that can run work (allocated, mixed, idle, completing). A state
# with a suffix (e.g. "alloc*": not responding) or any other state (down, drain, fail...) drops the node.
sinfo --noheader --Node --nodes "$SLURM_JOB_NODELIST" --format "%N %t" | while read -r node state; do
  case $state in
    alloc|mix|idle|comp) echo "$node:$slots" ;;
  esac
done | sort -u
