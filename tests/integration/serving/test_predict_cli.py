"""`visionloop predict` on real files against the real registry: good, broken and odd inputs."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.helpers import run_cli
from tests.integration.serving.support import MODEL, digit_images, encoded
from visionloop.cli import cli
from visionloop.serving.inputs import image_rules, to_model_image
from visionloop.serving.source import load_model, resolve


def flipped(data: bytes) -> bytes:
    """One byte of the compressed pixel data inverted: the stream no longer decodes."""
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0xFF
    return bytes(broken)


def write_inputs(folder, images: np.ndarray) -> dict[str, np.ndarray | None]:
    """A folder like a user's: photos of several sizes, modes and formats, an EXIF-rotated
    JPEG, a zip, broken files and OS litter. Path -> the image it holds (None: broken)."""
    files: dict[str, bytes] = {
        "a/big.png": encoded(images[0], size=(320, 240)),
        "a/grey.jpg": encoded(images[1], "JPEG", size=(64, 64), mode="L"),
        "a/alpha.png": encoded(images[2], mode="RGBA"),
        "b/small.bmp": encoded(images[3], "BMP"),
        "b/deep/plain.webp": encoded(images[4], "WEBP", size=(48, 48)),
        "broken/corrupt.png": flipped(encoded(images[5], size=(64, 64))),
        "broken/truncated.png": encoded(images[5], size=(200, 200))[:300],
        "broken/notes.txt": b"not an image at all\n",
        "broken/empty.png": b"",
        "broken/tiny.png": encoded(images[6], size=(4, 4)),  # below ingest's min_side
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
    }
    rotated = io.BytesIO()
    upright = Image.fromarray(images[7])
    exif = upright.getexif()
    exif[0x0112] = 6  # stored rotated 90 degrees; the tag says how to turn it back
    upright.transpose(Image.Transpose.ROTATE_90).save(rotated, format="JPEG", exif=exif)
    files["a/rotated.jpg"] = rotated.getvalue()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("x/member.png", encoded(images[8]))
        zipped.writestr("x/junk.bin", b"junk")
    files["batch.zip"] = archive.getvalue()
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


def test_predict_a_folder_of_good_broken_and_odd_files(served_registry, tmp_path):
    images, _ = digit_images(9)
    folder = tmp_path / "photos"
    files = write_inputs(folder, images)
    output = tmp_path / "preds.csv"
    done = run_cli(
        "--params", str(served_registry.params), "predict", str(folder), "-o", str(output)
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    rows = {row["path"]: row for row in csv.DictReader(output.open())}
    member = f"{folder / 'batch.zip'}!/x/member.png"
    expected_paths = {str(folder / n) for n in files if n not in (".DS_Store", "batch.zip")}
    assert set(rows) == expected_paths | {member, f"{folder / 'batch.zip'}!/x/junk.bin"}
    errors = {path.split("/")[-1]: row["error"] for path, row in rows.items() if row["error"]}
    assert errors == {
        "corrupt.png": "corrupt",
        "truncated.png": "truncated",
        "notes.txt": "not_an_image",
        "empty.png": "zero_bytes",
        "tiny.png": "too_small",
        "junk.bin": "not_an_image",
    }
    # The good rows hold what the champion says when fed by the same rules, in process.
    config = served_registry.config
    model = load_model(config, resolve(config, f"models:/{MODEL}@champion"))
    good = {path: row for path, row in rows.items() if not row["error"]}
    data = [
        files[p.removeprefix(str(folder) + "/")] if "!/" not in p else encoded(images[8])
        for p in good
    ]
    pixels = np.stack([to_model_image(d, 16, "crop", image_rules(config)).pixels for d in data])
    probs = model.runtime.predict_proba(pixels)
    for row, p in zip(good.values(), probs, strict=True):
        assert row["label"] == str(p.argmax()) and abs(float(row["confidence"]) - p.max()) < 1e-5
        assert (row["model"], row["version"], row["runtime"]) == (MODEL, "1", model.runtime.name)
        assert row["top_k"].split(";")[0].split(":")[0] == row["label"]
        assert len(row["top_k"].split(";")) == 5 and len(row["sha256"]) == 64
    assert "predicted 7 of 13 files" in done.stderr and "could not be predicted" in done.stderr


def test_predict_writes_json_and_jsonl_and_takes_globs_and_options(served_registry, tmp_path):
    images, labels = digit_images(6)
    folder = tmp_path / "digits"
    folder.mkdir()
    for index, image in enumerate(images):
        (folder / f"digit{index}.png").write_bytes(encoded(image, size=(40, 40)))
    runner = CliRunner()
    params = ["--params", str(served_registry.params)]
    out_json, out_jsonl = tmp_path / "p.json", tmp_path / "p.jsonl"
    first = runner.invoke(
        cli, [*params, "predict", str(folder / "digit*.png"), "-o", str(out_json), "--top-k", "2"]
    )
    assert first.exit_code == 0, first.output
    rows = json.loads(out_json.read_text())
    assert [r["path"].split("/")[-1] for r in rows] == [f"digit{i}.png" for i in range(6)]
    assert all(len(r["top_k"]) == 2 and r["top_k"][0]["label"] == r["label"] for r in rows)
    options = ["--runtime", "torch", "--model", f"models:/{MODEL}/2", "-q"]
    second = runner.invoke(cli, [*params, "predict", str(folder), "-o", str(out_jsonl), *options])
    assert second.exit_code == 0, second.output
    lines = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert {(r["version"], r["runtime"]) for r in lines} == {("2", "torch")}
    # v2 is the good model: it gets these six right.
    assert [r["label"] for r in lines] == [str(label) for label in labels]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", f"models:/{MODEL}/99"], f"{MODEL} has no version 99"),
        (["--model", f"models:/{MODEL}@nobody"], f"{MODEL} has no @nobody version yet"),
        (["--model", "no/such/folder"], "neither a bundle folder"),
        (["-o", "preds.xlsx"], "unknown output format"),
        (["--runtime", "int8", "--model", "BUNDLE"], "int8 needs a registered version"),
    ],
)
def test_predict_refuses_a_bad_model_or_output_with_one_line(
    served_registry, tmp_path, arguments, message
):
    (tmp_path / "one.png").write_bytes(encoded(digit_images(1)[0][0]))
    arguments = [str(served_registry.bundles["weak"]) if a == "BUNDLE" else a for a in arguments]
    result = CliRunner().invoke(
        cli, ["--params", str(served_registry.params), "predict", str(tmp_path), *arguments]
    )
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_predict_refuses_a_path_that_does_not_exist(served_registry, tmp_path):
    result = CliRunner().invoke(
        cli, ["--params", str(served_registry.params), "predict", str(tmp_path / "nope*.jpg")]
    )
    assert result.exit_code == 1 and "no such file or folder" in result.output


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (f"models:/{MODEL}/99", f"{MODEL} has no version 99"),
        ("models:/nobody@champion", "nobody has no @champion version yet"),
    ],
)
def test_serve_refuses_a_model_that_is_not_there_before_opening_a_port(
    served_registry, model, message
):
    result = CliRunner().invoke(
        cli, ["--params", str(served_registry.params), "serve", "--model", model, "--port", "0"]
    )
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
