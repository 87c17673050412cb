"""Camera images: decoding and the official image-space transforms.

The exact input pixels matter for the official weights (docs/official_model.md 5.5 and quirk 22):
the official test pipeline decodes with libjpeg-turbo and resizes with PIL's bicubic filter,
then crops the bottom of the image, centred horizontally. ``resize_crop(..., method='pil')``
reproduces those pixels. Faster paths are explicit options with a documented difference:

* ``method='torch'``: PyTorch's antialiased bicubic resize on uint8 channels-last images
  (``F.interpolate(..., antialias=True)``), which follows PIL's fixed-point algorithm: pixels
  differ from PIL by at most 1 grey level when shrinking (2 at some scales, e.g. 1600x900 ->
  1408x512), 2 when enlarging (mean < 0.01,
  about one pixel value in a thousand differs), and several times faster than PIL on
  one core: ``bench/preprocess.py`` measured decode + resize of six 1600x900 JPEGs at 0.45x
  the PIL path's time (the resize alone ~4x faster).
* ``method='cv2'``: OpenCV ``INTER_AREA`` (downscaling) / ``INTER_CUBIC`` (upscaling) on the
  whole image. Faster than PIL (0.54x the frame time in ``bench/preprocess.py``; slower than
  ``'torch'``), but the pixels differ from PIL bicubic: mean absolute difference ~0.7-0.8 grey
  levels, up to ~15 on sharp edges. BEVDet reports up to 0.5 NDS lost from a resampler
  change, so re-verify accuracy before using it with the official weights.

Every transform returns its 4x4 ``ida`` (``geometry.image_transform_matrix``), which
left-multiplies ``lidar2img`` so that projections land on the transformed pixels.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from . import png
from .errors import InputError
from .geometry import image_transform_matrix, test_time_image_transform

ResizeMethod = Literal['pil', 'torch', 'cv2']
RESIZE_METHODS: tuple[str, ...] = ('pil', 'torch', 'cv2')

_JPEG_MAGIC = b'\xff\xd8'
_PNG_MAGIC = png.PNG_MAGIC


DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
"""Largest image (width x height) decoded by default: well above 4K and nuScenes' 1600x900."""
DEFLATE_MAX_RATIO = 1032
"""Deflate's best possible ratio (a 258-byte match in 2 bits): a PNG cannot inflate to more
than this many bytes per byte of file."""


class ImageDecodeError(InputError):
    """Raised when encoded image bytes cannot be decoded into an RGB image."""


class ImageTooLargeError(ImageDecodeError):
    """The image header declares more pixels than allowed (checked before decoding)."""


def image_header_size(data: bytes) -> tuple[int, int]:
    """(width, height) a JPEG (SOF) or PNG (IHDR) header declares, read without decoding.

    Raises:
        ImageDecodeError: the header is missing, truncated or declares a zero size.
    """
    if data.startswith(_PNG_MAGIC):
        header = png.read_header(data)
        if header is None:
            raise ImageDecodeError(f'corrupt PNG ({len(data)} bytes): no IHDR header')
        width, height = header.width, header.height
    elif data.startswith(_JPEG_MAGIC):
        import simplejpeg
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as err:
            raise ImageDecodeError(f'corrupt JPEG header ({len(data)} bytes): {err}') from None
    else:
        raise ImageDecodeError(f'not a JPEG or PNG ({len(data)} bytes starting with {data[:8]!r})')
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f'image header declares a size of {width}x{height}')
    return int(width), int(height)


def check_image_size(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) of encoded ``data`` once its header passed the size checks.

    Refuses, before any pixel is decoded, a header declaring more than ``max_pixels``
    pixels, and a PNG declaring more pixel bytes than its compressed size can hold (a
    corrupt or malicious header would otherwise make the decoder allocate gigabytes).

    Raises:
        ImageTooLargeError: too many pixels declared; ImageDecodeError: a corrupt header.
    """
    width, height = image_header_size(data)
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f'image header declares {width}x{height} pixels ({len(data)} bytes of data), more '
            f'than the limit of {max_pixels} pixels (parameter max_image_pixels); not decoded')
    header = png.read_header(data)
    if header is not None:
        if header.inflated_size() > DEFLATE_MAX_RATIO * len(data) + 65536:
            raise ImageDecodeError(
                f'corrupt PNG: its header declares {width}x{height} pixels, more than its '
                f'{len(data)} bytes can hold; not decoded')
    return width, height


def decode_image(data: bytes | bytearray | memoryview,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode JPEG (libjpeg-turbo via simplejpeg, accurate DCT) or PNG (OpenCV) bytes.

    Args:
        data: the encoded file contents.
        max_pixels: largest width x height decoded; the header is checked first
            (:func:`check_image_size`), so memory stays bounded whatever the data claims.
    Returns:
        (H, W, 3) uint8 RGB. Grey-scale and RGBA files are converted to RGB.
    Raises:
        ImageDecodeError: empty, truncated or corrupt data, or a format other than JPEG/PNG;
        ImageTooLargeError (a subclass): more than ``max_pixels`` pixels declared.
    """
    data = bytes(data)
    if not data:
        raise ImageDecodeError('cannot decode an empty image buffer (0 bytes)')
    if data.startswith(_JPEG_MAGIC):
        check_image_size(data, max_pixels)
        return _decode_jpeg(data)
    if data.startswith(_PNG_MAGIC):
        check_image_size(data, max_pixels)
        return _decode_png(data)
    raise ImageDecodeError(
        f'unsupported or corrupt image data ({len(data)} bytes starting with {data[:8]!r}): '
        'expected a JPEG (FF D8) or PNG (89 50 4E 47) file')


def _decode_jpeg(data: bytes) -> np.ndarray:
    import simplejpeg
    try:
        # fastdct/fastupsample off: the accurate libjpeg-turbo path the official loader uses
        return simplejpeg.decode_jpeg(data, colorspace='RGB', fastdct=False, fastupsample=False,
                                      strict=True)
    except ValueError as err:
        raise ImageDecodeError(f'corrupt or truncated JPEG ({len(data)} bytes): {err}') from err


def _decode_png(data: bytes) -> np.ndarray:
    """cv2 (libpng) decoding once the image data is known to inflate to no more than the
    header declares (sparsebev_core/png.py: libpng would inflate all of it)."""
    header = png.read_header(data)
    if header is not None and png.inflates_beyond(png.image_data_chunks(data), header.inflated_size()):
        raise ImageDecodeError(
            f'corrupt PNG ({len(data)} bytes): its image data inflates to more than the '
            f'{header.width}x{header.height} pixels its header declares; not decoded')
    import cv2
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ImageDecodeError(f'corrupt PNG ({len(data)} bytes): {str(err).strip()}') from None
    if image is None:
        raise ImageDecodeError(f'corrupt or truncated PNG ({len(data)} bytes)')
    if image.dtype == np.uint16:                     # 16-bit PNG -> 8 bit
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def image_size(image) -> tuple[int, int]:
    """(H, W) of an image array or of encoded bytes (read from the header, not decoded)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        width, height = image_header_size(bytes(image))
        return height, width
    return tuple(int(n) for n in np.shape(image)[:2])           # type: ignore[return-value]


def as_rgb_image(image: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
    """Decoded (H, W, 3) uint8 RGB from either encoded bytes or an image array.

    Raises:
        ImageDecodeError: bytes that do not decode, or an array that is not (H, W, 3) uint8.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(image)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ImageDecodeError(f'expected an (H, W, 3) uint8 RGB image, got an array of shape '
                               f'{image.shape} and dtype {image.dtype}')
    return image


def resize_crop(image: np.ndarray, final_hw: tuple[int, int], method: ResizeMethod = 'pil'
                ) -> tuple[np.ndarray, np.ndarray]:
    """Official test-time transform: resize by max(fH/H, fW/W), bottom crop, centred in x.

    Args:
        image: (H, W, 3) uint8 RGB.
        final_hw: (fH, fW) of the network input.
        method: ``'pil'`` (official pixels, PIL bicubic), ``'torch'`` (within 1 grey level,
            much faster) or ``'cv2'`` (faster, different pixels); see the module docstring.
    Returns:
        the (fH, fW, 3) uint8 network input and its 4x4 ``ida`` (float64).
    """
    image = as_rgb_image(image)
    ida, info = test_time_image_transform(image.shape[:2], final_hw)
    resized = _resize(image, info['resize_dims'], method)
    left, top, right, bottom = info['crop']
    return _crop(resized, left, top, right - left, bottom - top), ida


def resize_crop_tensor(image, final_hw: tuple[int, int], float_resize: bool | None = None):
    """``resize_crop(..., method='torch')`` on a uint8 tensor ``[3, H, W]`` where it lies (a GPU
    upload of the decoded pixels): the same antialiased bicubic resize and bottom crop, on
    the tensor's device. Returns the ``[3, fH, fW]`` uint8 tensor and the 4x4 ``ida``.

    CPU tensors use PyTorch's uint8 kernel (what ``method='torch'`` runs); other devices
    (``float_resize`` None) or ``float_resize=True`` resize in float32 and round, within 1 grey
    level of PIL as well (``test/test_device_preprocess.py``).
    """
    import torch
    import torch.nn.functional as F
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ImageDecodeError(f'expected a [3, H, W] uint8 tensor, got {tuple(image.shape)} {image.dtype}')
    ida, info = test_time_image_transform(tuple(image.shape[1:]), final_hw)
    new_w, new_h = info['resize_dims']
    x = image[None]                                                     # [1, 3, H, W]
    if (new_h, new_w) != tuple(image.shape[1:]):
        if float_resize is None:
            float_resize = image.device.type != 'cpu'
        if not float_resize:
            x = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=(new_h, new_w),
                              mode='bicubic', antialias=True, align_corners=False)
        else:        # PIL's two passes (width, then height), each rounded to uint8 in between
            y = x.float()
            for size in ((y.shape[2], new_w), (new_h, new_w)):
                if tuple(y.shape[2:]) != size:
                    y = F.interpolate(y, size=size, mode='bicubic', antialias=True,
                                      align_corners=False).round_().clamp_(0, 255)
            x = y.to(torch.uint8)
    left, top, right, bottom = info['crop']
    fh, fw = bottom - top, right - left
    if left >= 0 and top >= 0 and right <= new_w and bottom <= new_h:
        return x[0, :, top:bottom, left:right].contiguous(), ida
    out = x.new_zeros((3, fh, fw))                                      # PIL: zero outside
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(bottom, new_h), min(right, new_w)
    if y1 > y0 and x1 > x0:
        out[:, y0 - top:y1 - top, x0 - left:x1 - left] = x[0, :, y0:y1, x0:x1]
    return out, ida


def device_jpeg_decoder():
    """A JPEG decoder onto the GPU, ``(bytes, device) -> [3, H, W] uint8 tensor``, when
    nvImageCodec (``nvidia-nvimgcodec``) or torchvision's CUDA decoder is installed; else None
    (the detector then decodes with simplejpeg on the CPU). Optional: neither is required."""
    try:
        from nvidia import nvimgcodec  # type: ignore[import-not-found]
    except ImportError:
        nvimgcodec = None
    if nvimgcodec is not None:
        decoder = nvimgcodec.Decoder()

        def decode_nvimgcodec(data: bytes, device):
            import torch
            image = torch.as_tensor(decoder.decode(data), device=device)   # [H, W, 3] RGB
            return image.permute(2, 0, 1).contiguous()
        return decode_nvimgcodec
    try:
        from torchvision.io import ImageReadMode, decode_jpeg  # type: ignore[import-not-found]
    except ImportError:
        return None

    def decode_torchvision(data: bytes, device):
        import torch
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                           mode=ImageReadMode.RGB, device=device)
    return decode_torchvision


def transform_image(image: np.ndarray, resize: float, crop_left_top: tuple[int, int],
                    final_hw: tuple[int, int], flip: bool = False, method: ResizeMethod = 'pil'
                    ) -> tuple[np.ndarray, np.ndarray]:
    """General resize -> crop -> optional horizontal flip (training augmentation, docs/official_model.md 5.5).

    The resized size is ``(int(W * resize), int(H * resize))`` as in the official code; crop
    regions outside the resized image are zero-filled (PIL semantics).

    Returns:
        the (fH, fW, 3) uint8 image and its 4x4 ``ida`` (float64).
    """
    image = as_rgb_image(image)
    H, W = image.shape[:2]
    fH, fW = final_hw
    resized = _resize(image, (int(W * resize), int(H * resize)), method)
    out = _crop(resized, int(crop_left_top[0]), int(crop_left_top[1]), fW, fH)
    if flip:
        out = np.ascontiguousarray(out[:, ::-1])
    ida = image_transform_matrix(resize, crop_left_top, flip=flip, final_width=fW)
    return out, ida


def _resize(image: np.ndarray, size_wh: tuple[int, int], method: str) -> np.ndarray:
    new_w, new_h = int(size_wh[0]), int(size_wh[1])
    if (new_h, new_w) == image.shape[:2]:
        return image
    if method == 'pil':
        from PIL import Image
        return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
    if method == 'torch':
        import torch
        import torch.nn.functional as F
        # HWC -> a channels-last NCHW view: the fast uint8 antialias kernel works on this layout
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]  # [1, 3, H, W]
        y = F.interpolate(x, size=(new_h, new_w), mode='bicubic', antialias=True,
                          align_corners=False)                          # [1, 3, h, w] uint8
        return y[0].permute(1, 2, 0).numpy()                            # [h, w, 3]
    if method == 'cv2':
        import cv2
        shrink = new_w < image.shape[1]
        return cv2.resize(image, (new_w, new_h),
                          interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    raise ValueError(f'unknown resize method {method!r}; choose one of {RESIZE_METHODS}')


def _crop(image: np.ndarray, left: int, top: int, width: int, height: int) -> np.ndarray:
    """Crop with PIL semantics: the part outside the image is zero-filled."""
    H, W = image.shape[:2]
    if 0 <= left and 0 <= top and left + width <= W and top + height <= H:
        return np.ascontiguousarray(image[top:top + height, left:left + width])
    out = np.zeros((height, width, image.shape[2]), dtype=image.dtype)
    src_x0, src_y0 = max(left, 0), max(top, 0)
    src_x1, src_y1 = min(left + width, W), min(top + height, H)
    if src_x1 > src_x0 and src_y1 > src_y0:
        out[src_y0 - top:src_y1 - top, src_x0 - left:src_x1 - left] = image[src_y0:src_y1,
                                                                               src_x0:src_x1]
    return out
