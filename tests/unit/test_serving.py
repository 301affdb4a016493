"""Serving's pure parts: the prediction log, answers, runtime choice, micro-batching, TTA."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from dataclasses import replace
from datetime import date

import numpy as np
import pytest
import torch
from PIL import Image

from visionloop.artifacts import exports
from visionloop.artifacts.bundle import BundleMeta
from visionloop.artifacts.exports import ExportReport, report_from_tags, report_tags
from visionloop.artifacts.prediction_log import (
    FIELDS,
    PredictionLog,
    image_path,
    log_files,
    read_predictions,
)
from visionloop.config import IngestConfig
from visionloop.errors import VisionloopError
from visionloop.models.classifier import Classifier, predict_with
from visionloop.models.zoo import build_model
from visionloop.serving.inputs import rules_as_dict, to_model_image
from visionloop.serving.reasons import BadImage
from visionloop.serving.results import describe, top_k_text
from visionloop.serving.source import LoadedModel, ModelRef, choose_runtime

META = BundleMeta("simple_cnn", ("a", "b", "c"), 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def record(index: int, day: str = "2026-12-01") -> dict:
    return {
        "time": f"{day}T10:00:00.000Z",
        "request_id": f"r{index}",
        "sha256": f"{index:064x}",
        "label": "a",
        "confidence": 0.5,
    }


def test_prediction_log_appends_whole_lines_from_many_threads(tmp_path):
    log = PredictionLog(tmp_path / "log")
    threads = [
        threading.Thread(target=lambda t=t: [log.append([record(t * 100 + i)]) for i in range(50)])
        for t in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = list(read_predictions(tmp_path / "log"))
    assert len(rows) == 400 and len({r["request_id"] for r in rows}) == 400
    assert all(list(r) == list(FIELDS) for r in rows)  # every key, always in this order


def test_prediction_log_splits_by_day_and_skips_a_line_being_written(tmp_path):
    log = PredictionLog(tmp_path)
    log.append([record(1, "2026-11-30"), record(2, "2026-12-01")])
    files = log_files(tmp_path)
    assert [f.name for f in files] == ["2026-11-30.jsonl", "2026-12-01.jsonl"]
    with files[-1].open("a") as handle:
        handle.write('{"time": "2026-12-01T10:00')  # a writer caught mid-line
    assert [r["request_id"] for r in read_predictions(tmp_path)] == ["r1", "r2"]
    since = list(read_predictions(tmp_path, since=date(2026, 12, 1)))
    assert [r["request_id"] for r in since] == ["r2"]


def test_kept_images_are_stored_once_by_content(tmp_path):
    log = PredictionLog(tmp_path / "log", image_store=tmp_path / "images")
    assert log.keep_image("ab" + "0" * 62, "JPEG", b"bytes")
    path = image_path(tmp_path / "images", "ab" + "0" * 62, "JPEG")
    assert (
        path == tmp_path / "images" / "ab" / f"ab{'0' * 62}.jpg" and path.read_bytes() == b"bytes"
    )
    assert not PredictionLog(tmp_path / "log").keep_image("cd" * 32, "PNG", b"x")


def test_answers_list_the_most_probable_first_with_ties_in_class_order():
    answer = describe(np.array([0.2, 0.4, 0.4]), ("a", "b", "c"), 2)
    assert answer == {
        "label": "b",
        "confidence": 0.4,
        "top_k": [{"label": "b", "probability": 0.4}, {"label": "c", "probability": 0.4}],
    }
    assert top_k_text(answer["top_k"]) == "b:0.400000;c:0.400000"


def test_export_report_round_trips_through_version_tags():
    report = ExportReport(
        exports.OK, faithful=True, max_prob_diff=1e-7, check_images=3, int8=exports.USABLE
    )
    tags = report_tags(report)
    assert tags["exports.faithful"] == "true" and all(isinstance(v, str) for v in tags.values())
    assert report_from_tags(tags) == report
    assert report_from_tags({"gate": "passed"}) is None


@pytest.mark.parametrize(
    ("requested", "report", "expected"),
    [
        ("auto", ExportReport(exports.OK, faithful=True, int8=exports.USABLE), "int8"),
        ("auto", ExportReport(exports.OK, faithful=True, int8=exports.REFUSED), "onnx"),
        ("auto", ExportReport(exports.OK, faithful=False, max_prob_diff=0.1), "torch"),
        ("auto", ExportReport(exports.FAILED, "exporter failed"), "torch"),
        ("auto", None, "torch"),
        ("torch", ExportReport(exports.OK, faithful=True, int8=exports.USABLE), "torch"),
        ("onnx", ExportReport(exports.OK, faithful=True, int8=exports.USABLE), "onnx"),
    ],
)
def test_runtime_choice(requested, report, expected):
    ref = ModelRef("models:/m/1", "m", "1")
    assert choose_runtime(requested, ref, report)[0] == expected


@pytest.mark.parametrize(
    ("requested", "report", "message"),
    [
        ("int8", ExportReport(exports.OK, faithful=True, int8=exports.REFUSED), "refused"),
        ("onnx", ExportReport(exports.OK, faithful=False, max_prob_diff=0.1), "differs"),
        ("onnx", None, "no ONNX export"),
    ],
)
def test_a_runtime_that_cannot_be_used_is_refused_with_the_reason(requested, report, message):
    with pytest.raises(VisionloopError, match=message):
        choose_runtime(requested, ModelRef("models:/m/1", "m", "1"), report)


def png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=options.pop("format", "PNG"), **options)
    return buffer.getvalue()


def test_model_input_follows_ingest_rules_and_the_resize_rule():
    rules = IngestConfig(max_pixels=10_000)
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 10, 20))  # a blue band on the left, cropped away
    pixels = to_model_image(png(wide), 8, "crop", rules).pixels
    assert pixels.shape == (8, 8, 3) and (pixels[..., 0] > 200).all()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    tall = Image.new("RGB", (20, 40), (0, 255, 0))
    assert to_model_image(png(tall, format="JPEG", exif=exif), 8, "pad", rules).screened.width == 40
    for data, reason in [
        (png(Image.new("RGB", (200, 100))), "decompression_bomb"),
        (png(Image.new("RGB", (4, 4))), "too_small"),
        (png(Image.new("RGB", (9, 9)), format="GIF"), "format_not_allowed"),
        (b"", "zero_bytes"),
    ]:
        with pytest.raises(BadImage) as info:
            to_model_image(data, 8, "crop", rules)
        assert info.value.reason == reason
    assert IngestConfig(**rules_as_dict(rules)).max_pixels == 10_000


def tiny_model(tta: str = "none") -> Classifier:
    torch.manual_seed(0)
    meta = replace(META, tta=tta)
    return Classifier(build_model("simple_cnn", num_classes=3, image_size=8), meta)


def test_flip_tta_averages_the_image_and_its_mirror_in_every_runtime():
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    plain, flipping = tiny_model(), tiny_model("flip")
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    expected = (plain.predict_proba(images) + plain.predict_proba(mirrored)) / 2
    assert np.allclose(flipping.predict_proba(images), expected, atol=1e-6)
    # The same rule applies to any logits function (this is what ONNX and int8 go through).
    through_rule = predict_with(flipping.module, images, flipping.meta, batch_size=2)
    assert np.allclose(through_rule, expected, atol=1e-6)


def test_micro_batcher_serves_concurrent_requests_in_shared_forward_passes():
    from visionloop.serving.batcher import MicroBatcher
    from visionloop.serving.metrics import Metrics
    from visionloop.serving.runtimes import TorchRuntime

    classifier = tiny_model()
    model = LoadedModel(ModelRef("m", "m", "1"), TorchRuntime(classifier), "0" * 64, None, "")
    images = np.random.default_rng(1).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    metrics = Metrics()

    async def requests() -> list[np.ndarray]:
        batcher = MicroBatcher(max_batch=8, max_wait_ms=200, metrics=metrics)
        await batcher.start()

        async def one(index: int) -> np.ndarray:
            with batcher.expecting():
                await asyncio.sleep(0.01 * (index % 3))  # reading and decoding
            return await batcher.predict(model, images[index : index + 1])

        try:
            return await asyncio.gather(*(one(i) for i in range(12)))
        finally:
            await batcher.stop()

    answers = np.concatenate(asyncio.run(requests()))
    assert np.allclose(answers, classifier.predict_proba(images), atol=1e-6)
    passes = metrics.registry.get_sample_value("visionloop_batch_images_count")
    assert metrics.registry.get_sample_value("visionloop_batch_images_sum") == 12
    assert passes < 12  # requests on their way were waited for and shared a forward pass


def test_prediction_log_lines_are_plain_json(tmp_path):
    log = PredictionLog(tmp_path)
    log.append([{**record(1), "top_k": [{"label": "a", "probability": 0.5}], "stored": False}])
    line = next(iter(log_files(tmp_path))).read_text()
    assert json.loads(line)["top_k"][0]["label"] == "a" and line.endswith("\n")


def test_the_server_socket_is_a_tcp_socket_so_asyncio_disables_nagle():
    # asyncio turns on TCP_NODELAY only for sockets whose proto is TCP; without it every
    # keep-alive answer waited 40 ms for the client's delayed ACK (bench/serve.py).
    import socket

    from visionloop.serving.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] > 0
    finally:
        sock.close()
