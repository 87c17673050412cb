"""The plugin-free ``gather`` sampling backend (ops/gather_sampling.py, docs/sampling_op.md):
agreement with the 5-D grid_sample backend on the official fixture and on hand-made edge
cases, gradients, dispatch, and the op exported to ONNX and run in onnxruntime."""
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparsebev_core import ops
from sparsebev_core.ops.gather_sampling import msmv_sampling_gather, view_index

FIXTURE = Path(__file__).parent / 'parity' / 'msmv_sampling_fixture_seed0.npz'
ONNX_OPSET = 11          # the lowest opset that exports and loads: Equal on float needs 11
TOLERANCE = 1e-5         # float32, against the torch backend (issue 11)


def fixture_inputs(dtype=torch.float32):
    z = np.load(FIXTURE)
    feats = [torch.from_numpy(z[f'feat_l{l}'].astype(np.float32)).to(dtype) for l in range(4)]
    loc = torch.from_numpy(z['sampling_locations']).to(dtype)
    weights = torch.from_numpy(z['scale_weights']).to(dtype)
    return feats, loc, weights, z['output']


def random_inputs(rows=2, views=3, queries=5, points=3, sizes=((6, 9), (3, 5)), seed=0,
                  dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(rows, 4, views, h, w, generator=g, dtype=dtype) for h, w in sizes]
    uv = torch.rand(rows, queries, points, 2, generator=g, dtype=dtype) * 1.4 - 0.2
    view = torch.randint(0, views, (rows, queries, points, 1), generator=g).to(dtype)
    loc = torch.cat([uv, view / max(views - 1, 1)], dim=-1)
    weights = torch.rand(rows, queries, points, len(sizes), generator=g, dtype=dtype).softmax(-1)
    return feats, loc, weights


def test_gather_matches_torch_backend_on_the_official_fixture():
    feats, loc, weights, official = fixture_inputs()
    ref = ops.msmv_sampling_torch(feats, loc, weights)
    out = msmv_sampling_gather(feats, loc, weights)
    assert out.shape == ref.shape == official.shape
    assert (out - ref).abs().max().item() < TOLERANCE
    np.testing.assert_allclose(out.numpy(), official, atol=5e-5, rtol=0)
    # points outside the image (taps of level 0 all off the map) are part of the comparison
    h, w = feats[0].shape[-2:]
    x, y = loc[..., 0] * (w - 1), loc[..., 1] * (h - 1)
    outside = (x <= -1) | (x >= w) | (y <= -1) | (y >= h)
    assert outside.sum() > 100 and (out[outside.unsqueeze(2).expand_as(out)] == 0).any()


def test_gather_matches_torch_backend_on_channels_last_features_and_edge_points():
    feats, loc, weights = random_inputs(dtype=torch.float32)
    # exactly on borders, half a pixel outside, far outside, on the last pixel centre
    loc[0, 0, :, :2] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-0.1, 0.5]])
    loc[0, 1, :, :2] = torch.tensor([[1.1, 0.5], [-3.0, 7.0], [0.5, -1.0 / 10]])
    ref = ops.msmv_sampling_torch(feats, loc, weights)
    cl = [f.contiguous(memory_format=torch.channels_last_3d) for f in feats]
    assert (msmv_sampling_gather(cl, loc, weights) - ref).abs().max().item() < TOLERANCE
    assert (msmv_sampling_gather(feats, loc, weights) - ref).abs().max().item() < TOLERANCE


def test_taps_never_read_the_neighbouring_view_or_a_non_finite_value_they_do_not_use():
    feats, loc, weights = random_inputs(views=3, sizes=((6, 9),))
    loc[..., 2] = 0.5                                           # every point reads view 1
    loc[0, 0, 0, :2] = torch.tensor([0.5, 1.0 + 0.5 / 5])       # half a pixel below the last row
    loc[0, 0, 1, :2] = torch.tensor([-0.05, 0.0])               # left of the first column
    poisoned = feats[0].clone()
    poisoned[:, :, 0] = float('nan')                            # the views a point never chose
    poisoned[:, :, 2] = 1e30
    out = msmv_sampling_gather([poisoned], loc, weights)
    single_view = F.grid_sample(feats[0][:, :, 1], loc[..., :2] * 2 - 1, mode='bilinear',
                                padding_mode='zeros', align_corners=True)        # [R, C, Q, P]
    expected = single_view * weights[..., 0].unsqueeze(1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected.permute(0, 2, 1, 3), rtol=0, atol=1e-12)


def test_points_outside_every_image_sample_exact_zeros():
    feats, _, weights = random_inputs()
    loc = torch.tensor([-0.6, 1.7, 0.0], dtype=torch.float64).expand(2, 5, 3, 3).contiguous()
    assert msmv_sampling_gather(feats, loc, weights).abs().max().item() == 0.0


def test_view_index_rounds_half_away_from_zero_clamps_and_maps_nan_to_zero():
    v = torch.tensor([0.0, 0.2, 0.4, 0.1, 0.3, -0.5, 1.7, float('nan'), float('inf')])
    assert view_index(v, 6).tolist() == [0, 1, 2, 1, 2, 0, 5, 0, 5]
    assert view_index(torch.tensor([0.0, 0.7]), 1).tolist() == [0, 0]


def test_one_view_works():
    feats, loc, weights = random_inputs(views=1)
    ref = ops.msmv_sampling_torch(feats, loc, weights)
    torch.testing.assert_close(msmv_sampling_gather(feats, loc, weights), ref, rtol=0, atol=1e-12)


def test_gradients_match_the_torch_backend_and_pass_gradcheck():
    feats, loc, weights = random_inputs()
    grads = []
    for fn in (ops.msmv_sampling_torch, msmv_sampling_gather):
        leaves = [f.clone().requires_grad_(True) for f in feats]
        loc_leaf = loc.clone().requires_grad_(True)
        w_leaf = weights.clone().requires_grad_(True)
        out = fn(leaves, loc_leaf, w_leaf)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
        grads.append([*[f.grad for f in leaves], loc_leaf.grad[..., :2], w_leaf.grad])
    for ref, got in zip(*grads):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)

    small_feats, small_loc, small_w = random_inputs(rows=1, views=2, queries=2, points=2,
                                                    sizes=((3, 4), (2, 3)), seed=1)
    def fn(f0, f1, xy, w):
        return msmv_sampling_gather([f0, f1], torch.cat([xy, small_loc[..., 2:]], -1), w)
    args = [t.clone().requires_grad_(True) for t in (*small_feats, small_loc[..., :2], small_w)]
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7)


def test_set_backend_gather_dispatches_and_auto_stays_torch_on_cpu():
    feats, loc, weights, _ = fixture_inputs()
    assert 'gather' in ops.available_backends()
    try:
        ops.set_backend('gather')
        assert ops.resolve_backend(loc) == 'gather'
        assert torch.equal(ops.msmv_sampling(feats, loc, weights),
                           msmv_sampling_gather(feats, loc, weights))
    finally:
        ops.set_backend('auto')
    assert ops.resolve_backend(loc) == 'torch'
    assert ops.prefers_channels_last('gather', torch.device('cpu'))
    assert ops.prefers_channels_last('torch', torch.device('cpu'))


class _SamplingOp(torch.nn.Module):
    def forward(self, f0, f1, f2, f3, locations, scale_weights):
        return msmv_sampling_gather([f0, f1, f2, f3], locations, scale_weights)


def test_onnx_export_runs_in_onnxruntime_like_torch():
    onnx = pytest.importorskip('onnx', reason='onnx not installed (pip install -e .[onnx])')
    ort = pytest.importorskip('onnxruntime', reason='onnxruntime not installed (pip install -e .[onnx])')
    feats, loc, weights, _ = fixture_inputs()
    names = ['feat_l0', 'feat_l1', 'feat_l2', 'feat_l3', 'locations', 'scale_weights']
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')                # the TorchScript exporter's deprecation notice
        torch.onnx.export(_SamplingOp(), (*feats, loc, weights), buffer, opset_version=ONNX_OPSET,
                          dynamo=False, input_names=names, output_names=['sampled'])
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model, full_check=True)
    assert {node.domain for node in model.graph.node} <= {'', 'ai.onnx'}     # no custom ops
    op_types = {node.op_type for node in model.graph.node}
    assert 'Gather' in op_types and not op_types & {'GridSample', 'ScatterND', 'Loop', 'If'}
    session = ort.InferenceSession(buffer.getvalue(), providers=['CPUExecutionProvider'])
    inputs = dict(zip(names, [t.numpy() for t in (*feats, loc, weights)]))
    out = session.run(None, inputs)[0]
    ref = ops.msmv_sampling_torch(feats, loc, weights).numpy()
    assert np.abs(out - ref).max() < TOLERANCE


def test_float16_features_keep_float32_positions():
    feats, loc, weights, _ = fixture_inputs()
    half = [f.half() for f in feats]                           # the fixture's values are float16
    out = msmv_sampling_gather(half, loc, weights)
    assert out.dtype == torch.float16
    ref = ops.msmv_sampling_torch([f.float() for f in half], loc, weights)
    torch.testing.assert_close(out.float(), ref, rtol=2e-3, atol=2e-3)
