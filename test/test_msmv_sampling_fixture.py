"""The pure-PyTorch sampling backend against the official fixture (docs/official_model.md 3.3, parity README)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsebev_core import ops

FIXTURE = Path(__file__).parent / 'parity' / 'msmv_sampling_fixture_seed0.npz'


def test_torch_backend_matches_official_fixture():
    z = np.load(FIXTURE)
    feats = [torch.from_numpy(z[f'feat_l{l}'].astype(np.float32)) for l in range(4)]
    out = ops.msmv_sampling_torch(feats, torch.from_numpy(z['sampling_locations']),
                                  torch.from_numpy(z['scale_weights']))
    assert out.shape == z['output'].shape
    np.testing.assert_allclose(out.numpy(), z['output'], atol=5e-5, rtol=0)


def test_points_outside_every_image_sample_zero():
    feats = [torch.randn(2, 8, 6, h, w) for h, w in ((8, 12), (4, 6))]
    loc = torch.tensor([-0.6, 1.7, 0.0]).expand(2, 3, 4, 3).contiguous()
    w = torch.full((2, 3, 4, 2), 0.5)
    assert ops.msmv_sampling_torch(feats, loc, w).abs().max().item() == 0.0


def test_set_backend_rejects_unknown_and_missing_cuda():
    with pytest.raises(ValueError):
        ops.set_backend('tensorrt')
    if 'cuda' not in ops.available_backends():
        with pytest.raises(RuntimeError, match='build') as err:
            ops.set_backend('cuda')
        # the real reason the extension did not load is in the message, and the type is the
        # missing-dependency one the CLI maps to exit code 1
        from sparsebev_core.ops import cuda_backend
        from sparsebev_core.errors import MissingDependencyError
        assert cuda_backend.LOAD_ERROR and cuda_backend.LOAD_ERROR in str(err.value)
        assert isinstance(err.value, MissingDependencyError)
    assert ops.get_backend() == 'auto'
    assert ops.resolve_backend(torch.zeros(1, 1, 1, 3)) == 'torch'
