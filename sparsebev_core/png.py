"""PNG structure read without decoding: what the IHDR header declares, and a bounded check
that the image data inflates to no more than that before the decoder sees it.

A PNG's pixel data is one zlib stream split over IDAT chunks. libpng (behind ``cv2.imdecode``)
inflates the *whole* stream, even past the pixels the header declares ("Too much image data"
is only a warning): a 1x1 PNG carrying a 500 KB stream that inflates to 500 MB costs over a
second of CPU before it decodes to one pixel. :func:`inflates_beyond` inflates the stream in
small pieces and refuses it as soon as it produces more than the header's size, so the work one
PNG may cost is bounded by what its header declares (itself bounded by ``max_image_pixels``);
a valid PNG pays one extra inflate of its data.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
SAMPLES_PER_PIXEL = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}    # IHDR colour type -> samples per pixel
# Adam7 passes: (first column, first row, column step, row step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))
_CHUNK_HEAD = struct.Struct('>I4s')               # chunk length, chunk type
_INFLATE_PIECE = 1 << 20      # bytes inflated per step: memory stays flat whatever the stream


@dataclass(frozen=True)
class PngHeader:
    """The fields of the IHDR chunk that size the image data."""
    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlaced: bool

    def inflated_size(self) -> int:
        """Bytes the image data inflates to: per row a filter byte plus the packed samples,
        per Adam7 pass when interlaced. An unknown colour type or depth counts as the largest
        (4 samples, 16 bits): the bound stays an upper bound, libpng refuses the header."""
        bits_per_pixel = SAMPLES_PER_PIXEL.get(self.colour_type, 4) * min(max(self.bit_depth, 1), 16)

        def rows(width: int, height: int) -> int:
            return height * (1 + (width * bits_per_pixel + 7) // 8) if width and height else 0

        if not self.interlaced:
            return rows(self.width, self.height)
        return sum(rows(-(-(self.width - x0) // dx) if self.width > x0 else 0,
                        -(-(self.height - y0) // dy) if self.height > y0 else 0)
                   for x0, y0, dx, dy in _ADAM7)


def read_header(data: bytes) -> PngHeader | None:
    """The IHDR of a PNG file, or None when ``data`` is not a PNG with an IHDR first."""
    if not data.startswith(PNG_MAGIC) or len(data) < 29 or data[12:16] != b'IHDR':
        return None
    return PngHeader(width=int.from_bytes(data[16:20], 'big'),
                     height=int.from_bytes(data[20:24], 'big'),
                     bit_depth=data[24], colour_type=data[25], interlaced=data[28] == 1)


def image_data_chunks(data: bytes) -> list[memoryview]:
    """The IDAT payloads in file order (views, no copy). The walk stops at the first chunk
    after them (the spec keeps IDATs consecutive; libpng stops reading image data there too),
    at IEND, or at the end of the file; a chunk cut short contributes what is there."""
    view, chunks, pos, end = memoryview(data), [], len(PNG_MAGIC), len(data)
    unpack = _CHUNK_HEAD.unpack_from
    while pos + 8 <= end:
        length, kind = unpack(data, pos)
        if kind == b'IDAT':
            chunks.append(view[pos + 8:min(pos + 8 + length, end)])
        elif chunks or kind == b'IEND':
            break
        pos += 12 + length                                  # length, type, payload, CRC
    return chunks


def inflates_beyond(chunks: list[memoryview], limit: int) -> bool:
    """Whether the zlib stream split over ``chunks`` inflates to more than ``limit`` bytes.

    At most ``limit + 1`` bytes are inflated, in pieces of 1 MiB. A stream that is not valid
    zlib stops the check (False): the decoder refuses it at the same point."""
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for chunk in chunks:
            pending: bytes | memoryview = chunk
            while pending:
                # max_length >= 1 always (0 would mean "no limit")
                produced += len(inflater.decompress(pending, min(_INFLATE_PIECE, limit + 1 - produced)))
                if produced > limit:
                    return True
                if inflater.eof:
                    return False
                pending = inflater.unconsumed_tail
    except zlib.error:
        return False
    return False
