import io

import numpy as np
import pytest
from PIL import Image

from visionloop.images import ALPHA_BACKGROUND, open_rgb


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    decoded = open_rgb(encode(wide, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 40) and decoded.mode == "RGB"


def test_transparent_pixels_are_composited_on_the_fixed_background():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert open_rgb(encode(rgba)).getpixel((0, 0)) == ALPHA_BACKGROUND


@pytest.mark.parametrize("mode", ["L", "P", "LA", "1", "CMYK"])
def test_every_common_mode_becomes_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = open_rgb(encode(Image.new(mode, (5, 3)), fmt))
    assert decoded.mode == "RGB" and decoded.size == (5, 3)


def test_16_bit_is_rescaled_not_clipped():
    ramp = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)
    decoded = np.asarray(open_rgb(encode(Image.fromarray(ramp))))[0, :, 0]
    assert decoded.tolist() == [0, 64, 128, 255]


def test_multi_frame_gives_the_first_frame():
    frames = [Image.new("RGB", (3, 3), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert open_rgb(data).getpixel((1, 1)) == (255, 0, 0)
