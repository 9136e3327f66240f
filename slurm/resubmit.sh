#!/bin/bash
# Queue the fleetrisk nightly job for 02:00 America/New_York.
#
#   slurm/resubmit.sh [options of fleetrisk nightly]
#       Self-resubmitting fallback for clusters without scrontab: queue the
#       next night with sbatch --begin at its 02:00 start. That job queues the
#       night after when it first starts (FLEETRISK_RESUBMIT), so the chain
#       goes on by itself; --dependency=singleton keeps two nights from
#       running at the same time.
#   slurm/resubmit.sh --cron [options of fleetrisk nightly]
#       For slurm/nightly.scrontab: submit tonight's job now when the New York
#       clock reads 02:xx (03:xx on the spring-forward day, which has no
#       02:00), and do nothing otherwise.
#
# A --date option is replaced by the night being queued. --dry-run prints the
# sbatch command instead of running it. FLEETRISK_NOW_EPOCH_S replaces the
# current time, for tests.
set -euo pipefail

readonly ZONE=America/New_York
readonly JOB_NAME=fleetrisk-nightly
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NIGHTLY_SCRIPT=${FLEETRISK_NIGHTLY_SCRIPT:-$HERE/nightly.sh}
NOW_S=${FLEETRISK_NOW_EPOCH_S:-$(date +%s)}

mode=chain
dry_run=0
args=()
skip_value=0
for argument in "$@"; do
    if ((skip_value)); then
        skip_value=0
        continue
    fi
    case $argument in
    --cron) mode=cron ;;
    --dry-run) dry_run=1 ;;
    --date) skip_value=1 ;;
    --date=*) ;;
    *) args+=("$argument") ;;
    esac
done

# Print the epoch seconds of the night's start on DAY (YYYY-MM-DD): 02:00 in
# New York, or 03:00 when the clocks skip 02:00 that day.
night_start_s() {
    local day=$1
    TZ=$ZONE date -d "$day 02:00" +%s 2>/dev/null || TZ=$ZONE date -d "$day 03:00" +%s
}

run_sbatch() {
    # The SLURM_* variables of a calling job would leak into the new one.
    local name
    for name in $(compgen -v SLURM_ || true); do
        unset "$name"
    done
    if ((dry_run)); then
        printf '%q ' sbatch "$@"
        printf '\n'
    else
        sbatch "$@"
    fi
}

today=$(TZ=$ZONE date -d "@$NOW_S" +%Y-%m-%d)

if [[ $mode == cron ]]; then
    start_s=$(night_start_s "$today")
    start_hour=$(TZ=$ZONE date -d "@$start_s" +%H)
    hour=$(TZ=$ZONE date -d "@$NOW_S" +%H)
    if [[ $hour != "$start_hour" ]]; then
        echo "resubmit.sh: $(TZ=$ZONE date -d "@$NOW_S" '+%H:%M %Z') in $ZONE is not the night's start hour ($start_hour); nothing to submit"
        exit 0
    fi
    run_sbatch --dependency=singleton "$NIGHTLY_SCRIPT" "${args[@]}" --date "$today"
    exit 0
fi

start_s=$(night_start_s "$today")
night=$today
if ((NOW_S >= start_s)); then
    night=$(TZ=$ZONE date -d "$today 12:00 +1 day" +%Y-%m-%d)
    start_s=$(night_start_s "$night")
fi
# sbatch reads --begin in the local time zone of the machine it runs on.
begin_local=$(date -d "@$start_s" +%Y-%m-%dT%H:%M:%S)
if ((!dry_run)) && squeue --noheader --name="$JOB_NAME" --states=PENDING --format=%S |
    grep -qx "$begin_local"; then
    echo "resubmit.sh: night $night is already queued for $begin_local; nothing to submit"
    exit 0
fi
run_sbatch --begin="$begin_local" --dependency=singleton \
    --export="ALL,FLEETRISK_RESUBMIT=$HERE/resubmit.sh" \
    "$NIGHTLY_SCRIPT" "${args[@]}" --date "$night"
