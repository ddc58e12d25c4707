import numpy as np
import pytest
from PIL import Image

from hue import images
from tests.conftest import make_image


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK", "I;16", "1", "LA"])
def test_every_colour_mode_becomes_8bit_rgb(tmp_path, mode):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = make_image(tmp_path / f"x{suffix}", mode=mode, size=(7, 5))
    chk = images.inspect(path)
    assert chk.ok and (chk.width, chk.height) == (7, 5)
    rgb = images.load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (7, 5)


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "I;16"])
@pytest.mark.parametrize("size", [(13, 9), (3, 20)])  # up and down in either side
def test_load_resized_is_the_rgb_image_resized(tmp_path, mode, size):
    path = make_image(tmp_path / "x.png", mode=mode, size=(7, 11))
    want = np.asarray(images.load_rgb(path).resize(size, resample=Image.BILINEAR))  # (H, W, 3)
    got = images.load_resized(path, size)  # greyscale: resized on one band, then repeated
    assert got.shape == (size[1], size[0], 3) and got.dtype == np.uint8
    assert np.array_equal(got, want)


def test_16bit_is_rescaled_not_clipped(tmp_path):
    values = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "x.png")
    grey = np.asarray(images.load_rgb(tmp_path / "x.png"))[..., 0]
    assert grey.tolist() == [[0, 255], [128, 1]]


def test_bad_files_have_reasons(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image at all")
    good = make_image(tmp_path / "good.jpg", size=(64, 64)).read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(good[: len(good) // 2])
    assert images.inspect(tmp_path / "zero.jpg").reason == "zero_byte"
    assert images.inspect(tmp_path / "text.png").reason == "not_an_image"
    assert images.inspect(tmp_path / "trunc.jpg").reason == "corrupt"
