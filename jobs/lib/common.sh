# Shared by every batch job in jobs/: sourced, never run. Defines functions only; nothing happens on source.
#
# The jobs call, in this order: hvdw_activate (venv), hvdw_need (commands), the input checks
# (hvdw_data_summary, hvdw_die), hvdw_run_dir, a launcher prefix (hvdw_srun_prefix / hvdw_mpirun_prefix)
# and hvdw_run, which records the exact command, hosts, ranks and versions in the run directory.
# Input errors exit 2 with one line "JOB: error: ..." on stderr, which SLURM/LSF put in the output file.

hvdw_die() {  # MESSAGE: one line naming the bad input and what to do; exit 2 before any long work
  echo "${HVDW_JOB:-hvdweather-job}: error: $*" >&2
  exit 2
}

hvdw_activate() {  # put the venv's bin first on PATH: $HVDWEATHER_VENV, else <repo>/.venv, else PATH as is
  local venv=${HVDWEATHER_VENV:-}
  if [[ -z $venv && -x $HVDWEATHER_HOME/.venv/bin/python ]]; then
    venv=$HVDWEATHER_HOME/.venv
  fi
  if [[ -n $venv ]]; then
    [[ -x $venv/bin/python ]] \
      || hvdw_die "HVDWEATHER_VENV=$venv: no bin/python there; run 'make install' or fix the path"
    # Same effect as bin/activate, without its prompt logic (which trips `set -u` in some versions).
    export VIRTUAL_ENV=$venv PATH=$venv/bin:$PATH
  fi
  # mpirun -x forwards these; an unset one only earns a warning per job.
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-} TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
}

hvdw_need() {  # COMMAND...: each must be on PATH, else say how to get it
  local cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null \
      || hvdw_die "'$cmd' not found on PATH; run 'make install' in the repository, set HVDWEATHER_VENV," \
                  "or load it in the site section"
  done
}

hvdw_flag_value() {  # FLAG ARG...: the last value given for FLAG (as --flag V or --flag=V), else empty
  local flag=$1 value="" previous="" arg
  shift
  for arg in "$@"; do
    if [[ $previous == "$flag" ]]; then value=$arg; fi
    if [[ $arg == "$flag="* ]]; then value=${arg#"$flag="}; fi
    previous=$arg
  done
  echo "$value"
}

hvdw_with_defaults() {  # FLAG=VALUE... -- ARG...: HVDW_ARGS = the defaults ARG... does not set, then ARG...
  # The first default given for a flag wins, so a job can put its own defaults before the shared ones.
  local -a defaults=()
  local pair
  while [[ $# -gt 0 && $1 != -- ]]; do defaults+=("$1"); shift; done
  shift  # the --
  HVDW_ARGS=()
  for pair in "${defaults[@]}"; do
    if [[ -z $(hvdw_flag_value "${pair%%=*}" "$@" "${HVDW_ARGS[@]}") ]]; then
      HVDW_ARGS+=("${pair%%=*}" "${pair#*=}")
    fi
  done
  HVDW_ARGS+=("$@")
}

hvdw_positive_int() {  # NAME VALUE: die unless VALUE is a whole number >= 1
  [[ $2 =~ ^[1-9][0-9]*$ ]] || hvdw_die "$1 must be a whole number >= 1, got '$2'"
}

hvdw_data_summary() {  # DIR: prints "IMAGES CLASSES"; dies with the package's own message if DIR is unusable
  local summary
  # The same discover() the training uses (no TensorFlow import: about 0.2 s), so job and program agree.
  summary=$(python - "$1" 2>&1 <<'PY'
import sys
from hvdweather.data.discovery import DataError, discover
try:
    catalog = discover(sys.argv[1])
except DataError as exc:
    sys.exit(str(exc))
print(len(catalog.paths), len(catalog.class_names))
PY
) || hvdw_die "${summary##*$'\n'}"
  echo "$summary"
}

hvdw_train_args() {  # WORKERS [FLAG=VALUE...] -- ARG...: checked hvdweather-train flags in HVDW_ARGS
  # Defaults come from HVDW_* variables (and the caller's FLAG=VALUE pairs); arguments given to the job
  # win. Sets HVDW_IMAGES, HVDW_CLASSES and HVDW_TRAIN_IMAGES. Dies on a bad flag or data set, or on more
  # workers x per-worker batch than training images: training's own checks (check_train.py, no TensorFlow).
  local workers=$1 data batch summary
  local -a extra=()
  shift
  while [[ $# -gt 0 && $1 != -- ]]; do extra+=("$1"); shift; done
  shift
  [[ -z $(hvdw_flag_value --out "$@") ]] \
    || hvdw_die "--out is chosen by the job (a run directory named after the job id); set HVDW_RUNS instead"
  hvdw_with_defaults "${extra[@]}" --data="${HVDW_DATA:-}" --epochs="${HVDW_EPOCHS:-10}" \
    --batch-size="${HVDW_BATCH_SIZE:-32}" --lr="${HVDW_LR:-0.01}" --image-size="${HVDW_IMAGE_SIZE:-256}" \
    --verbose=2 -- "$@"
  data=$(hvdw_flag_value --data "${HVDW_ARGS[@]}")
  batch=$(hvdw_flag_value --batch-size "${HVDW_ARGS[@]}")
  [[ -n $data ]] || hvdw_die "HVDW_DATA is not set (and no --data argument); point it at a folder of class folders"
  hvdw_positive_int "--batch-size (HVDW_BATCH_SIZE)" "$batch"
  # The arguments as hvdweather-train reads them, the split it makes (about 0.5 s): job and program agree.
  summary=$(python "$HVDWEATHER_HOME/jobs/lib/check_train.py" "$workers" "${HVDW_ARGS[@]}" 2>&1) \
    || hvdw_die "${summary##*$'\n'}"
  read -r HVDW_IMAGES HVDW_CLASSES HVDW_TRAIN_IMAGES <<<"${summary##*$'\n'}"
}

hvdw_job_id() {  # the scheduler's id for this job (array tasks: ARRAYID_TASKID), else a timestamp and pid
  if [[ -n ${SLURM_ARRAY_JOB_ID:-} ]]; then
    echo "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
  else
    echo "${SLURM_JOB_ID:-${LSB_JOBID:-$(date +%Y%m%d-%H%M%S)-$$}}"
  fi
}

hvdw_run_dir() {  # NAME: create ${HVDW_RUNS:-runs}/NAME and print its absolute path
  local dir=${HVDW_RUNS:-runs}/$1
  mkdir -p "$dir" 2>/dev/null \
    || hvdw_die "HVDW_RUNS=${HVDW_RUNS:-runs}: cannot create $dir; set HVDW_RUNS to a writable directory"
  (cd "$dir" && pwd)
}

hvdw_srun_prefix() {  # NTASKS: fill HVDW_LAUNCH with srun; pmix, as Debian's OpenMPI has no pmi2
  # --kill-on-bad-exit: one rank failing ends the step instead of leaving the others in an allreduce.
  HVDW_LAUNCH=(srun "--mpi=${HVDW_SRUN_MPI:-pmix}" "--ntasks=$1" --kill-on-bad-exit=1)
  # Since Slurm 22.05 srun no longer inherits sbatch's --cpus-per-task: without this, each rank of a
  # -c 8 job would be confined to 1 CPU wherever task/affinity or cgroups bind tasks.
  if [[ -n ${SLURM_CPUS_PER_TASK:-} ]]; then HVDW_LAUNCH+=("--cpus-per-task=$SLURM_CPUS_PER_TASK"); fi
  if [[ -n ${HVDW_NETWORK_INTERFACE:-} ]]; then  # srun has no -mca: OpenMPI reads the same from the environment
    export OMPI_MCA_btl_tcp_if_include=$HVDW_NETWORK_INTERFACE OMPI_MCA_oob_tcp_if_include=$HVDW_NETWORK_INTERFACE
  fi
}

hvdw_mpirun_prefix() {  # NP [HOSTFILE]: fill HVDW_LAUNCH with mpirun and Horovod's documented flags
  HVDW_LAUNCH=(mpirun -np "$1")
  if [[ -n ${2:-} ]]; then HVDW_LAUNCH+=(--hostfile "$2"); fi
  # Horovod docs: no core binding (TensorFlow sizes its own thread pools), ranks fill a host's slots
  # before the next host, forward the environment, and avoid the openib BTL (fork() trouble).
  HVDW_LAUNCH+=(-bind-to none -map-by slot -x LD_LIBRARY_PATH -x PATH -x TF_CPP_MIN_LOG_LEVEL
                -mca pml ob1 -mca btl '^openib')
  # Nodes with several interfaces (ethernet and InfiniBand, a private cluster network): MPI's data (btl)
  # and mpirun's own control channel (oob) both on the one named, e.g. HVDW_NETWORK_INTERFACE=ib0.
  if [[ -n ${HVDW_NETWORK_INTERFACE:-} ]]; then
    HVDW_LAUNCH+=(-mca btl_tcp_if_include "$HVDW_NETWORK_INTERFACE" -mca oob_tcp_if_include "$HVDW_NETWORK_INTERFACE")
  fi
  if (( EUID == 0 )); then HVDW_LAUNCH+=(--allow-run-as-root); fi
}

hvdw_elastic_prefix() {  # NP: fill HVDW_LAUNCH with horovodrun's elastic mode over the SLURM allocation
  # Workers start on the nodes discover_hosts_slurm.sh lists (ssh to each, as horovodrun does; Gloo);
  # a node SLURM marks down or drained leaves, one that returns joins, at an epoch end. The job keeps
  # going while at least HVDW_MIN_NP [1] workers remain.
  local min=${HVDW_MIN_NP:-1}
  hvdw_positive_int "HVDW_MIN_NP" "$min"
  (( min <= $1 )) || hvdw_die "HVDW_MIN_NP=$min is more than the job's $1 tasks"
  HVDW_LAUNCH=(horovodrun -np "$1" --min-np "$min" --max-np "$1"
               --host-discovery-script "$HVDWEATHER_HOME/jobs/lib/discover_hosts_slurm.sh")
  if [[ -n ${HVDW_NETWORK_INTERFACE:-} ]]; then HVDW_LAUNCH+=(--network-interface "$HVDW_NETWORK_INTERFACE"); fi
  HVDW_ELASTIC_ARGS=(--elastic)
}

hvdw_launcher_prefix() {  # NTASKS [elastic]: inside SLURM, srun (default) or mpirun as $HVDW_LAUNCHER says;
  # elastic too where the job allows it (training: its command then takes HVDW_ELASTIC_ARGS)
  HVDW_ELASTIC_ARGS=()
  case ${HVDW_LAUNCHER:-srun} in
    srun) hvdw_need srun; hvdw_srun_prefix "$1" ;;
    mpirun) hvdw_need mpirun; hvdw_mpirun_prefix "$1" ;;
    elastic)
      [[ ${2:-} == elastic ]] || hvdw_die "HVDW_LAUNCHER=elastic: only jobs/slurm/train_horovod.sbatch runs elastic"
      hvdw_need horovodrun sinfo; hvdw_elastic_prefix "$1" ;;
    *) hvdw_die "HVDW_LAUNCHER=${HVDW_LAUNCHER}: use srun or mpirun${2:+ or elastic}" ;;
  esac
}

hvdw_slurm_hosts() {  # the allocation's host names, comma-separated
  scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname -s)}" 2>/dev/null | paste -sd, -
}

hvdw_record() {  # RUN_DIR RANKS HOSTS COMMAND...: job.json (command, hosts, ranks, versions) and env.txt
  local run_dir=$1 ranks=$2 hosts=$3
  shift 3
  local names='^(SLURM|LSB|LSF|OMPI|PMIX|HOROVOD|HVDW|HVDWEATHER|TF|CUDA|NCCL)_|^(PATH|LD_LIBRARY_PATH|VIRTUAL_ENV)='
  env | grep -E "$names" \
    | sort >"$run_dir/env.txt" || true
  python "$HVDWEATHER_HOME/jobs/lib/record.py" start "$run_dir/job.json" "$ranks" "$hosts" "$@"
}

hvdw_run() {  # RUN_DIR RANKS HOSTS COMMAND...: record, print and run COMMAND; its exit status is the job's
  local run_dir=$1 status=0
  hvdw_record "$@"
  shift 3
  echo "run directory: $run_dir"
  echo "command: $*"
  if [[ ${HVDW_DRY_RUN:-0} == 1 ]]; then
    echo "HVDW_DRY_RUN=1: inputs checked and run recorded; nothing launched"
    return 0
  fi
  if [[ -n ${SLURM_JOB_ID:-} && ${HVDW_REQUEUE:-1} == 1 ]]; then
    hvdw_run_requeueable "$@" || status=$?
    if [[ ${HVDW_REQUEUED:-0} == 1 ]]; then
      # SLURM ended this attempt's steps (SIGTERM) once it accepted the requeue; the job goes back to the
      # queue whatever this script returns, and the next attempt resumes.
      echo "$HVDW_JOB: attempt ended for the requeue (its steps exited $status); the next attempt resumes"
      python "$HVDWEATHER_HOME/jobs/lib/record.py" finish "$run_dir/job.json" "$status"
      return 0
    fi
  else
    "$@" || status=$?
  fi
  python "$HVDWEATHER_HOME/jobs/lib/record.py" finish "$run_dir/job.json" "$status"
  return "$status"
}

hvdw_run_requeueable() {  # COMMAND...: run it under SLURM with the pre-emption trap; return its exit status
  # In the background, so that bash runs the USR1 trap while we wait (it defers traps until a foreground
  # command ends); `wait` returns early when a trapped signal arrives, hence the loop. (Only under SLURM:
  # a non-interactive shell's background jobs ignore Ctrl-C.)
  # SLURM sends SIGTERM to this shell and its steps when it ends an attempt (an accepted requeue,
  # scancel, the time limit), and SIGKILL KillWait seconds later (30 by default). Without the TERM trap
  # bash would die at once; with it, the loop waits for the steps to exit, and the caller logs and
  # records the attempt's end well within KillWait.
  local status=0
  trap hvdw_requeue USR1
  trap 'HVDW_TERMINATED=1' TERM
  "$@" &
  HVDW_CHILD=$!
  while :; do
    wait "$HVDW_CHILD" && status=0 || status=$?
    kill -0 "$HVDW_CHILD" 2>/dev/null || break
  done
  trap - USR1 TERM
  if [[ ${HVDW_TERMINATED:-0} == 1 && ${HVDW_REQUEUED:-0} != 1 ]]; then
    echo "$HVDW_JOB: SLURM ended this attempt (SIGTERM: cancelled or at its time limit); its steps exited $status"
  fi
  return "$status"
}

hvdw_requeue() {  # the USR1 trap: SLURM's --signal=B:USR1@SECONDS, sent before the time limit or on pre-emption
  # The checkpoint of the last finished epoch is already on disk (written atomically), so the job can go
  # back to the queue now; SLURM then ends this attempt and the next one continues with --resume.
  echo "$HVDW_JOB: SIGUSR1 (time limit or pre-emption near): requeueing job $SLURM_JOB_ID; it continues" \
       "from the last finished epoch with --resume"
  local attempt error=""
  for attempt in 1 2 3 4 5; do
    if error=$(scontrol requeue "$SLURM_JOB_ID" 2>&1) || hvdw_requeued; then
      HVDW_REQUEUED=1
      return 0
    fi
    case $error in  # refusals that a retry cannot change: the job or the cluster does not allow requeues
      *"presently disabled"* | *"Only batch jobs"* | *"Access/permission denied"* | *"Invalid job id"*) break ;;
    esac
    sleep "$attempt"  # anything else is taken for transient (slurmctld busy or restarting)
  done
  echo "$HVDW_JOB: scontrol requeue failed (${error:-no message}); the job ends at its time limit" \
       "(resubmit, and train with --resume)" >&2
}

hvdw_requeued() {  # true once SLURM has requeued this job, whatever scontrol said
  # A requeue can be applied although scontrol reports an error: its reply lost, or scontrol itself killed
  # by the SIGTERM that the accepted requeue sends to this attempt. A second `scontrol requeue` then only
  # gets "Job is pending execution". The restart count goes up in the same step as the requeue
  # (slurmctld's _job_requeue_op); PENDING means the same. COMPLETING alone does not: a job ending at its
  # time limit completes too, and a retried requeue still puts it back in the queue.
  local record restarts
  record=$(scontrol -o show job "$SLURM_JOB_ID" 2>/dev/null) || return 1
  restarts=$(sed -n 's/.* Restarts=\([0-9]*\).*/\1/p' <<<"$record")
  (( ${restarts:-0} > ${SLURM_RESTART_COUNT:-0} )) || [[ $record == *" JobState=PENDING "* ]]
}

hvdw_resume_args() {  # RUN_DIR: print --resume when this is a requeued attempt of a run that has started
  if [[ ${SLURM_RESTART_COUNT:-0} -gt 0 && -f $1/config.json ]]; then
    echo "$HVDW_JOB: attempt $((SLURM_RESTART_COUNT + 1)) of job $SLURM_JOB_ID: resuming $1" >&2
    echo --resume
  fi
}
