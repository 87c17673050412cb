"""Preprocessing on the model's device: uint8 upload, then the 'torch' resize and crop there
(``image.resize_crop_tensor``), within 1 grey level of the official PIL pixels. The float
path a GPU runs is exercised here on CPU tensors; the GPU JPEG decoder is optional."""
import numpy as np
import pytest
import torch

from sparsebev_core.frame import InvalidFrameError
from sparsebev_core.image import device_jpeg_decoder, resize_crop, resize_crop_tensor
from sparsebev_core.model.detector import build_model
from sparsebev_core.recipe.presets import get_preset
from sparsebev_core.streaming.detector import StreamingDetector
from sparsebev_core.streaming.options import StreamingOptions
from test_streaming import T0, make_frame   # the streaming tests' synthetic rig


def photo(h=900, w=1600, seed=0):
    """Smooth gradients + blocks + noise: edges and flat parts like a camera image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) % 256], -1)
    blocks = rng.integers(0, 256, (h // 50 + 1, w // 50 + 1, 3)).repeat(50, 0).repeat(50, 1)[:h, :w]
    noisy = 0.5 * base + 0.5 * blocks + rng.normal(0, 8, (h, w, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.mark.parametrize('float_resize', [False, True])
@pytest.mark.parametrize('final_hw', [(256, 704), (512, 1408), (320, 800)])
def test_device_resize_is_within_one_grey_level_of_pil(float_resize, final_hw):
    image = photo()
    official, ida = resize_crop(image, final_hw, method='pil')
    tensor = torch.from_numpy(image).permute(2, 0, 1)                  # [3, H, W] non-contiguous
    ours, ida_t = resize_crop_tensor(tensor, final_hw, float_resize=float_resize)
    assert ours.dtype == torch.uint8 and tuple(ours.shape) == (3, *final_hw)
    diff = np.abs(ours.permute(1, 2, 0).numpy().astype(int) - official.astype(int))
    # the float path (what a GPU runs) is within 1 grey level; PyTorch's CPU uint8 kernel
    # reaches 2 at the 0.88 scale of 1600x900 -> 1408x512 (measured on this image)
    bound = 1 if float_resize or final_hw != (512, 1408) else 2
    assert diff.max() <= bound, f'max {diff.max()} grey levels'
    assert diff.mean() < 0.05
    np.testing.assert_array_equal(ida, ida_t)


def test_uint8_kernel_equals_the_host_torch_method_bit_for_bit():
    image = photo(450, 800, seed=1)
    host, _ = resize_crop(image, (256, 704), method='torch')
    ours, _ = resize_crop_tensor(torch.from_numpy(image).permute(2, 0, 1), (256, 704))
    np.testing.assert_array_equal(ours.permute(1, 2, 0).numpy(), host)


def test_detector_preprocessing_on_the_device_keeps_the_outputs():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = get_preset('tiny')
    model = build_model(cfg).eval()
    outputs = {}
    for device_preprocess in (False, True):
        options = StreamingOptions(score_threshold=0.0, resize_method='torch',
                                   device_preprocess=device_preprocess, preprocess_workers=2)
        stream = StreamingDetector(model, cfg, options=options)
        stream.step(make_frame(0, T0, encode=True))
        outputs[device_preprocess] = stream.last_step.outputs['all_cls_scores']
    assert torch.equal(outputs[False], outputs[True])
    with pytest.raises(ValueError, match="'torch' method"):
        StreamingOptions(device_preprocess=True, resize_method='pil')
    frame = make_frame(1, T0 + 0.5, encode=True)
    frame.cameras[3].image = b'\xff\xd8 not a jpeg'
    with pytest.raises(InvalidFrameError, match='camera 3'):
        StreamingDetector(model, cfg, options=StreamingOptions(
            resize_method='torch', device_preprocess=True)).step(frame)


@pytest.mark.skipif(device_jpeg_decoder() is None or not torch.cuda.is_available(),
                    reason='no GPU JPEG decoder (nvImageCodec / torchvision CUDA decode_jpeg) or no CUDA')
def test_gpu_jpeg_decode_is_close_to_libjpeg_turbo():
    import cv2
    from sparsebev_core.image import decode_image
    data = cv2.imencode('.jpg', photo()[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    gpu = device_jpeg_decoder()(data, torch.device('cuda')).permute(1, 2, 0).cpu().numpy()
    assert np.abs(gpu.astype(int) - decode_image(data).astype(int)).mean() < 1.0
