"""`visionloop serve` follows @champion: swaps under load, refuses bad versions, rides out a
registry that does not answer. Real registry (its own SQLite copy), real uvicorn."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import httpx
import pytest
import torch

from tests.integration.gate.trained import META
from tests.integration.serving.support import MODEL, Server, digit_images, encoded, wait_for
from visionloop.artifacts.bundle import save_bundle
from visionloop.artifacts.prediction_log import read_predictions
from visionloop.models.classifier import load_bundle
from visionloop.promotion.registry import promote, register_candidate, registry_client


class Stream:
    """Clients sending requests back to back until stopped; every answer is kept."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url = url
        self.answers: list[list[tuple[int, str | None]]] = [[] for _ in range(clients)]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]
        self.image = encoded(digit_images(1)[0][0])
        for thread in self._threads:
            thread.start()

    def _client(self, index: int) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                files = {"file": ("digit.png", self.image, "image/png")}
                try:
                    response = client.post(f"{self.url}/v1/predict", files=files)
                except httpx.HTTPError as exc:  # a failed request is a result, not a crash
                    self.answers[index].append((0, repr(exc)))
                    continue
                version = response.json()["model"]["version"] if response.is_success else None
                self.answers[index].append((response.status_code, version))

    def count(self) -> int:
        return sum(len(a) for a in self.answers)

    def versions(self) -> set[str | None]:
        return {version for answers in self.answers for _, version in answers}

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


@pytest.fixture
def server(registry_copy):
    running = Server(registry_copy.params, cwd=registry_copy.root)
    yield running
    code = running.stop()
    print(running.log)  # shown by pytest when the test failed
    assert code == 0


def current(server) -> dict:
    return httpx.get(f"{server.url}/v1/model").json()


def test_a_promotion_during_a_stream_of_requests_fails_none_and_switches_version(
    server, registry_copy
):
    assert current(server)["version"] == "1"
    stream = Stream(server.url)
    try:
        wait_for(lambda: stream.count() >= 40, timeout=60)
        promote(registry_copy.config, "2", "the better model, promoted under load")
        wait_for(lambda: "2" in stream.versions(), timeout=60)
        seen = stream.count()
        wait_for(lambda: stream.count() >= seen + 40, timeout=60)
    finally:
        stream.stop()
    statuses = {status for answers in stream.answers for status, _ in answers}
    assert statuses == {200}, [a for answers in stream.answers for a in answers if a[0] != 200]
    for answers in stream.answers:  # each client: v1 answers, then v2 answers, never back
        versions = [version for _, version in answers]
        assert versions == sorted(versions) and versions[-1] == "2"
    assert current(server)["version"] == "2"
    assert "swapped visionloop-classifier v1 -> visionloop-classifier v2" in server.log
    logged = list(read_predictions(registry_copy.config.serving.prediction_log))
    assert len(logged) == stream.count()  # one line per answered image
    assert {r["version"] for r in logged} == {"1", "2"} and not any(r["stored"] for r in logged)


def register_bundle(registry, folder: Path) -> str:
    """Register a bundle the way a candidate is registered (gate=pending), its version."""
    target = registry.config.train.dir / "model"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(folder, target)
    return register_candidate(registry.config)


def move_champion_by_hand(registry, version: str) -> None:
    """What an operator can do with MLflow directly, outside visionloop's checks."""
    registry_client(registry.config).set_registered_model_alias(MODEL, "champion", version)


def refused(server, version: str) -> str | None:
    entries = current(server)["following"]["refused"]
    return next((e["reason"] for e in entries if e["version"] == version), None)


def test_a_tampered_or_broken_version_is_refused_and_the_old_model_keeps_serving(
    server, registry_copy, tmp_path
):
    import mlflow

    # Tampered: the registered bundle's weights change after registration.
    tampered = register_bundle(registry_copy, registry_copy.bundles["equal"])
    source = registry_client(registry_copy.config).get_model_version(MODEL, tampered).source
    location = mlflow.get_logged_model(source.removeprefix("models:/")).artifact_location
    weights = next(Path(location.removeprefix("file://")).rglob("weights.pt"))
    weights.write_bytes(weights.read_bytes() + b"\0")
    move_champion_by_hand(registry_copy, tampered)
    reason = wait_for(lambda: refused(server, tampered), timeout=60)
    assert "hash" in reason and "bundle_sha256" in reason
    # Broken: a model whose answers are NaN passes integrity but not the smoke prediction.
    module = load_bundle(registry_copy.bundles["good"]).module
    with torch.no_grad():
        module.classifier[-1].bias.fill_(float("nan"))
    broken = register_bundle(registry_copy, save_bundle(tmp_path / "nan", module, META))
    move_champion_by_hand(registry_copy, broken)
    reason = wait_for(lambda: refused(server, broken), timeout=60)
    assert "smoke prediction" in reason
    answer = httpx.post(
        f"{server.url}/v1/predict", files={"file": ("d.png", encoded(digit_images(1)[0][0]))}
    )
    assert answer.status_code == 200 and answer.json()["model"]["version"] == "1"
    assert (
        f"not swapping to v{tampered}" in server.log and f"not swapping to v{broken}" in server.log
    )
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'visionloop_model_swaps_total{outcome="refused"} 2.0' in metrics


def test_an_unreachable_registry_keeps_the_model_and_says_so(server, registry_copy):
    database = registry_copy.root / "mlflow.db"
    saved = database.read_bytes()
    with database.open("r+b") as handle:  # the same file, unreadable as a database
        handle.write(b"\0" * 4096)
    try:
        error = wait_for(lambda: current(server)["following"]["last_error"], timeout=60)
        assert "registry did not answer" in error and "keeping visionloop-classifier v1" in error
        answer = httpx.post(
            f"{server.url}/v1/predict", files={"file": ("d.png", encoded(digit_images(1)[0][0]))}
        )
        assert answer.status_code == 200 and answer.json()["model"]["version"] == "1"
    finally:
        with database.open("r+b") as handle:
            handle.write(saved)
    wait_for(lambda: current(server)["following"]["last_error"] is None, timeout=60)
    assert current(server)["version"] == "1"
