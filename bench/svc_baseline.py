"""The same-split SVC figure: scikit-learn's SVC on a project's own leakage-safe split.

    python bench/svc_baseline.py PROJECT_DIR

The protocol of the shared datasets' READMEs (SVC, C=10, standardised, on 32x32 greyscale
pixels of the EXIF-upright image, the whole frame resized), fitted on the images the model
may learn from (train + val, 85% with the default fractions, like the READMEs' 85/15 split)
and scored on the project's test split: the images the model is scored on, so the two
figures are paired. Reads the split table and the raw store (visionloop.artifacts), decodes
with visionloop.images (the rule ingest and prepare use). Also prints the RGB variant.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from visionloop.artifacts import raw_store  # noqa: E402
from visionloop.artifacts.split_table import read_split  # noqa: E402
from visionloop.images import load_for_model  # noqa: E402

SIDE = 32
GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as Pillow's "L"


def same_split_svc(project: Path) -> dict[str, float | int]:
    """Test top-1 of the SVC on grey and on RGB pixels; fitted on train+val."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rows = [row for row in read_split(project / "data" / "splits") if row.split != "excluded"]
    raw = project / "data" / "raw"
    members = raw_store.stored_members(raw, [row.sha256 for row in rows])
    stored = {  # each image's bytes, read from its drop's shard
        member.sha256: data
        for member, data in raw_store.read_members(raw, raw_store.reading_order(members.values()))
    }
    with ThreadPoolExecutor(4) as pool:
        images = np.stack(
            list(pool.map(lambda r: load_for_model(stored[r.sha256], SIDE, "stretch"), rows))
        )
    labels = np.array([row.label for row in rows])
    fit = np.array([row.split in ("train", "val") for row in rows])
    test = np.array([row.split == "test" for row in rows])
    result: dict[str, float | int] = {"fit_images": int(fit.sum()), "test_images": int(test.sum())}
    pixels = images.astype(np.float32) / 255.0
    features = {
        "grey": (pixels @ GREY).reshape(len(rows), -1),
        "rgb": pixels.reshape(len(rows), -1),
    }
    for name, x in features.items():
        model = make_pipeline(StandardScaler(), SVC(C=10)).fit(x[fit], labels[fit])
        result[f"svc_{name}_top1"] = float((model.predict(x[test]) == labels[test]).mean())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, help="a project folder after `dvc repro`")
    args = parser.parse_args()
    print(json.dumps(same_split_svc(args.project), indent=2))


if __name__ == "__main__":
    main()
