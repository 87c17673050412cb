#!/usr/bin/env python3
"""r50_nuimg_704x256_memory through ONNX on the v2 parity sequence (a hand check; docs/deploy.md).

    nice -n 10 .venv/bin/python scripts/onnx_v2_parity.py [--out /tmp/onnx_v2_parity]

Too slow for the suite on the 2-core VM (export 2.5 min, then about a minute per frame for
both runtimes), so the suite runs the same comparison on ``tiny_memory``
(``test/test_onnx_recurrent.py``). Here: the preset is exported from the fixture weights of
``test/parity_v2`` (rebuilt from the seed, checksum checked, as ``test_parity_v2.py``); every
frame runs through ``OnnxRuntime`` and ``EagerRuntime`` from the official state after the
previous frame (README check 2: teacher forcing; frame 0 from the empty state), and

1. onnxruntime is judged against the official reference with the checks and tolerances the
   PyTorch parity test applies to the same frames (decoder layers, propagated rows, decoded
   boxes; ``check_reference_v2.py``), as ``test_onnx_parity.py`` does for v1;
2. onnxruntime is compared with the torch runtime, head call by head call
   (``recurrent_probe.compare_step``: outputs per layer, next state over the rows that carry
   the same query, propagated rows agreeing, near-tie gap), with the per-query median / p99 /
   max of the logits and boxes of the last layer.

Exits non-zero when a check of 1 fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'test')]

from sparsebev_core.export.onnx_export import export_onnx              # noqa: E402
from sparsebev_core.export.recurrent_probe import compare_step         # noqa: E402
from sparsebev_core.loading import load_model                          # noqa: E402
from sparsebev_core.model.recurrent_state import (EgoMotion, RecurrentState,  # noqa: E402
                                                  propagation_gate, warp_boxes)
from sparsebev_core.recipe.presets import get_preset                   # noqa: E402
from sparsebev_core.streaming.onnx_runtime import OnnxRuntime          # noqa: E402
from sparsebev_core.streaming.runtime import EagerRuntime              # noqa: E402
from test_parity_v2 import (MANIFEST_NAME, PRESET, REFERENCES, _fixture_file, check_lib,  # noqa: E402
                            fill_lib, frame_record, inputs_lib, official_motion,
                            reference_state, stack)


def per_query(a: torch.Tensor, b: torch.Tensor) -> str:
    """median / p99 / max over the queries of the per-query max-abs difference ``[1, Q, D]``."""
    pq = (a.double() - b.double()).abs().amax(dim=-1).flatten().numpy()
    return f'{np.median(pq):.1e} / {np.percentile(pq, 99):.1e} / {pq.max():.1e}'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='/tmp/onnx_v2_parity', help='work folder (export, weights)')
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = REFERENCES[0]
    ref = dict(np.load(path))
    memory_state = dict(np.load(path.with_name(path.stem + '_memory_state.npz')))
    meta = json.loads(str(ref['meta_json']))
    frames = inputs_lib.build_sequence(int(meta['seed']), width=int(meta['width']), height=int(meta['height']))
    cfg = get_preset(PRESET)
    cfg.input_size = (int(meta['height']), int(meta['width']))
    weights = fill_lib.fill_state_dict(json.loads(_fixture_file(MANIFEST_NAME).read_text()),
                                       seed=int(meta.get('weights_seed', 0)))
    assert fill_lib.state_dict_checksum(weights) == meta['weights_sha256'], 'filled weights checksum'
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / 'official.pth'
    torch.save({'state_dict': weights}, checkpoint)
    del weights
    start = time.perf_counter()
    manifest = export_onnx(cfg, str(checkpoint), out / 'onnx', force=True)
    print(f'export: {time.perf_counter() - start:.0f} s; probe deviation '
          f'{json.dumps(manifest["deviation_from_pytorch"])}')
    eager = EagerRuntime(load_model(cfg, str(checkpoint), log=print).model)
    checkpoint.unlink()                                   # ~170 MB
    onnx_rt = OnnxRuntime(out / 'onnx', cfg)
    head, memory = eager.model.pts_bbox_head, cfg.head.memory
    records, worst = [], {}
    for k, frame in enumerate(frames):
        start = time.perf_counter()
        images = torch.from_numpy(np.ascontiguousarray(frame['img_bgr_uint8'][..., ::-1].transpose(0, 3, 1, 2)))
        lidar2img = torch.from_numpy(frame['lidar2img'])[None]
        if k == 0:
            state = RecurrentState.empty(1, memory.num_propagated, cfg.head.embed_dims, memory.memory_len)
            motion = EgoMotion(torch.zeros(1, dtype=torch.float64), torch.eye(4)[None])
        else:
            state = reference_state(ref, memory_state, k - 1).padded(memory.memory_len)
            motion = official_motion(ref, k)
        gate = propagation_gate(motion.elapsed, memory.max_time_interval, state.has_previous_frame())
        ours, theirs = onnx_rt.encode(images), eager.encode(images)
        a, next_a = onnx_rt.run_recurrent_head(ours, lidar2img, state, motion, gate)
        b, next_b = eager.run_recurrent_head(theirs, lidar2img, state, motion, gate)
        step = compare_step(b, next_b, a, next_a, memory.len_per_frame)
        for key in ('all_cls_scores', 'all_bbox_preds'):
            worst[key] = max(worst.get(key, 0.0), step[key][-1])
        for key, value in step['next_state'].items():
            worst[key] = max(worst.get(key, 0.0), value)
        print(f'frame {k} ({time.perf_counter() - start:.0f} s) onnxruntime vs torch: encoder '
              f'{max(float((x - y).abs().max()) for x, y in zip(ours, theirs)):.1e}; last layer '
              f'per query median / p99 / max: logits {per_query(a["all_cls_scores"][-1], b["all_cls_scores"][-1])}, '
              f'boxes {per_query(a["all_bbox_preds"][-1], b["all_bbox_preds"][-1])}; next state '
              f'(same-query rows) {json.dumps({n: float(f"{v:.1e}") for n, v in step["next_state"].items()})}; '
              f'propagated rows agreeing {step["propagated_index_agreement"]:.3f} (largest near-tie gap '
              f'{step["propagated_index_max_logit_gap"]:.1e}); memory_rows / gate equal '
              f'{step["memory_rows_equal"]} / {step["propagation_used_equal"]}', flush=True)
        # the candidate record of the PyTorch parity test, from the onnxruntime outputs
        warped = None if k == 0 else warp_boxes(state.propagated_bbox, motion, head.pc_range)[0].numpy()
        a_full = {**a, 'input_query_bbox': b['input_query_bbox'], 'input_memory_bbox': b['input_memory_bbox']}
        records.append(frame_record(eager.model, a_full, next_a, warped, memory.memory_len))
    cand, lines = stack(records), []
    every = list(range(len(frames)))
    ok = check_lib.check_decoder(cand, ref, lines, every, by_id=False)
    ok &= check_lib.check_propagated(cand, ref, lines, every)
    ok &= check_lib.check_decoded(cand, ref, lines, every)
    print('\n'.join(['onnxruntime vs the official reference (check_reference_v2.py):', *lines]))
    print(f'largest onnxruntime - torch over the sequence: {json.dumps(worst)}')
    print('PASS' if ok else 'FAIL')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
