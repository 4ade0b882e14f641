"""The DAG-construction benchmark runs (quick mode: a 5-model study on a fake data root)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_dag_benchmark_quick_mode_plans_every_model_and_test_set():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_dag.py"), "--quick"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # 5 models x 4 test sets: 5 train, 20 embed, 20 evaluate jobs and the shared ones
    assert "5 models x 4 test sets" in result.stdout
    jobs = int(result.stdout.split(" jobs:")[0].rsplit(",", 1)[1])
    assert jobs >= 45
