"""One way to a detector: recipe (preset; official config files are tested with their
loader), weights (given, bundled, or random for ``tiny`` only) and the device ('auto')."""
import pytest
import torch

from sparsebev_core.devices import DeviceError, resolve_device
from sparsebev_core.errors import InputError, UsageError
from sparsebev_core.loading import (WEIGHTS_DIR, MissingCheckpointError, bundled_checkpoint,
                                    load_detector, load_model)
from sparsebev_core.recipe.frame_layout import FrameLayoutError
from sparsebev_core.recipe.presets import UnknownPresetError, get_preset, model_config
from sparsebev_core.streaming.options import StreamingOptions, StreamingOptionsError


def test_model_config_from_a_preset_and_its_errors():
    assert model_config('tiny').name == 'tiny'
    with pytest.raises(UnknownPresetError, match="unknown preset 'nope'") as err:
        model_config('nope')
    assert isinstance(err.value, InputError) and isinstance(err.value, KeyError)
    with pytest.raises(UsageError, match='--preset NAME or --config FILE'):
        model_config(None)


def test_bundled_weights_are_used_when_no_checkpoint_is_given():
    bundled = bundled_checkpoint('tiny')
    assert bundled is not None and bundled.startswith(str(WEIGHTS_DIR))
    assert bundled_checkpoint('r50_nuimg_704x256') is None
    loaded = load_model(get_preset('tiny'))
    assert loaded.checkpoint == bundled and loaded.cfg.name == 'tiny'
    shipped = torch.load(bundled, map_location='cpu', weights_only=True)['state_dict']
    name = next(k for k, v in shipped.items() if v.is_floating_point() and v.numel() > 100)
    assert torch.equal(loaded.model.state_dict()[name], shipped[name].float())


def test_a_bundled_file_belongs_to_the_longest_preset_name_it_starts_with(monkeypatch, tmp_path):
    """``tiny_memory_synthetic.pth`` is tiny_memory's: ``tiny`` must not load it (nor the
    other way round), whatever the files' sort order."""
    for name in ('tiny_memory_synthetic.pth', 'tiny_synthetic.pth', 'tinyx.pth'):
        (tmp_path / name).write_bytes(b'')
    monkeypatch.setattr('sparsebev_core.loading.WEIGHTS_DIR', tmp_path)
    assert bundled_checkpoint('tiny') == str(tmp_path / 'tiny_synthetic.pth')
    assert bundled_checkpoint('tiny_memory') == str(tmp_path / 'tiny_memory_synthetic.pth')
    (tmp_path / 'tiny_synthetic.pth').unlink()
    assert bundled_checkpoint('tiny') is None
    assert bundled_checkpoint('r50_nuimg_704x256_memory') is None


def test_without_weights_tiny_warns_and_other_presets_refuse(monkeypatch):
    monkeypatch.setattr('sparsebev_core.loading.WEIGHTS_DIR', WEIGHTS_DIR / 'nothing_here')
    lines = []
    loaded = load_model(get_preset('tiny'), log=lines.append)
    assert loaded.checkpoint is None and len(lines) == 1 and 'random weights' in lines[0]
    with pytest.raises(MissingCheckpointError, match="required for preset 'r50_nuimg_704x256'"):
        load_model(get_preset('r50_nuimg_704x256'))
    assert load_model(get_preset('tiny'), random_weights_ok=True, log=lines.append).checkpoint is None
    assert len(lines) == 1                                   # the caller said so: no warning


def test_load_detector_resolves_auto_and_passes_the_streaming_options():
    options = StreamingOptions(score_threshold=0.05, max_detections=300, history_spacing=0.25)
    detector = load_detector(get_preset('tiny'), device='auto', options=options)
    expected = 'cuda' if torch.cuda.is_available() else 'cpu'
    assert detector.device.type == expected and detector.cfg.name == 'tiny'
    assert detector.max_detections == 300 and detector.score_threshold == 0.05
    assert detector.history_spacing == 0.25 and detector.options is options


def test_streaming_configuration_errors_are_typed_input_errors(tmp_path):
    """What a user can get wrong in the streaming configuration is an ``InputError`` (one
    line, exit 1 in every command), never a bare ValueError with a traceback."""
    for bad in (dict(history_spacing=-1.0), dict(max_time_gap=0.0), dict(precision='int8'),
                dict(resize_method='lanczos'), dict(device_preprocess=True, resize_method='pil')):
        with pytest.raises(StreamingOptionsError) as refused:
            StreamingOptions(**bad)
        assert isinstance(refused.value, InputError), bad
    with pytest.raises(StreamingOptionsError, match='cannot hold the 3 past frames'):
        load_detector(get_preset('tiny'), device='cpu', options=StreamingOptions(max_cached_frames=2))
    future = get_preset('vit_eva02_1600x640_trainval_future')
    with pytest.raises(FrameLayoutError, match='cannot see the future'):     # before any weights
        load_detector(future, str(tmp_path / 'never_read.pth'), device='cpu')


def test_device_names():
    assert resolve_device('cpu') == 'cpu'
    assert resolve_device('auto') == ('cuda' if torch.cuda.is_available() else 'cpu')
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        resolve_device('gpu0')
    if torch.cuda.is_available():
        assert resolve_device('cuda', local_rank=1) == 'cuda:1'
        assert resolve_device('cuda:0', local_rank=1) == 'cuda:0'
    else:
        with pytest.raises(DeviceError, match='sees no CUDA device'):
            resolve_device('cuda')
