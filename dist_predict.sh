#!/usr/bin/env bash
# Multi-process predict with torchrun: bash dist_predict.sh [GPUS] [segearth-ov predict args]
# Inputs are split across the processes (one GPU each when CUDA is present, else CPU); each
# writes its own outputs, and process 0 writes the run's manifest.json and index.json.
# Environment: GPUS (default 1 or the first argument), NNODES (1), NODE_RANK (0),
# PORT (29500), MASTER_ADDR (127.0.0.1).
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: bash dist_predict.sh [GPUS] INPUTS... --classes ... --out FOLDER [options]" >&2
    exit 2
fi
GPUS=${GPUS:-1}
if [[ $1 =~ ^[0-9]+$ ]]; then
    GPUS=$1
    shift
fi
ROOT=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python}
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; fi
# Each process leaves its exit status in $status.<rank> and ends with 0, so a failed input
# is reported in one line rather than by torchrun's traceback; this script exits with the
# highest status (a process that crashed still fails torchrun itself).
status=$(mktemp)
trap 'rm -f "$status" "$status".*' EXIT
SEGEARTH_OV_EXIT_FILE=$status "$PYTHON" -m torch.distributed.run --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" --nproc_per_node="$GPUS" \
    -m segearth_ov.apis.cli predict "$@"
code=0
for file in "$status".*; do
    [ -f "$file" ] || continue
    rank_code=$(cat "$file")
    if [ "$rank_code" -gt "$code" ]; then code=$rank_code; fi
done
exit "$code"
