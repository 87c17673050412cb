"""The work one PNG may cost is bounded by what its header declares: a stream that inflates to
more than the IHDR size is refused before libpng sees it (libpng would inflate all of it: a 1x1
PNG with a 500 KB stream of zeros cost over a second), and the bound is exact for real PNGs of
every colour type, bit depth and interlacing, so none of them is refused."""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from fault_cases import _png_chunk, png_claiming
from sparsebev_core import png
from sparsebev_core.image import ImageDecodeError, decode_image
from sparsebev_ros import codecs
from sparsebev_ros.messages import RosbagsMessages, header, ros2_typestore

INFLATED = 64 << 20          # bytes of zeros behind a 1x1 header (a 65 KB message)
_decompressobj = zlib.decompressobj


class CountingInflater:
    """zlib.decompressobj that counts the bytes it inflates (the work done)."""
    produced = 0

    def __init__(self) -> None:
        self._inner = _decompressobj()

    def decompress(self, data, max_length=0):
        out = self._inner.decompress(data, max_length)
        CountingInflater.produced += len(out)
        return out

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.fixture()
def counted(monkeypatch):
    """Counts what the check inflates; libpng must not be reached."""
    CountingInflater.produced = 0
    monkeypatch.setattr(png.zlib, 'decompressobj', CountingInflater)

    def no_decoder(*args, **kwargs):
        raise AssertionError('the PNG reached the decoder')

    monkeypatch.setattr(cv2, 'imdecode', no_decoder)
    return CountingInflater


def split_idat(data: bytes, parts: int) -> bytes:
    """The same PNG with its image data spread over ``parts`` IDAT chunks."""
    chunks = png.image_data_chunks(data)
    stream = b''.join(bytes(c) for c in chunks)
    start = data.index(b'IDAT') - 4
    end = start + sum(12 + len(c) for c in chunks)
    step = -(-len(stream) // parts)
    idats = b''.join(_png_chunk(b'IDAT', stream[i:i + step]) for i in range(0, len(stream), step))
    return data[:start] + idats + data[end:]


@pytest.mark.parametrize('parts', [1, 500])
def test_a_1x1_png_whose_stream_inflates_to_megabytes_is_refused_after_inflating_a_few_bytes(
        counted, parts):
    data = split_idat(png_claiming(1, 1, b'\x00' * INFLATED), parts)
    assert len(data) < INFLATED // 500
    with pytest.raises(ImageDecodeError, match=r'inflates to more than the 1x1 pixels'):
        decode_image(data)
    declared = png.read_header(data).inflated_size()
    assert declared == 4                                # a filter byte + one RGB pixel
    assert counted.produced <= declared + 1             # not the 64 MB libpng would inflate


def test_the_ros_codec_refuses_it_too():
    """The same bytes as a CompressedImage (what a camera driver publishes)."""
    factory = RosbagsMessages(ros2_typestore('humble'))
    data = np.frombuffer(png_claiming(1, 1, b'\x00' * INFLATED), np.uint8)
    msg = factory.new('sensor_msgs/msg/CompressedImage', header=header(factory, 0, 'cam'),
                      format='png', data=data)
    with pytest.raises(ImageDecodeError, match='inflates to more than'):
        codecs.compressed_to_rgb(msg)


def test_a_stream_that_fits_its_header_but_is_bigger_than_the_image_needs_is_still_decoded():
    """Only more than the header's size is refused: a short or exact stream goes to libpng,
    which decodes (exact) or refuses (short) it as before."""
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    rows = b''.join(b'\x00' + image[y].tobytes() for y in range(2))
    np.testing.assert_array_equal(decode_image(png_claiming(3, 2, rows)), image)
    with pytest.raises(ImageDecodeError):
        decode_image(png_claiming(3, 2, rows[:5]))


def _pil_png(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, 'PNG', **save)
    return buffer.getvalue()


def _interlaced_rgb_png(image: np.ndarray) -> bytes:
    """Adam7-interlaced 8-bit RGB (neither cv2 nor PIL writes interlaced PNGs)."""
    h, w, _ = image.shape
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
              (0, 1, 1, 2))
    raw = b''
    for x0, y0, dx, dy in passes:
        sub = image[y0::dy, x0::dx]
        if sub.size:
            raw += b''.join(b'\x00' + row.tobytes() for row in sub)
    ihdr = struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 1)
    return (png.PNG_MAGIC + _png_chunk(b'IHDR', ihdr) + _png_chunk(b'IDAT', zlib.compress(raw))
            + _png_chunk(b'IEND', b''))


def real_pngs() -> dict[str, tuple[bytes, np.ndarray]]:
    """Real encoders' PNGs with the RGB pixels decode_image must give."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (13, 21, 3), dtype=np.uint8)
    grey = rgb[:, :, 0]
    rgb16 = rgb.astype(np.uint16) * 257
    bits = grey > 127
    palette = Image.fromarray(grey % 4).convert('P')          # 4 colours: written with 2 bits
    return {
        'cv2 rgb8': (cv2.imencode('.png', rgb[:, :, ::-1])[1].tobytes(), rgb),
        'cv2 grey8': (cv2.imencode('.png', grey)[1].tobytes(), np.repeat(grey[:, :, None], 3, 2)),
        'cv2 rgb16': (cv2.imencode('.png', rgb16[:, :, ::-1])[1].tobytes(), rgb),
        'cv2 rgba8': (cv2.imencode('.png', np.dstack([rgb[:, :, ::-1], grey]))[1].tobytes(), rgb),
        'pil palette 2-bit': (_pil_png(palette, bits=2), np.asarray(palette.convert('RGB'))),
        'pil 1-bit': (_pil_png(Image.fromarray(bits)),
                      np.repeat(bits[:, :, None].astype(np.uint8) * 255, 3, 2)),
        'pil grey+alpha': (_pil_png(Image.fromarray(np.dstack([grey, grey]), 'LA')),
                           np.repeat(grey[:, :, None], 3, 2)),
        'adam7 rgb8': (_interlaced_rgb_png(rgb), rgb),
        'adam7 1x1': (_interlaced_rgb_png(rgb[:1, :1]), rgb[:1, :1]),
        'adam7 9x3': (_interlaced_rgb_png(rgb[:9, :3]), rgb[:9, :3]),
    }


@pytest.mark.parametrize('name', list(real_pngs()))
def test_the_bound_is_exactly_what_real_pngs_inflate_to_and_they_decode(name):
    data, expected = real_pngs()[name]
    header = png.read_header(data)
    stream = b''.join(bytes(c) for c in png.image_data_chunks(data))
    assert header.inflated_size() == len(zlib.decompress(stream)), name
    decoded = decode_image(data)
    np.testing.assert_array_equal(decoded, expected)
