#!/bin/bash
# Horovod training with plain mpirun over the hosts of a hostfile: for machines without a scheduler.
#
#   printf 'node1 slots=4\nnode2 slots=4\n' > hosts.txt
#   HVDW_DATA=/data/weapd HVDW_HOSTFILE=hosts.txt HVDW_NP=8 jobs/mpirun/train_horovod.sh --epochs 20
#   HVDW_DATA=/data/weapd HVDW_NP=2 jobs/mpirun/train_horovod.sh          # this machine only
#
# Arguments go to hvdweather-train unchanged (they win over the variables below).
# Environment (defaults in brackets):
#   HVDW_DATA         class-folder data set (required, or --data as an argument); same path on every host
#   HVDW_HOSTFILE     OpenMPI hostfile, lines "HOST slots=N" [none: this machine only]
#   HVDW_NP           ranks [the hostfile's total slots, else 1]
#   HVDW_RUNS         where run directories go [runs]; this job writes $HVDW_RUNS/train-horovod-<time>-<pid>
#   HVDW_EPOCHS [10]  HVDW_BATCH_SIZE (per worker) [32]  HVDW_LR (one worker's; scaled by workers) [0.01]
#   HVDW_IMAGE_SIZE [256]  HVDW_THREADS  TensorFlow threads per rank [0: the host's cores / its ranks]
#   HVDW_NETWORK_INTERFACE  the interface ranks talk over, e.g. ib0 [OpenMPI's choice: all but loopback]
#   HVDW_DRY_RUN=1    check inputs, write the run record and print the command, but launch nothing
#   HVDWEATHER_VENV   venv to use [<repo>/.venv if present, else PATH]; same path on every host
#
# Several hosts need: passwordless ssh from this host to the others, the repository (or the venv) and
# the data at the same paths on all of them (a shared file system), and the same OpenMPI version.
# ssh options (a key, a port) go in ~/.ssh/config or OMPI_MCA_plm_rsh_args="-i KEY -p PORT".
set -euo pipefail

# ===================== SITE SECTION: modules / environment (edit for your machines) =====================
# module load openmpi/4.1 python/3.11
# export HVDWEATHER_VENV=/shared/envs/hvdweather
# ========================================================================================================

HVDW_JOB=train_horovod.sh
HVDWEATHER_HOME=${HVDWEATHER_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export HVDWEATHER_HOME HVDW_JOB
source "$HVDWEATHER_HOME/jobs/lib/common.sh"
hvdw_activate
hvdw_need hvdweather-train python mpirun

# ---- inputs: fail here, in seconds, before any rank starts ----
hostfile=${HVDW_HOSTFILE:-}
slots=0
if [[ -n $hostfile ]]; then
  [[ -s $hostfile ]] || hvdw_die "HVDW_HOSTFILE=$hostfile: missing or empty; write lines like 'node1 slots=4'"
  hostfile=$(cd "$(dirname "$hostfile")" && pwd)/$(basename "$hostfile")
  # Lines "host", "host slots=N" or "host:N"; '#' starts a comment. A host without a count has 1 slot.
  slots=$(sed 's/#.*//' "$hostfile" | awk 'NF { n = 1
            if (match($0, /slots=[0-9]+/)) n = substr($0, RSTART + 6, RLENGTH - 6)
            else if (match($1, /:[0-9]+$/)) n = substr($1, RSTART + 1)
            total += n } END { print total + 0 }')
  (( slots > 0 )) || hvdw_die "HVDW_HOSTFILE=$hostfile: no hosts in it; write lines like 'node1 slots=4'"
fi
np=${HVDW_NP:-$(( slots > 0 ? slots : 1 ))}
hvdw_positive_int "HVDW_NP" "$np"
if [[ -n $hostfile ]] && (( np > slots )); then
  hvdw_die "impossible task count: HVDW_NP=$np ranks but $hostfile has only $slots slots; add hosts or slots"
fi
hvdw_train_args "$np" --threads-per-worker="${HVDW_THREADS:-0}" -- "$@"

run_dir=$(hvdw_run_dir "train-horovod-$(hvdw_job_id)")
hvdw_mpirun_prefix "$np" "$hostfile"
hosts=$(hostname -s)
if [[ -n $hostfile ]]; then
  hosts=$(sed 's/#.*//' "$hostfile" | awk 'NF { sub(/:.*/, "", $1); print $1 }' | paste -sd, -)
fi
echo "$HVDW_JOB: $np ranks on $hosts; $HVDW_IMAGES images in $HVDW_CLASSES classes"
hvdw_run "$run_dir" "$np" "$hosts" "${HVDW_LAUNCH[@]}" hvdweather-train --out "$run_dir" --strategy horovod \
  "${HVDW_ARGS[@]}"
