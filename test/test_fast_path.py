"""The fast-path options of the eager runtime on the CPU (tiny preset): a channels-last feature
cache (bit-identical), ``torch.compile`` of the head (within 1e-5), a channels-last backbone.

The CUDA-only parts (CUDA graphs through ``mode='reduce-overhead'``, cuDNN autotuning) run in
``bench/gpu_suite.sh``; here they skip with the reason.
"""
import shutil

import pytest
import torch

from sparsebev_core.model.detector import build_model
from sparsebev_core.streaming.detector import StreamingDetector
from sparsebev_core.streaming.options import StreamingOptions
from sparsebev_core.streaming.feature_cache import FeatureSlots
from sparsebev_core.streaming.runtime import EagerRuntime
from test_streaming import T0, make_frame   # the streaming tests' synthetic rig


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def stream_outputs(stream: StreamingDetector, count: int = 5) -> list[dict]:
    """Head outputs of ``count`` frames at 6 Hz (slots get reused and the cache grows)."""
    outputs = []
    for k in range(count):
        stream.step(make_frame(k, T0 + k / 6.0))
        outputs.append(stream.last_step.outputs)
    return outputs


def test_channels_last_cache_gives_the_same_bits(tiny):
    model, cfg = tiny
    runs = {}
    for channels_last in (False, True):
        stream = StreamingDetector(model, cfg, options=StreamingOptions(
            score_threshold=0.0, max_cached_frames=8, cache_channels_last=channels_last))
        runs[channels_last] = stream_outputs(stream, 10)
        level = stream.feature_slots.levels[0]                           # [S, N, C, h, w]
        assert (level.stride(2) == 1) == channels_last                   # channels innermost
        assert stream.feature_slots.capacity > cfg.num_frames + 1       # it grew as well
    for standard, last in zip(runs[False], runs[True]):
        for name in ('all_cls_scores', 'all_bbox_preds'):
            assert torch.equal(standard[name], last[name]), name


def test_channels_last_slots_keep_their_layout_when_they_grow():
    slots = FeatureSlots(4, initial_slots=1, channels_last=True)
    frames = [[torch.randn(6, 8, 3, 5)] for _ in range(3)]
    used = [slots.store(f) for f in frames]
    assert slots.capacity == 4 and slots.levels[0].stride(2) == 1
    for slot, frame in zip(used, frames):
        assert torch.equal(slots.levels[0][slot], frame[0])


def test_the_cache_layout_defaults_to_channels_last_on_cuda_only(tiny):
    model, cfg = tiny
    assert not StreamingDetector(model, cfg).feature_slots.channels_last


def test_channels_last_backbone_keeps_the_features_close(tiny):
    model, cfg = tiny
    images = torch.randint(0, 256, (6, 3, *cfg.input_size), dtype=torch.uint8)
    standard = EagerRuntime(model, 'cpu', channels_last_backbone=False).encode(images)
    last = EagerRuntime(build_model(cfg).eval(), 'cpu', channels_last_backbone=True)
    last.model.load_state_dict(model.state_dict())
    for a, b in zip(standard, last.encode(images)):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def compile_backend() -> str:
    """inductor needs a C++ compiler on the CPU; aot_eager (graph capture only) otherwise."""
    return 'inductor' if shutil.which('g++') or shutil.which('gcc') else 'aot_eager'


def agree(outputs: dict, expected: dict, cfg, tolerance: float) -> bool:
    """Logits within ``tolerance``; boxes within it in the units the head refines them in: the
    centre (head layout x, y, z in metres) over the point-cloud range, the rest relative to
    max(1, |value|). (A centre near 0 m is ``sigmoid * 102.4 - 51.2``: float32 rounding alone
    moves it by 8e-6 m.)"""
    x0, y0, z0, x1, y1, z1 = cfg.head.pc_range
    scale = torch.ones(10)
    scale[[0, 1, 4]] = torch.tensor([x1 - x0, y1 - y0, z1 - z0])
    boxes, boxes_ref = outputs['all_bbox_preds'], expected['all_bbox_preds']
    box_scale = torch.maximum(scale, boxes_ref.abs() * (scale == 1))
    logits_ok = (outputs['all_cls_scores'] - expected['all_cls_scores']).abs().max() <= tolerance
    return bool(logits_ok) and bool(((boxes - boxes_ref).abs() / box_scale).max() <= tolerance)


@pytest.mark.slow
def test_compiled_head_agrees_with_eager_within_1e5(tiny):
    model, cfg = tiny
    eager = stream_outputs(StreamingDetector(model, cfg,
                                             options=StreamingOptions(score_threshold=0.0)), 3)
    torch._dynamo.reset()
    runtime = EagerRuntime(model, 'cpu', compile_head=True, compile_backend=compile_backend())
    compiled = stream_outputs(StreamingDetector(runtime, cfg,
                                                options=StreamingOptions(score_threshold=0.0)), 3)
    assert all(agree(b, a, cfg, 1e-5) for a, b in zip(eager, compiled))


def test_a_runtime_refuses_model_options(tiny):
    model, cfg = tiny
    with pytest.raises(ValueError, match='compile_head'):
        StreamingDetector(EagerRuntime(model, 'cpu'), cfg,
                          options=StreamingOptions(compile_head=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA graphs (reduce-overhead) need a CUDA device')
def test_cuda_graph_head_agrees_with_eager_on_cuda(tiny):
    model, cfg = tiny
    model = model.to('cuda')
    eager = stream_outputs(StreamingDetector(model, cfg, device='cuda',
                                             options=StreamingOptions(score_threshold=0.0)), 4)
    torch._dynamo.reset()
    runtime = EagerRuntime(model, 'cuda', compile_head=True)
    compiled = stream_outputs(StreamingDetector(runtime, cfg,
                                                options=StreamingOptions(score_threshold=0.0)), 4)
    assert all(agree(b, a, cfg, 1e-4) for a, b in zip(eager, compiled))
