#!/usr/bin/env bash
# The CUDA check, for a machine with an NVIDIA GPU and metricpose importable by $PYTHON:
# the tests that train, resume, predict, export and retrieve (precision=auto is 16-mixed
# there), then the default demo as a user runs it (one training at a time on the GPU).
# Writes its logs, the demo's results.json and report.md and every run's train_summary.json
# under $CHECK_OUT (default runs/gpu_check); the demo's own folder (1.2 GB) is removed.
set -u
PYTHON=${PYTHON:-python3}
CHECK_OUT=${CHECK_OUT:-runs/gpu_check}
TEST_SECONDS=${TEST_SECONDS:-150}
DEMO_SECONDS=${DEMO_SECONDS:-330}
PYTEST_ARGS=${PYTEST_ARGS:-}  # e.g. "-n 4" where pytest-xdist is installed
mkdir -p "$CHECK_OUT"
export PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    nproc
    "$PYTHON" -c "import torch, lightning, faiss; print('torch', torch.__version__, 'lightning', lightning.__version__, 'faiss', faiss.__version__, 'cuda', torch.cuda.is_available())"
    "$PYTHON" -c "from metricpose.train import _trainer_options; from metricpose.config import load_config; print('precision=auto ->', _trainer_options(load_config())['precision'])"
} 2>&1 | tee "$CHECK_OUT/machine.txt"

began=$(date +%s)
timeout "$TEST_SECONDS" "$PYTHON" -m pytest -q -p no:cacheprovider -o addopts= -ra $PYTEST_ARGS \
    tests/test_train.py tests/test_inference.py tests/test_retrieval.py tests/test_pseudo_labels.py \
    >"$CHECK_OUT/pytest.log" 2>&1
echo "pytest exit $? after $(($(date +%s) - began)) s" | tee -a "$CHECK_OUT/machine.txt"
tail -n 30 "$CHECK_OUT/pytest.log"

nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 \
    >"$CHECK_OUT/gpu_use.csv" 2>/dev/null &
sampler=$!
began=$(date +%s)
demo_dir=$(mktemp -d)/demo
timeout "$DEMO_SECONDS" "$PYTHON" -m metricpose.cli demo --out "$demo_dir" --no-progress \
    >"$CHECK_OUT/demo.log" 2>&1
echo "demo exit $? after $(($(date +%s) - began)) s" | tee -a "$CHECK_OUT/machine.txt"
kill "$sampler" 2>/dev/null
grep "demo\]" "$CHECK_OUT/demo.log" | tail -n 30
cp "$demo_dir"/results.json "$demo_dir"/report.md "$CHECK_OUT"/ 2>/dev/null
"$PYTHON" - "$demo_dir" "$CHECK_OUT/train_summaries.json" <<'EOF'
import json, sys
from pathlib import Path
runs = Path(sys.argv[1]) / "runs"
summaries = {
    p.parent.name: {k: v for k, v in json.loads(p.read_text()).items() if k != "subjects"}
    for p in sorted(runs.glob("*/train_summary.json"))
}
Path(sys.argv[2]).write_text(json.dumps(summaries, indent=1))
print(json.dumps(summaries, indent=1))
EOF
rm -rf "$(dirname "$demo_dir")"
