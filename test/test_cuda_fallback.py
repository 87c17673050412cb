"""The CUDA backend's guard: a build without a kernel for the present GPU falls back to the
torch backend with one warning (``ops.cuda_backend.with_fallback``), tested with fakes."""
import warnings

import pytest

from sparsebev_core.ops import cuda_backend


class Fake:
    """A kernel that fails (or not) and counts its calls."""

    def __init__(self, error=None, result='kernel'):
        self.error, self.result, self.calls = error, result, 0

    def __call__(self, *args):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.result


def test_no_kernel_image_falls_back_with_one_warning():
    kernel = Fake(RuntimeError('CUDA error: no kernel image is available for execution on the device'))
    fallback = Fake(result='torch')
    guarded = cuda_backend.with_fallback(kernel, fallback)
    with pytest.warns(RuntimeWarning, match='cannot run on this GPU') as caught:
        assert guarded(1, 2) == 'torch'
    with warnings.catch_warnings():
        warnings.simplefilter('error')                   # no second warning
        assert [guarded(1, 2) for _ in range(3)] == ['torch'] * 3
    assert len(caught) == 1 and kernel.calls == 1 and fallback.calls == 4


def test_other_errors_are_raised_and_a_working_kernel_stays():
    broken = cuda_backend.with_fallback(Fake(RuntimeError('CUDA out of memory')), Fake())
    with pytest.raises(RuntimeError, match='out of memory'):
        broken()
    kernel, fallback = Fake(), Fake(result='torch')
    guarded = cuda_backend.with_fallback(kernel, fallback)
    assert [guarded() for _ in range(3)] == ['kernel'] * 3
    assert fallback.calls == 0 and guarded.fallback_state == {'checked': True, 'fallen_back': False}
