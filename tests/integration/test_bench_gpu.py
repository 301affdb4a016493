"""bench/gpu.py is not dead code: it runs on a CPU (`--device cpu --quick`), and on a GPU
when one is present (marker `gpu`; the figures themselves go in docs/training.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "gpu.py"


def run_bench(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def check(result: dict, sizes: list[int]) -> None:
    assert [run["size"] for run in result["runs"]] == sizes
    for run in result["runs"]:
        for loop in ("ours", "naive"):
            assert run[loop]["images_per_s"] > 0 and 0 < run[loop]["busy"] <= 1.0001
        assert run["speedup"] == pytest.approx(
            run["ours"]["images_per_s"] / run["naive"]["images_per_s"]
        )


def test_the_gpu_bench_runs_its_both_loops_on_a_cpu():
    result = run_bench("--device", "cpu", "--quick")
    assert result["device"].startswith("cpu")
    check(result, [32])


def test_without_cuda_it_says_so_and_exits_0():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0 and "no CUDA device" in done.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_gpu_bench_on_cuda():
    result = run_bench("--device", "cuda", "--quick", "--sizes", "64", "--batch", "64")
    check(result, [64])
    assert result["runs"][0]["ours"]["amp"] == "bf16"
