#!/bin/bash
# Slurm batch script of the fleetrisk nightly run.
#
#   sbatch slurm/nightly.sh [options of `fleetrisk nightly`]
#
# GENERATED from slurm/nightly.sh.in by slurm/render.py: edit those two files,
# then run `python slurm/render.py --write`. A site with other node counts
# renders its own copy with `python slurm/render.py --nodes N ... > FILE`.
#
# Options not given on the command line come from the environment
# (FLEETRISK_LAKE, FLEETRISK_STATE, FLEETRISK_OUT, FLEETRISK_CONFIG,
# FLEETRISK_DATE) or from the site config file: $FLEETRISK_SITE_CONFIG, else
# /etc/fleetrisk/site.env, with lines of FLEETRISK_NAME=value. The command line
# wins over the environment, and the environment over the file. Without
# --date the job runs the current night, the date in America/New_York when the
# job first starts; a requeued job keeps that date.
#
# Other settings:
#   FLEETRISK_VENV     virtual environment whose bin/ goes first on PATH
#   FLEETRISK_BIN      command that runs the program (default: fleetrisk)
#   FLEETRISK_MPI      srun --mpi plugin (default: pmi2)
#   FLEETRISK_RESUBMIT path of slurm/resubmit.sh; when set, the first start of
#                      the job queues the next night (self-resubmitting chain)
#
# Signals: Slurm sends SIGUSR1 to this shell before the time limit (see
# --signal below). The shell forwards it to the running step, the program
# writes its checkpoints and exits, and the shell requeues the job, which then
# resumes from those checkpoints. SIGTERM (scancel, preemption, an operator's
# `scontrol requeue`) is forwarded too, without a requeue by this script.
#SBATCH --job-name=fleetrisk-nightly
#SBATCH --nodes=2
#SBATCH --ntasks=8
#SBATCH --cpus-per-task=4
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --time=03:20:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=/shared/logs/%x-%j.out
#SBATCH --partition=spot

set -uo pipefail

readonly JOB_NAME_TAG="fleetrisk-nightly[${SLURM_JOB_ID:-none}]"
readonly EXIT_USAGE=2
readonly EXIT_INTERRUPTED=75
JOB_STARTED_EPOCH_S=$(date +%s)
STEP_PID=""
STOP_SIGNAL=""

log() {
    printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$JOB_NAME_TAG" "$*" >&2
}

fail() {
    local code=$1
    shift
    log "error: $*"
    exit "$code"
}

# --- settings -------------------------------------------------------------

# Export FLEETRISK_* assignments of the site config file that the
# environment does not set already. The file is parsed, never executed.
load_site_config() {
    local file=${FLEETRISK_SITE_CONFIG:-/etc/fleetrisk/site.env}
    if [[ ! -e $file && -z ${FLEETRISK_SITE_CONFIG:-} ]]; then
        return 0
    fi
    [[ -r $file ]] || fail "$EXIT_USAGE" "site config $file is not readable; fix FLEETRISK_SITE_CONFIG"
    local line number=0 name value
    while IFS= read -r line || [[ -n $line ]]; do
        number=$((number + 1))
        [[ $line =~ ^[[:space:]]*(#.*)?$ ]] && continue
        if [[ ! $line =~ ^[[:space:]]*(export[[:space:]]+)?(FLEETRISK_[A-Z0-9_]+)=(.*)$ ]]; then
            fail "$EXIT_USAGE" "$file line $number: expected FLEETRISK_NAME=value, found: $line"
        fi
        name=${BASH_REMATCH[2]}
        value=${BASH_REMATCH[3]}
        if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then
            value=${BASH_REMATCH[1]}
        fi
        if [[ -z ${!name+set} ]]; then
            export "$name=$value"
        fi
    done <"$file"
}

declare -A GIVEN=()
NIGHTLY_ARGS=()

# Record the values of the path and date options given on the command line.
scan_arguments() {
    local args=("$@") i option
    for ((i = 0; i < ${#args[@]}; i++)); do
        option=${args[i]}
        case $option in
        --lake | --state | --out | --date | --config)
            ((i + 1 < ${#args[@]})) || fail "$EXIT_USAGE" "option $option needs a value"
            GIVEN[$option]=${args[i + 1]}
            i=$((i + 1))
            ;;
        --lake=* | --state=* | --out=* | --date=* | --config=*)
            GIVEN[${option%%=*}]=${option#*=}
            ;;
        esac
    done
}

# Add an option from FLEETRISK_<NAME> when the command line lacks it.
add_from_environment() {
    local option=$1 required=$2
    local variable="FLEETRISK_${option#--}"
    variable=${variable^^}
    if [[ -n ${GIVEN[$option]+set} ]]; then
        return 0
    fi
    if [[ -n ${!variable:-} ]]; then
        GIVEN[$option]=${!variable}
        NIGHTLY_ARGS+=("$option" "${!variable}")
    elif ((required)); then
        fail "$EXIT_USAGE" "missing $option: pass it to sbatch after the script name, or set $variable in the environment or the site config file"
    fi
}

# Print the night to run: the date in America/New_York at the job's first
# start, stored under the state folder so that a requeued job keeps it.
current_night() {
    local pin_file="${GIVEN[--state]}/slurm-jobs/${SLURM_JOB_ID}.date"
    if [[ -s $pin_file ]]; then
        cat "$pin_file"
        return 0
    fi
    mkdir -p "${pin_file%/*}"
    TZ=America/New_York date +%Y-%m-%d | tee "$pin_file"
}

resolve_settings() {
    load_site_config
    NIGHTLY_ARGS=("$@")
    scan_arguments "$@"
    add_from_environment --lake 1
    add_from_environment --state 1
    add_from_environment --out 1
    add_from_environment --config 0
    add_from_environment --date 0
    if [[ -z ${GIVEN[--date]+set} ]]; then
        GIVEN[--date]=$(current_night)
        NIGHTLY_ARGS+=(--date "${GIVEN[--date]}")
    fi
    [[ ${GIVEN[--date]} =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] ||
        fail "$EXIT_USAGE" "invalid --date ${GIVEN[--date]}; expected YYYY-MM-DD"
    [[ -d ${GIVEN[--lake]} ]] || fail "$EXIT_USAGE" "lake folder ${GIVEN[--lake]} not found; fix --lake or FLEETRISK_LAKE"
    mkdir -p "${GIVEN[--state]}" "${GIVEN[--out]}" ||
        fail "$EXIT_USAGE" "cannot create the state or output folder; fix --state/--out"
}

setup_environment() {
    if [[ -n ${FLEETRISK_VENV:-} ]]; then
        PATH="$FLEETRISK_VENV/bin:$PATH"
    fi
    read -r -a PROGRAM <<<"${FLEETRISK_BIN:-fleetrisk}"
    MPI_PLUGIN=${FLEETRISK_MPI:-pmi2}
    # Numba's parallel kernel uses the CPUs of one task; BLAS and OpenMP stay
    # single-threaded so they do not compete with it.
    export NUMBA_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
}

# --- job comment ----------------------------------------------------------

set_comment() {
    scontrol update job="$SLURM_JOB_ID" comment="$1" ||
        log "warning: could not set the job comment to: $1"
}

# Print the run's figures from OUT/DATE/summary.json when this job wrote it.
summary_comment() {
    local summary="${GIVEN[--out]}/${GIVEN[--date]}/summary.json"
    if [[ ! -s $summary ]] || (($(stat -c %Y "$summary") < JOB_STARTED_EPOCH_S)); then
        return 1
    fi
    python3 - "$summary" <<'PYTHON'
import json
import sys

with open(sys.argv[1], encoding="utf-8") as handle:
    summary = json.load(handle)
stages = summary.get("stage_seconds") or {}
stage_text = ",".join(f"{name}:{float(s):.1f}" for name, s in stages.items())
print(
    f"vehicles_total={summary.get('vehicles_total')}"
    f" vehicles_changed={summary.get('vehicles_changed')}"
    f" leads_total={summary.get('leads_total')}"
    f" stage_s={stage_text}"
)
PYTHON
}

# --- steps ----------------------------------------------------------------

forward_signal() {
    local signal=$1
    STOP_SIGNAL=${STOP_SIGNAL:-$signal}
    if [[ -n $STEP_PID ]]; then
        log "received SIG$signal; forwarding it to the running step (srun pid $STEP_PID)"
        kill -s "$signal" "$STEP_PID" 2>/dev/null || true
    else
        log "received SIG$signal between steps"
    fi
}

# run_step NAME COMMAND...: run COMMAND on every task as the step NAME, wait
# for it through forwarded signals and return its exit status.
run_step() {
    local name=$1
    shift
    local shown=() argument
    for argument in "$@"; do
        [[ $argument == *$'\n'* ]] && argument="<inline script>"
        shown+=("$argument")
    done
    log "step $name: ${shown[*]}"
    srun --mpi="$MPI_PLUGIN" --job-name="$name" --ntasks="$SLURM_NTASKS" \
        --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" --kill-on-bad-exit=1 "$@" &
    STEP_PID=$!
    local status
    while true; do
        wait "$STEP_PID"
        status=$?
        # wait returns early, with 128+signal, when a trapped signal arrives.
        if ((status > 128)) && kill -0 "$STEP_PID" 2>/dev/null; then
            continue
        fi
        if ((status > 128)) && [[ -n $STOP_SIGNAL ]]; then
            wait "$STEP_PID" 2>/dev/null
            status=$?
        fi
        break
    done
    STEP_PID=""
    log "step $name exited with status $status"
    return "$status"
}

# The preflight step checks, on every task, that srun connected the ranks
# into one MPI world of SLURM_NTASKS ranks and that the inputs are reachable.
read -r -d '' PREFLIGHT_PY <<'PYTHON'
import os
import sys

from mpi4py import MPI

comm = MPI.COMM_WORLD
expected = int(os.environ["SLURM_NTASKS"])
if comm.Get_size() != expected:
    sys.exit(
        f"preflight: MPI world size is {comm.Get_size()} but SLURM_NTASKS is "
        f"{expected}: srun --mpi={os.environ.get('FLEETRISK_MPI', 'pmi2')} did not "
        "connect the ranks; set FLEETRISK_MPI to a plugin the MPI library supports"
    )
lake, state = sys.argv[1], sys.argv[2]
if not os.path.isdir(lake):
    sys.exit(f"preflight: lake {lake} not found on {MPI.Get_processor_name()}")
if not os.access(state, os.W_OK):
    sys.exit(f"preflight: state {state} not writable on {MPI.Get_processor_name()}")
hosts = comm.gather(MPI.Get_processor_name(), root=0)
if comm.Get_rank() == 0:
    print(f"preflight: {comm.Get_size()} ranks on {len(set(hosts))} nodes", flush=True)
PYTHON

# Finish after the step stopped on a forwarded signal.
stop_after_signal() {
    local status=$1
    if [[ $STOP_SIGNAL == USR1 ]]; then
        log "stopped before the time limit (step status $status); requeueing to resume from the checkpoints"
        set_comment "date=${GIVEN[--date]} state=requeued restarts=${SLURM_RESTART_COUNT:-0}"
        scontrol requeue "$SLURM_JOB_ID" && exit 0
        fail "$EXIT_INTERRUPTED" "scontrol requeue $SLURM_JOB_ID failed; resubmit the job to resume"
    fi
    log "stopped on SIG$STOP_SIGNAL (step status $status)"
    exit "$EXIT_INTERRUPTED"
}

main() {
    [[ -n ${SLURM_JOB_ID:-} ]] || fail "$EXIT_USAGE" "run this script with sbatch"
    trap 'forward_signal USR1' USR1
    trap 'forward_signal TERM' TERM
    resolve_settings "$@"
    setup_environment
    log "night ${GIVEN[--date]}, ${SLURM_NTASKS} tasks x ${NUMBA_NUM_THREADS} CPUs on ${SLURM_JOB_NUM_NODES:-1} nodes, restart ${SLURM_RESTART_COUNT:-0}"
    set_comment "date=${GIVEN[--date]} state=running restarts=${SLURM_RESTART_COUNT:-0}"

    if [[ -n ${FLEETRISK_RESUBMIT:-} && ${SLURM_RESTART_COUNT:-0} == 0 ]]; then
        "$FLEETRISK_RESUBMIT" "$@" || log "warning: $FLEETRISK_RESUBMIT failed; the next night is not queued"
    fi

    local status
    run_step preflight python3 -c "$PREFLIGHT_PY" "${GIVEN[--lake]}" "${GIVEN[--state]}"
    status=$?
    [[ -n $STOP_SIGNAL ]] && stop_after_signal "$status"
    if ((status != 0)); then
        set_comment "date=${GIVEN[--date]} state=preflight-failed exit=$status"
        fail "$status" "preflight failed with status $status"
    fi

    run_step nightly "${PROGRAM[@]}" nightly "${NIGHTLY_ARGS[@]}"
    status=$?
    # The program exits non-zero when a signal stopped it early; a signal
    # that arrives after it finished changes nothing.
    if [[ -n $STOP_SIGNAL ]] && ((status != 0)); then
        stop_after_signal "$status"
    fi

    local figures
    figures=$(summary_comment) || figures="no-summary"
    set_comment "date=${GIVEN[--date]} exit=$status restarts=${SLURM_RESTART_COUNT:-0} $figures"
    exit "$status"
}

main "$@"
