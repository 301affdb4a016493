"""`visionloop serve` on a real uvicorn, loopback port, following the real registry's champion."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import re
import threading

import httpx
import numpy as np
import pytest

from tests.integration.serving.support import MODEL, Server, digit_images, encoded
from visionloop.artifacts.prediction_log import image_path, read_predictions
from visionloop.serving.inputs import image_rules, to_model_image
from visionloop.serving.source import load_model, resolve


@pytest.fixture(scope="module")
def server(served_registry):
    running = Server(served_registry.params, cwd=served_registry.root)
    yield running
    assert running.stop() == 0, running.log


@pytest.fixture(scope="module")
def champion(served_registry):
    config = served_registry.config
    return load_model(config, resolve(config, f"models:/{MODEL}@champion"))


def expected(champion, files: list[bytes], config) -> np.ndarray:
    """What the champion answers in process for these files, fed by the same rules."""
    rules = image_rules(config)
    pixels = [to_model_image(data, 16, "crop", rules).pixels for data in files]
    return champion.runtime.predict_proba(np.stack(pixels))


def test_multipart_json_and_raw_bodies_get_the_champions_answers(server, champion, served_registry):
    images, _ = digit_images(3)
    files = [
        encoded(images[0]),
        encoded(images[1], "JPEG", size=(300, 200), mode="L"),
        encoded(images[2], size=(50, 50), mode="RGBA"),
    ]
    probs = expected(champion, files, served_registry.config)
    upload = [
        ("files", (f"f{i}.img", data, "application/octet-stream")) for i, data in enumerate(files)
    ]
    by_form = httpx.post(f"{server.url}/v1/predict", files=upload, params={"top_k": 3})
    payload = {"images": [base64.b64encode(d).decode() for d in files], "probabilities": True}
    by_json = httpx.post(f"{server.url}/v1/predict", json=payload)
    by_body = httpx.post(
        f"{server.url}/v1/predict", content=files[1], headers={"Content-Type": "image/jpeg"}
    )
    for response in (by_form, by_json, by_body):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == {"name": MODEL, "version": "1", "runtime": champion.runtime.name}
        assert response.headers["x-request-id"] == body["request_id"]
    form, as_json = by_form.json()["predictions"], by_json.json()["predictions"]
    assert [p["name"] for p in form] == ["f0.img", "f1.img", "f2.img"]
    for answer, row in zip(form, probs, strict=True):
        assert answer["label"] == str(row.argmax())
        assert abs(answer["confidence"] - row.max()) < 1e-5
        assert [t["label"] for t in answer["top_k"]] == [str(i) for i in np.argsort(-row)[:3]]
    assert all(len(p["top_k"]) == 5 for p in as_json)  # serving.top_k
    assert np.allclose([list(p["probabilities"].values()) for p in as_json], probs, atol=1e-5)
    assert by_body.json()["predictions"][0]["label"] == form[1]["label"]


def test_model_endpoint_health_and_metrics(server, champion):
    model = httpx.get(f"{server.url}/v1/model").json()
    assert (model["name"], model["version"], model["alias"]) == (MODEL, "1", "champion")
    assert model["classes"] == [str(d) for d in range(10)] and model["input_size"] == [16, 16]
    assert model["runtime"] == champion.runtime.name and model["bundle_sha256"]
    assert model["exports"]["onnx"] == "ok" and model["exports"]["argmax_agreement"] == 1.0
    assert model["following"]["follows"] == f"models:/{MODEL}@champion"
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
    metrics = httpx.get(f"{server.url}/metrics").text
    assert re.search(r'visionloop_model_info\{.*version="1".*\} 1\.0', metrics)
    assert 'visionloop_request_seconds_bucket{endpoint="/v1/model"' in metrics


def png_of_side(side: int) -> bytes:
    return encoded(digit_images(1)[0][0], size=(side, side))


def broken_png() -> bytes:
    data = bytearray(png_of_side(64))
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


def multipart(*blobs: bytes) -> dict:
    return {"files": [("file", (f"x{i}.png", b, "image/png")) for i, b in enumerate(blobs)]}


BAD_REQUESTS = {
    "corrupt": (lambda: multipart(broken_png()), 400, "corrupt"),
    "truncated": (lambda: multipart(png_of_side(200)[:400]), 400, "truncated"),
    "not_an_image": (lambda: multipart(b"%PDF-1.4 not an image"), 415, "not_an_image"),
    "zero_bytes": (lambda: multipart(b""), 400, "zero_bytes"),
    "bomb": (lambda: multipart(png_of_side(600)), 413, "decompression_bomb"),
    "oversize": (
        lambda: {"content": b"\0" * 400_000, "headers": {"Content-Type": "image/png"}},
        413,
        "request_too_large",
    ),
    "too_many": (lambda: multipart(*[png_of_side(16)] * 5), 400, "too_many_images"),
    "no_files": (lambda: {"files": {"field": (None, "value")}}, 400, "empty_request"),
    "empty_json": (lambda: {"json": {"images": []}}, 400, "empty_request"),
    "bad_json": (
        lambda: {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        400,
        "bad_json",
    ),
    "bad_base64": (lambda: {"json": {"images": ["@@not-base64@@"]}}, 400, "bad_base64"),
    "bad_top_k": (
        lambda: {"json": {"images": [base64.b64encode(png_of_side(16)).decode()], "top_k": 0}},
        400,
        "bad_parameter",
    ),
    "media_type": (
        lambda: {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_gets_a_reason_code_and_the_server_keeps_serving(server, case):
    make, status, reason = BAD_REQUESTS[case]
    response = httpx.post(f"{server.url}/v1/predict", **make())
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["reason"] == reason and error["message"]
    for leak in ("Traceback", "site-packages", "/tmp/", 'File "'):
        assert leak not in response.text
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_unknown_routes_and_methods_answer_json(server):
    missing = httpx.get(f"{server.url}/v2/predict")
    assert missing.status_code == 404 and missing.json()["error"]["reason"] == "not_found"
    wrong = httpx.get(f"{server.url}/v1/predict")
    assert wrong.status_code == 405 and wrong.json()["error"]["reason"] == "method_not_allowed"


def test_concurrent_requests_are_micro_batched(server, champion, served_registry):
    def passes() -> float:
        text = httpx.get(f"{server.url}/metrics").text
        return float(re.search(r"visionloop_batch_images_count (\S+)", text).group(1))

    images, _ = digit_images(24)
    files = [encoded(image) for image in images]
    want = [str(i) for i in expected(champion, files, served_registry.config).argmax(1)]
    # A burst: 12 clients on open connections, released together, two requests each. Whether
    # requests meet in a batch depends on when they arrive, so a loaded machine gets three
    # bursts to show it once; every answer must be right in each.
    for _ in range(3):
        before = passes()
        labels = burst(server.url, files, clients=12)
        assert labels == want
        if passes() - before < len(files):  # some forward passes served several requests
            return
    pytest.fail("three bursts of 24 concurrent requests never shared a forward pass")


def burst(url: str, files: list[bytes], clients: int) -> list[str]:
    start = threading.Barrier(clients)

    def client(index: int) -> list[tuple[int, str]]:
        with httpx.Client(base_url=url, timeout=60) as http:
            http.get("/healthz")  # connected before the burst
            start.wait(timeout=60)  # a client that never connects fails the burst
            mine = range(index, len(files), clients)
            headers = {"Content-Type": "image/png"}
            answers = [http.post("/v1/predict", content=files[i], headers=headers) for i in mine]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        labels = [a.json()["predictions"][0]["label"] for a in answers]
        return list(zip(mine, labels, strict=True))

    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        results = [pair for pairs in pool.map(client, range(clients)) for pair in pairs]
    return [label for _, label in sorted(results)]


def test_predictions_are_logged_and_images_kept_by_content(server, served_registry):
    data = encoded(digit_images(10)[0][9], size=(33, 21))
    answer = httpx.post(f"{server.url}/v1/predict", files=multipart(data)["files"]).json()
    request_id, prediction = answer["request_id"], answer["predictions"][0]
    serving = served_registry.config.serving
    logged = [r for r in read_predictions(serving.prediction_log) if r["request_id"] == request_id]
    assert len(logged) == 1
    record = logged[0]
    assert (record["sha256"], record["label"], record["confidence"]) == (
        prediction["sha256"],
        prediction["label"],
        prediction["confidence"],
    )
    assert (record["model"], record["version"], record["width"], record["height"]) == (
        MODEL,
        "1",
        33,
        21,
    )
    assert record["format"] == "PNG" and record["stored"] is True
    assert image_path(serving.image_store, record["sha256"], "PNG").read_bytes() == data
    assert json.dumps(record)  # plain JSON all the way down
