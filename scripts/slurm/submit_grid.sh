#!/usr/bin/env bash
# Submit a grid as a Slurm job array, one task per cell:
#   submit_grid.sh [--wait] [--throttle K] CONFIG OUT [sbatch options...]
# --throttle K runs at most K cells at once (--array=0-(N-1)%K); --wait blocks until every task has ended,
# exits with the highest task exit code, and prints the table when all succeeded.
# Prints the job id (sbatch --parsable). Resubmitting reruns only the cells without a result.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '2,6s/^# \{0,1\}//p' "$0"; }
wait=0 throttle=""
while (($#)); do
  case $1 in
    --wait) wait=1; shift ;;
    --throttle) throttle="%${2:?--throttle needs a number of cells}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) break ;;
  esac
done
if (($# < 2)); then usage >&2; exit 2; fi
config=$1 out=$2
shift 2
# The tasks may start in another directory (sbatch --chdir); CONFIG is a YAML path or a built-in name.
[[ -f $config ]] && config=$(realpath "$config")
out=$(realpath -m "$out")

count=$(fastervlm eval cells "$config" --count)
if ! [[ $count =~ ^[0-9]+$ ]] || ((count == 0)); then
  echo "error: 'fastervlm eval cells $config --count' printed '$count'; expected a number of cells > 0" >&2
  exit 1
fi
# Slurm does not create the directory of --output; a task whose log it cannot open fails without a trace.
mkdir -p "$out/logs"
args=(--parsable --array="0-$((count - 1))$throttle" --output="$out/logs/%A_%a.out")
if ((wait)); then
  sbatch "${args[@]}" --wait "$@" "$here/eval_grid.sbatch" "$config" "$out" || {
    status=$?
    echo "error: some cells failed (highest exit code $status); their logs are in $out/logs" >&2
    exit "$status"
  }
  fastervlm table "$out"
else
  sbatch "${args[@]}" "$@" "$here/eval_grid.sbatch" "$config" "$out"
fi
