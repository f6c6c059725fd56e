#!/usr/bin/env bash
# Multi-process evaluation with torchrun: bash dist_test.sh CONFIG [GPUS] [tools/eval.py args]
# Environment: GPUS (default 1 or the second argument), NNODES (1), NODE_RANK (0),
# PORT (29500), MASTER_ADDR (127.0.0.1). Without CUDA the processes use gloo on CPU.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: bash dist_test.sh CONFIG [GPUS] [tools/eval.py arguments]" >&2
    exit 2
fi
CONFIG=$1
shift
GPUS=${GPUS:-1}
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    GPUS=$1
    shift
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
ROOT=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python}
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; fi
exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --master_port="$PORT" --nproc_per_node="$GPUS" \
    "$ROOT/tools/eval.py" --config "$CONFIG" --launcher pytorch "$@"
