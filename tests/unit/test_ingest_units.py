from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.helpers import REPO_PARAMS
from tests.ingest_corpus import encode
from visionloop.config import load_config
from visionloop.data.ingest.plan import printable_name
from visionloop.data.ingest.readers import DropRejected, drop_name, is_os_metadata, safe_parts
from visionloop.errors import ConfigError
from visionloop.images import FormatNotAllowed, decode


@pytest.mark.parametrize(
    "name",
    [
        "/etc/passwd",
        "C:/x.png",
        "a/../../b.png",
        "..",
        "a\\b.png",
        "a/\x00b.png",
        "",
        "x/" + "n" * 256,
    ],
)
def test_member_names_that_could_escape_are_refused(name):
    with pytest.raises(DropRejected) as info:
        safe_parts(name)
    assert info.value.reason == "unsafe_path"


def test_member_names_are_split_and_nfc_normalised():
    assert safe_parts("./cat//cafe\u0301.png") == ("cat", "café.png")


def test_os_metadata_is_recognised():
    assert is_os_metadata(("__MACOSX", "cat", "x.png"))
    assert is_os_metadata(("cat", "._x.png")) and is_os_metadata((".DS_Store",))
    assert not is_os_metadata(("cat", "x.png"))


def test_drop_names_lose_their_archive_suffix(tmp_path):
    for name in ("d.zip", "d.tar", "d.tar.gz", "d.tgz"):
        (tmp_path / name).write_bytes(b"")
        assert drop_name(tmp_path / name) == "d"
    assert drop_name(Path("folder.v2")) == "folder.v2"


def test_printable_name_escapes_control_characters():
    assert printable_name("a\nb\tc é") == "a\\x0ab\\x09c é"
    assert printable_name("cafe\u0301") == "café"


def test_decode_checks_the_header_before_decoding():
    big = encode(Image.new("L", (300, 300)))
    with pytest.raises(Image.DecompressionBombError, match="exceeds the cap"):
        decode(big, max_pixels=1000)
    with pytest.raises(FormatNotAllowed):
        decode(big, formats=("JPEG",))
    decoded = decode(encode(Image.new("P", (5, 4), 1)))
    assert decoded.steps == ("palette",)
    transparent = encode(Image.new("P", (5, 4), 1), transparency=1)
    assert decode(transparent).steps == ("palette", "alpha_composited")
    assert (decoded.format, decoded.mode, decoded.image.mode) == ("PNG", "P", "RGB")


def _params_with(tmp_path, section: str, key: str, value) -> Path:
    params = yaml.safe_load(REPO_PARAMS.read_text())
    params["data"][section][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_a_bad_label_pattern_or_unknown_expectation_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.ingest\.label_pattern: .*regular expression"):
        load_config(_params_with(tmp_path, "ingest", "label_pattern", "([unclosed"))
    with pytest.raises(ConfigError, match=r"data\.validation\.blocking"):
        load_config(_params_with(tmp_path, "validation", "blocking", ["sha_unique"]))


def test_docs_list_every_reason_code_and_expectation():
    from tests.helpers import REPO_ROOT
    from visionloop.data.ingest.reasons import DROP_REASONS, FILE_REASONS
    from visionloop.data.validation import EXPECTATION_NAMES

    docs = (REPO_ROOT / "docs" / "data.md").read_text()
    for code in [*FILE_REASONS, *DROP_REASONS, *EXPECTATION_NAMES]:
        assert f"`{code}`" in docs, code


def test_new_commands_answer_help_without_heavy_imports():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from visionloop.cli import cli\n"
        "for args in (['data', 'ingest', '--help'], ['stage', 'validate', '--help']):\n"
        "    try:\n"
        "        cli.main(args, prog_name='visionloop')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('torch', 'prefect', 'mlflow', 'great_expectations', 'dvc', 'PIL')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--allow-new-classes" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _encoded_variants() -> dict[str, bytes]:
    """Real encodings a photo arrives in: baseline and progressive JPEG with EXIF and its
    thumbnail, optimised and interlaced PNG with text chunks, WebP lossy and lossless, BMP."""
    import io

    from PIL import Image, PngImagePlugin

    rng = __import__("numpy").random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype="uint8"))
    exif = Image.Exif()
    exif[0x0112] = 6
    thumb = io.BytesIO()
    image.resize((16, 12)).save(thumb, "JPEG")
    variants = {}
    for name, fmt, kwargs in [
        ("jpeg", "JPEG", {"exif": exif, "quality": 90}),
        ("jpeg-progressive", "JPEG", {"progressive": True, "optimize": True}),
        ("jpeg-restart", "JPEG", {"restart_marker_blocks": 1}),
        ("png", "PNG", {"optimize": True}),
        ("webp", "WEBP", {"quality": 80}),
        ("webp-lossless", "WEBP", {"lossless": True}),
        ("bmp", "BMP", {}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kwargs)
        variants[name] = buffer.getvalue()
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "made by a camera")
    buffer = io.BytesIO()
    image.convert("P").save(buffer, "PNG", pnginfo=info, interlace=1)
    variants["png-palette-text"] = buffer.getvalue()
    return variants


def test_trailing_data_after_an_image_is_its_own_reason_and_real_encodings_pass():
    """Issue 15: a valid PNG with a ZIP holding a pickle appended was stored byte for byte."""
    import io
    import pickle
    import zipfile

    from visionloop.config import IngestConfig
    from visionloop.data.ingest.reasons import FileReason
    from visionloop.data.ingest.screening import screen

    rules = IngestConfig(min_side=8)
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as archive:
        archive.writestr("data.pkl", pickle.dumps({"not": "an image"}))
    for name, data in _encoded_variants().items():
        assert screen(data, rules).reason is None, name
        assert screen(data + b"\0" * 64, rules).reason is None, name  # zero padding
        appended = screen(data + payload.getvalue(), rules)
        assert appended.reason == FileReason.TRAILING_DATA, name
        assert f"{len(payload.getvalue())} bytes after the end" in appended.detail, name
