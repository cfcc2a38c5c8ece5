"""Peak resident memory of a training run at the default preset (a separate process)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

_TRAIN_AND_REPORT = """
import json, resource, sys
from metricpose.cli import main
rc = main(json.loads(sys.argv[1]))
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(rc)
"""


def training_peak_mb(steps: int = 30) -> float:
    """Max RSS (MB) of the training process, `--config metric_adv` at the default model and
    batch sizes, on the tiny studio (data.num_workers=0: one process holds everything)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "studio"
        code = (
            "from metricpose.studio.generate import generate, synth_config;"
            f"generate({str(data)!r}, synth_config('tiny'), progress=False)"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
        args = ["train", "--config", "metric_adv", "--data", str(data), "--out", str(Path(tmp) / "run"),
                "--no-progress", "--set", f"train.steps={steps}", "--set", f"train.val_every={steps}",
                "--set", "data.train_subjects=[S1,S5]", "--set", "data.test_subjects=[S9]"]  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", _TRAIN_AND_REPORT, json.dumps(args)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    peak_kb = int(
        next(line for line in done.stdout.splitlines() if line.startswith("PEAK_KB")).split()[1]
    )
    return peak_kb / 1024
