"""Parity through onnxruntime: the r50_nuimg_704x256 graphs exported from the official-format
fixture weights (``test/parity``, built as in ``test_parity.py``), run by ``OnnxRuntime`` on the
fixture inputs, meet the same tolerances as the PyTorch parity test (``test/parity/README.md``
checks 1, 3 and the FPN part of 4): per decoder layer, decoded boxes 300/300.

The encoder runs once per frame (six images), its levels go into ``FeatureSlots`` as in a
stream, and the head reads the eight slots; one fixture (the first) is enough here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip('onnx', reason="onnx not installed (pip install -e '.[onnx]')")
pytest.importorskip('onnxruntime', reason="onnxruntime not installed (pip install -e '.[onnx]')")

from sparsebev_core.export.onnx_export import export_onnx         # noqa: E402
from sparsebev_core.model.coder import decode_predictions          # noqa: E402
from sparsebev_core.model.decoder import compute_time_diff         # noqa: E402
from sparsebev_core.recipe.presets import get_preset               # noqa: E402
from sparsebev_core.streaming.feature_cache import FeatureSlots    # noqa: E402
from sparsebev_core.streaming.onnx_runtime import OnnxRuntime      # noqa: E402
from parity_helpers import sha256_mismatches, stats_per_image   # noqa: E402
from test_parity import (MANIFEST, PRESET, failure_message, fill_lib, fixture_paths,  # noqa: E402
                         inputs_lib, ordered_report)


@pytest.mark.slow
def test_onnxruntime_parity_with_official_outputs(tmp_path):
    path = fixture_paths()[0]
    ref = dict(np.load(path))
    meta = json.loads(str(ref['meta_json']))
    width, height, frames = int(meta['width']), int(meta['height']), int(meta['num_frames'])
    inp = inputs_lib.build_inputs(int(meta['seed']), width=width, height=height, num_frames=frames)
    assert not sha256_mismatches(meta['input_sha256'], inputs_lib.inputs_checksums(inp))
    weights = fill_lib.fill_state_dict(json.loads(MANIFEST.read_text()),
                                       seed=int(meta.get('weights_seed', 0)))
    ckpt = tmp_path / 'official.pth'
    torch.save({'meta': {'source': 'parity fill.py'}, 'state_dict': weights}, ckpt)
    del weights
    cfg = get_preset(PRESET)
    cfg.input_size = (height, width)
    export_onnx(cfg, str(ckpt), tmp_path / 'onnx', log=lambda text: None)
    ckpt.unlink()
    runtime = OnnxRuntime(tmp_path / 'onnx', cfg)

    images = torch.from_numpy(np.ascontiguousarray(
        inp['img_bgr_uint8'][..., ::-1].transpose(0, 3, 1, 2)))            # [T*6, 3, H, W] RGB
    cache = FeatureSlots(max_slots=frames + 1, initial_slots=frames)
    slots = torch.tensor([cache.store(runtime.encode(images[6 * t: 6 * t + 6]))
                          for t in range(frames)], dtype=torch.int64)
    lidar2img = torch.from_numpy(inp['lidar2img'])[None]                     # [1, T*6, 4, 4]
    time_diff = compute_time_diff(torch.from_numpy(inp['img_timestamp'])[None])
    outputs = runtime.run_head(cache.levels, slots, lidar2img, time_diff)
    decoded = decode_predictions(outputs['all_cls_scores'], outputs['all_bbox_preds'], cfg.head,
                                 runtime.legacy_yaw_convention)[0]

    cand = dict(all_cls_scores=outputs['all_cls_scores'].numpy(),
                all_bbox_preds=outputs['all_bbox_preds'].numpy(),
                decoded_boxes=decoded['boxes'].numpy(), decoded_scores=decoded['scores'].numpy(),
                decoded_labels=decoded['labels'].numpy(),
                topk_query_index=decoded['query_index'].numpy(), topk_labels=decoded['labels'].numpy())
    fpn = [level.index_select(0, slots).flatten(0, 1) for level in cache.levels]   # [T*6, C, h, w]
    for lvl, (mean, std) in enumerate(stats_per_image(fpn)):
        cand[f'fpn_l{lvl}_mean_per_img'], cand[f'fpn_l{lvl}_std_per_img'] = mean, std
        index = ref[f'fpn_l{lvl}_sample_index']
        per_frame = fpn[lvl].reshape(frames, 6, *fpn[lvl].shape[1:]).numpy()
        cand[f'fpn_l{lvl}_samples'] = per_frame[:, index[:, 0], index[:, 1], index[:, 2], index[:, 3]]
    ok, lines = ordered_report(cand, ref)
    print('\n'.join(lines))                                    # the deviations, with -rA / -s
    assert ok, failure_message(f'{path.name} (onnxruntime)', lines)
    assert any(line.startswith('[decoded] decoded: 300 of 300') for line in lines), '\n'.join(lines)
    assert sum(1 for line in lines if line.endswith('ok')) >= 12 + 2 + 10, '\n'.join(lines)
