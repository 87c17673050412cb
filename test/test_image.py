"""Image decoding and the official test-time resize/crop (docs/official_model.md 5.5)."""
import cv2
import numpy as np
import pytest
from PIL import Image

from sparsebev_core import geometry
from sparsebev_core.image import (ImageDecodeError, as_rgb_image, decode_image, resize_crop,
                                  transform_image)


def _scene_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colours plus a checkerboard: compresses like a photo, has sharp edges."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (0, 0), 3)
    image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX)
    yy, xx = np.mgrid[:h, :w]
    image[(xx // 20 + yy // 20) % 2 == 0] //= 3
    return image


def _jpeg(image_rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode('.jpg', image_rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def test_decode_jpeg_gives_rgb_pixels_of_libjpeg():
    image = _scene_image(90, 160)
    data = _jpeg(image)
    decoded = decode_image(data)
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert decoded.shape == (90, 160, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, reference)               # same pixels, RGB order
    assert np.abs(decoded.astype(int) - image).mean() < 6            # and it is the picture


def test_decode_png_is_lossless_including_grey_and_rgba():
    image = _scene_image(30, 40)
    ok, rgb_png = cv2.imencode('.png', image[:, :, ::-1])
    np.testing.assert_array_equal(decode_image(rgb_png.tobytes()), image)
    ok, grey_png = cv2.imencode('.png', image[:, :, 0])
    np.testing.assert_array_equal(decode_image(grey_png.tobytes()), np.repeat(image[:, :, :1], 3, 2))
    rgba = np.concatenate([image[:, :, ::-1], np.full((30, 40, 1), 255, np.uint8)], axis=2)
    ok, rgba_png = cv2.imencode('.png', rgba)
    np.testing.assert_array_equal(decode_image(rgba_png.tobytes()), image)


@pytest.mark.parametrize('data, words', [
    (b'', 'empty'),
    (b'GIF89a....', 'expected a JPEG'),
    (None, 'truncated JPEG'),                  # filled below: a JPEG cut in half
    (b'\xff\xd8\xff\xe0garbage', 'JPEG'),
    (b'\x89PNG\r\n\x1a\n' + b'\x00' * 20, 'PNG'),
])
def test_corrupt_image_raises_clear_error(data, words):
    if data is None:
        full = _jpeg(_scene_image(64, 64))
        data = full[:len(full) // 2]
    with pytest.raises(ImageDecodeError, match=words):
        decode_image(data)


def test_as_rgb_image_rejects_wrong_arrays():
    with pytest.raises(ImageDecodeError, match='uint8'):
        as_rgb_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ImageDecodeError, match='shape'):
        as_rgb_image(np.zeros((4, 4), np.uint8))


def test_resize_crop_reproduces_official_pil_pixels_704x256():
    image = _scene_image(900, 1600)
    out, ida = resize_crop(image, (256, 704))
    # the official pipeline, written out: PIL resize to (704, 396) bicubic, crop rows 140..396
    official = np.asarray(Image.fromarray(image).resize((704, 396), Image.BICUBIC)
                          .crop((0, 140, 704, 396)))
    np.testing.assert_array_equal(out, official)
    expected_ida = np.eye(4)
    expected_ida[0, 0] = expected_ida[1, 1] = 0.44
    expected_ida[1, 2] = -140
    np.testing.assert_allclose(ida, expected_ida, atol=1e-12)


@pytest.mark.parametrize('orig_hw, final_hw', [((225, 400), (96, 256)), ((900, 1600), (512, 1408)),
                                                ((720, 1280), (256, 704))])
def test_resize_crop_ida_maps_original_pixels_onto_output_pixels(orig_hw, final_hw):
    # a bright square at a known spot must land where ida sends its centre
    image = np.zeros(orig_hw + (3,), np.uint8)
    H, W = orig_hw
    cy, cx = int(H * 0.7), int(W * 0.3)
    image[cy - 6:cy + 7, cx - 6:cx + 7] = 255
    out, ida = resize_crop(image, final_hw)
    assert out.shape == final_hw + (3,)
    ys, xs = np.nonzero(out[:, :, 0] > 128)
    found = np.array([xs.mean(), ys.mean()])
    mapped = ida @ np.array([cx + 0.5, cy + 0.5, 1.0, 1.0])        # (u, v) with d = 1
    np.testing.assert_allclose(found + 0.5, mapped[:2], atol=0.75)


def test_cv2_resize_is_close_but_not_the_official_pixels():
    image = _scene_image(900, 1600)
    pil, ida_pil = resize_crop(image, (256, 704), method='pil')
    fast, ida_fast = resize_crop(image, (256, 704), method='cv2')
    np.testing.assert_array_equal(ida_pil, ida_fast)
    diff = np.abs(pil.astype(int) - fast)
    assert 0 < diff.mean() < 2.0
    with pytest.raises(ValueError, match='resize method'):
        resize_crop(image, (256, 704), method='nearest')


def test_transform_image_flip_matches_its_ida():
    image = np.zeros((225, 400, 3), np.uint8)
    image[100:110, 50:60] = 255                                      # centre (55, 105)
    out, ida = transform_image(image, resize=0.5, crop_left_top=(10, 20), final_hw=(80, 160),
                               flip=True)
    ys, xs = np.nonzero(out[:, :, 0] > 128)
    mapped = ida @ np.array([55.0, 105.0, 1.0, 1.0])
    np.testing.assert_allclose([xs.mean() + 0.5, ys.mean() + 0.5], mapped[:2], atol=0.75)
    np.testing.assert_allclose(ida, geometry.image_transform_matrix(0.5, (10, 20), True, 160))


def test_transform_image_zero_fills_outside_the_resized_image():
    image = np.full((100, 100, 3), 200, np.uint8)
    out, _ = transform_image(image, resize=0.5, crop_left_top=(0, 0), final_hw=(60, 80))
    assert (out[:50, :50] == 200).all() and (out[:, 50:] == 0).all() and (out[50:] == 0).all()


def test_torch_resize_is_within_one_grey_level_of_pil():
    image = _scene_image(900, 1600)
    pil, ida_pil = resize_crop(image, (256, 704), method='pil')
    fast, ida_fast = resize_crop(image, (256, 704), method='torch')
    np.testing.assert_array_equal(ida_pil, ida_fast)
    diff = np.abs(pil.astype(int) - fast)
    assert diff.max() <= 1 and diff.mean() < 0.01
    small, _ = resize_crop(image[:225, :400], (256, 704), method="torch")   # upscaling too
    small_pil, _ = resize_crop(image[:225, :400], (256, 704), method="pil")
    upscaled = np.abs(small.astype(int) - small_pil)
    assert upscaled.max() <= 2 and upscaled.mean() < 0.01
