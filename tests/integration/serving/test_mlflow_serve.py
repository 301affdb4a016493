"""The registered champion behind MLflow's own scoring server: `mlflow models serve`."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.serving.support import MODEL, digit_images, encoded
from tests.project import pipeline_env
from visionloop.serving.inputs import image_rules, to_model_image
from visionloop.serving.source import load_model, resolve


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(served_registry):
    port = free_port()
    env = dict(pipeline_env(), MLFLOW_TRACKING_URI=served_registry.config.registry.tracking_uri)
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "models", "serve", "-m", f"models:/{MODEL}@champion"]
    process = subprocess.Popen(
        [*command, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=served_registry.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    assert process.poll() is None, "mlflow models serve exited"
    yield url
    process.terminate()
    process.wait(timeout=60)


def test_both_json_forms_get_label_confidence_top_k_and_probabilities(
    mlflow_server, served_registry
):
    images, _ = digit_images(3)
    files = [encoded(images[0]), encoded(images[1], "JPEG", size=(120, 90)), encoded(images[2])]
    text = [base64.b64encode(data).decode() for data in files]
    split = {"dataframe_split": {"columns": ["image"], "data": [[t] for t in text]}}
    inputs = {"inputs": {"image": text}, "params": {"top_k": 2}}
    config = served_registry.config
    torch_model = load_model(config, resolve(config, f"models:/{MODEL}@champion"), "torch")
    pixels = np.stack([to_model_image(d, 16, "crop", image_rules(config)).pixels for d in files])
    probs = torch_model.runtime.predict_proba(pixels)
    for payload, top_k in ((split, 5), (inputs, 2)):
        response = httpx.post(f"{mlflow_server}/invocations", json=payload, timeout=60)
        assert response.status_code == 200, response.text
        rows = response.json()["predictions"]
        assert [r["label"] for r in rows] == [str(i) for i in probs.argmax(1)]
        for row, expected in zip(rows, probs, strict=True):
            assert abs(row["confidence"] - expected.max()) < 1e-5
            assert len(row["top_k"]) == top_k and row["top_k"][0]["label"] == row["label"]
            assert list(row["probabilities"]) == [str(d) for d in range(10)]
            assert np.allclose(list(row["probabilities"].values()), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (b"not an image", "image 0: not_an_image"),
        (b"", "image 0: zero_bytes"),
    ],
)
def test_a_bad_image_gets_a_400_with_a_reason_and_no_traceback(mlflow_server, image, words):
    payload = {"inputs": {"image": [base64.b64encode(image).decode()]}}
    response = httpx.post(f"{mlflow_server}/invocations", json=payload, timeout=60)
    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE" and words in body["message"]
    assert "stack_trace" not in body
    for leak in ("Traceback", "site-packages", str(Path.cwd()), 'File "'):
        assert leak not in response.text


# A Python with the venv's packages but not visionloop (its editable install is a .pth file,
# which -S skips): only the registered model's own copy of the package can be imported.
WITHOUT_VISIONLOOP = """
import sys
sys.path.append(sys.argv[1])
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[2])
model = mlflow.pyfunc.load_model(sys.argv[3])
answer = model.predict(pd.DataFrame({"image": [open(sys.argv[4], "rb").read()]}))
print(sys.modules["visionloop"].__file__, answer["label"][0])
"""


def test_the_registered_model_loads_with_its_own_copy_of_visionloop(served_registry, tmp_path):
    import site

    import mlflow.pyfunc
    import pandas as pd

    from visionloop.promotion.registry import registry_client

    image = encoded(digit_images(1)[0][0])
    (tmp_path / "digit.png").write_bytes(image)
    uri = f"models:/{MODEL}@champion"
    registry_client(served_registry.config)  # points MLflow at the test's registry
    expected = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"image": [image]}))
    env = {k: v for k, v in pipeline_env().items() if k != "PYTHONPATH"}
    args = [sys.executable, "-S", "-c", WITHOUT_VISIONLOOP, site.getsitepackages()[0]]
    args += [served_registry.config.registry.tracking_uri, uri, str(tmp_path / "digit.png")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    module_file, label = done.stdout.split()
    assert "/code/visionloop.zip/visionloop/" in module_file  # the model's archive
    assert label == expected["label"][0]
    # Where visionloop is installed (this process), its archive never goes on the import
    # path: later imports of visionloop modules must not load the registered copy.
    assert not [p for p in sys.path if p.endswith("visionloop.zip")]
