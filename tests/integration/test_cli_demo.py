import hashlib
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from tests.helpers import REPO_PARAMS, run_cli

HEAVY_MODULES = ("torch", "torchvision", "prefect", "mlflow", "great_expectations", "dvc")


def content_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_help_and_version_exit_0():
    help_result = run_cli("--help")
    assert help_result.returncode == 0
    assert "data" in help_result.stdout
    version_result = run_cli("--version")
    assert version_result.returncode == 0
    assert version_result.stdout.startswith("visionloop, version ")


def test_help_does_not_import_heavy_libraries():
    import subprocess

    code = (
        "import sys\n"
        "from visionloop.cli import cli\n"
        "for args in (['--help'], ['data', '--help'], ['data', 'demo', '--help']):\n"
        "    try:\n"
        "        cli.main(args, prog_name='visionloop')\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print([m for m in {HEAVY_MODULES!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_data_demo_writes_all_digits_as_decodable_pngs_deterministically(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        result = run_cli("--params", str(REPO_PARAMS), "data", "demo", "--out", str(out))
        assert result.returncode == 0, result.stderr

    drops = sorted(p.name for p in first.iterdir())
    assert drops == ["digits-001", "digits-002", "digits-003"]

    files = sorted(first.rglob("*.png"))
    per_class = Counter(p.parent.name for p in files)
    expected = Counter(str(t) for t in load_digits().target)
    assert per_class == expected and len(per_class) == 10

    for path in files:
        with Image.open(path) as image:
            image.load()
            assert image.size == (32, 32) and image.format == "PNG"

    # the initial drop holds most of the images, every drop holds every class
    sizes = [len(list((first / d).rglob("*.png"))) for d in drops]
    assert sizes[0] > 0.7 * len(files) and all(s > 0 for s in sizes)
    assert all(len([c for c in (first / d).iterdir()]) == 10 for d in drops)

    assert content_hashes(first) == content_hashes(second)


def test_demo_upscaling_keeps_the_digit(tmp_path):
    """The upscaled image, shrunk back, matches the original 8x8 digit closely."""
    result = run_cli("--params", str(REPO_PARAMS), "data", "demo", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    path = next((tmp_path / "digits-001" / "3").glob("*.png"))
    index = int(path.stem.split("-")[1])
    original = load_digits().images[index] * (255 / 16)
    with Image.open(path) as image:
        small = np.asarray(image.resize((8, 8), Image.Resampling.BOX), dtype=float)
    assert np.abs(small - original).mean() < 20
