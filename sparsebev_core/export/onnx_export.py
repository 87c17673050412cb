"""``sparsebev export-onnx``: the encoder and head graphs of a preset, and their manifest.

Writes into ``--out DIR``:

* ``encoder.onnx``: uint8 RGB ``images [N, 3, H, W]`` at the network input size ->
  ``level0 .. level{L-1}`` ``[N, C, h_l, w_l]`` float32 (normalisation inside);
* ``head.onnx``: ``cache_level0 ..`` ``[S, N, C, h_l, w_l]`` (the feature cache buffers as
  they are; ``S`` is the one dynamic axis, ``cache_slots``), ``slots [T]`` int64,
  ``lidar2img [1, T*N, 4, 4]`` float32, ``time_diff [1, T]`` float32, ``valid_views [1, T*N]``
  bool (the cameras present in each frame; all True for a complete one) -> ``cls_scores [1, Q, K]``
  and ``bbox_preds [1, Q, 10]`` of the last decoder layer, ``all_cls_scores [L, 1, Q, K]`` and
  ``all_bbox_preds [L, 1, Q, 10]`` of every layer (for checks);
* for a recurrent SparseBEV++ preset (``*_memory``) ``head.onnx`` is one frame of the recurrent
  head instead (``graphs.RecurrentHeadGraph``, every shape fixed): ``level0 ..`` ``[N, C, h_l,
  w_l]``, ``lidar2img [1, N, 4, 4]``, the fixed-form state, ``elapsed``, ``prev_to_current``,
  ``propagate``, ``valid_views`` -> the outputs above, ``propagated_index``,
  ``propagation_used`` and the next state (``next_<name>``); docs/deploy.md, "SparseBEV++: the
  recurrent head graph";
* ``export.json``: the manifest (``streaming.onnx_manifest``): model, checkpoint sha256, graphs with
  their input/output names, shapes, dtypes and sha256, opset, sampling formulation
  (``gather``), fixed shapes at batch 1, the recurrent state's inputs and outputs
  (``recurrent``; None for v1), and the deviation from PyTorch measured here.

The head is traced with the plugin-free ``gather`` sampling backend (docs/sampling_op.md), so
both graphs hold only default-domain ONNX ops (checked). ``--precision fp16`` exports the
backbone and FPN in float16 (the head always stays float32, as in ``EagerRuntime``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import InputError, MissingDependencyError, UsageError
from ..geometry import CAMERA_NAMES
from ..recipe.config import ModelConfig
from ..recipe.frame_layout import check_streamable
from ..streaming.onnx_manifest import (ENCODER_FILE, FORMAT, FORMAT_VERSION, HEAD_FILE,
                                       MANIFEST_FILE, ONNX_INSTALL_HINT, recurrent_entry,
                                       sha256_of_file)
from .recurrent_probe import max_abs

DEFAULT_OPSET = 17          # LayerNormalization native; the gather sampling needs >= 11
MIN_OPSET = 11
PRECISIONS = ('fp32', 'fp16')
SAMPLING_FORMULATION = 'gather'
ALLOWED_DOMAINS = {'', 'ai.onnx'}


class ExportError(InputError):
    """The export cannot be written (output folder, options) or failed its own checks."""


def require_onnx():
    """``(onnx, onnxruntime)``, or ``MissingDependencyError`` with the install command."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise MissingDependencyError(f'{err.name or "onnx"} is not installed: {ONNX_INSTALL_HINT}') from err
    return onnx, onnxruntime


@contextmanager
def sampling_backend(name: str) -> Iterator[None]:
    """``ops.set_backend(name)`` for the block, the previous backend restored after."""
    from .. import ops
    previous = ops.get_backend()
    ops.set_backend(name)
    try:
        yield
    finally:
        ops.set_backend(previous)


def probe_inputs(cfg: ModelConfig, num_cameras: int, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic inputs for the export-time check: random uint8 images ``[N, 3, H, W]``,
    a ring of ``num_cameras`` outward-looking pinhole cameras moving forward at 5 m/s
    (``lidar2img [1, T*N, 4, 4]`` float32, so that most sampling points land in some image)
    and ``time_diff [1, T]`` = 0.5 s steps."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.input_size
    T = cfg.num_frames
    images = torch.randint(0, 256, (num_cameras, 3, h, w), generator=g, dtype=torch.uint8)
    time_diff = (0.5 * torch.arange(T, dtype=torch.float64))[None].float()
    K = np.array([[0.7 * w, 0, w / 2, 0], [0, 0.7 * w, h / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    mats = []
    for t in range(T):
        for i in range(num_cameras):
            a = 2 * math.pi * i / num_cameras
            forward, right, down = [math.cos(a), math.sin(a), 0], [math.sin(a), -math.cos(a), 0], [0, 0, -1]
            cam_from_model = np.eye(4)
            cam_from_model[:3, :3] = np.array([right, down, forward])
            cam_from_model[:3, 3] = -cam_from_model[:3, :3] @ np.array([2.5 * t, 0.0, 1.5])
            mats.append(K @ cam_from_model)
    lidar2img = torch.from_numpy(np.stack(mats).astype(np.float32))[None]
    return images, lidar2img, time_diff


def _check_graph(onnx, path: Path) -> list[str]:
    """onnx.checker on the file; raises ``ExportError`` on a custom-domain op. Returns the op types."""
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    domains = {node.domain for node in model.graph.node} - ALLOWED_DOMAINS
    if domains:
        raise ExportError(f'{path} uses custom-domain ops {sorted(domains)}: not deployable without a plugin')
    return sorted({node.op_type for node in model.graph.node})


def _io_spec(names, arrays, dynamic: dict[str, dict[int, str]] | None = None) -> list[dict]:
    dynamic = dynamic or {}
    specs = []
    for name, a in zip(names, arrays):
        shape: list = list(a.shape)
        for axis, axis_name in dynamic.get(name, {}).items():
            shape[axis] = axis_name
        specs.append(dict(name=name, shape=shape, dtype=str(a.dtype).replace('torch.', '')))
    return specs


@dataclass
class HeadExport:
    """What exporting and measuring a head graph gives the manifest."""
    inputs: list[dict]
    outputs: list[dict]
    deviation: dict
    dynamic_axes: dict[str, str]


def _session(ort, path: Path):
    return ort.InferenceSession(str(path), ort.SessionOptions(), providers=['CPUExecutionProvider'])


def _export_cache_head(model, levels: list[torch.Tensor], lidar2img: torch.Tensor,
                       time_diff: torch.Tensor, path: Path, opset: int, ort) -> HeadExport:
    """``head.onnx`` of a v1 model (``HeadGraph``): traced on a cache of T + 1 slots, each
    frame's levels scaled differently, read in a scrambled order; measured on the same."""
    from ..streaming.runtime import gather_slots
    from .graphs import HEAD_OUTPUTS, HeadGraph

    T = model.cfg.num_frames
    cache = [torch.stack([lv * (1.0 + 0.05 * s) for s in range(T + 1)]) for lv in levels]
    slots = torch.tensor([(3 * t + 1) % (T + 1) for t in range(T)], dtype=torch.int64)
    with torch.inference_mode():                                     # the PyTorch reference
        ref_head = model.pts_bbox_head.forward_time_diff(
            gather_slots(cache, slots), lidar2img, time_diff, image_hw=tuple(model.cfg.input_size))
    cache_names = [f'cache_level{i}' for i in range(len(levels))]
    valid_views = torch.ones(lidar2img.shape[:2], dtype=torch.bool)  # [1, T*N]: all present
    head_inputs = [*cache_names, 'slots', 'lidar2img', 'time_diff', 'valid_views']
    inputs = (*cache, slots, lidar2img, time_diff, valid_views)
    cache_dynamic = {name: {0: 'cache_slots'} for name in cache_names}
    with sampling_backend(SAMPLING_FORMULATION), torch.no_grad():
        _export(HeadGraph(model), inputs, path, opset, head_inputs, list(HEAD_OUTPUTS), cache_dynamic)
        head_eager = HeadGraph(model)(*inputs)
    ort_head = dict(zip(HEAD_OUTPUTS, _session(ort, path).run(
        list(HEAD_OUTPUTS), {name: t.numpy() for name, t in zip(head_inputs, inputs)})))
    ref = {k: v.numpy() for k, v in ref_head.items()}
    layers = ref['all_cls_scores'].shape[0]
    deviation = {
        'inputs': 'probe_inputs(seed 0): random uint8 images, a ring of pinhole cameras, '
                  f'a cache of S={T + 1} slots; onnxruntime {ort.__version__} CPUExecutionProvider '
                  'vs PyTorch eager float32 (default sampling backend)',
        'head_all_cls_scores_max_abs_per_layer': [
            max_abs(ort_head['all_cls_scores'][l], ref['all_cls_scores'][l]) for l in range(layers)],
        'head_all_bbox_preds_max_abs_per_layer': [
            max_abs(ort_head['all_bbox_preds'][l], ref['all_bbox_preds'][l]) for l in range(layers)],
        'head_gather_trace_vs_pytorch_max_abs': max_abs(head_eager[2].numpy(), ref['all_cls_scores']),
    }
    return HeadExport(
        _io_spec(head_inputs, inputs, cache_dynamic),
        _io_spec(list(HEAD_OUTPUTS), [ort_head[k] for k in HEAD_OUTPUTS]), deviation,
        {'cache_slots': 'axis 0 of every cache_level input (the feature cache capacity S >= 1); '
                        'every other axis is fixed'})


def _export_recurrent_head(model, levels: list[torch.Tensor], lidar2img: torch.Tensor,
                           path: Path, opset: int, ort) -> HeadExport:
    """``head.onnx`` of a SparseBEV++ model (``RecurrentHeadGraph``), every shape fixed: traced
    on frame 1 of the probe stream, measured over the whole stream with the state carried by
    each side (``recurrent_probe``)."""
    from ..streaming.onnx_manifest import RECURRENT_OUTPUTS
    from . import recurrent_probe as probe
    from .graphs import RecurrentHeadGraph

    stream = probe.probe_stream(levels, lidar2img, model.pts_bbox_head.memory_cfg.max_time_interval)
    torch_run = probe.run_torch(model, stream)
    trace_inputs = probe.feed(stream[probe.TRACE_FRAME], torch_run[probe.TRACE_FRAME][0])
    with sampling_backend(SAMPLING_FORMULATION), torch.no_grad():
        _export(RecurrentHeadGraph(model), tuple(trace_inputs.values()), path, opset,
                list(trace_inputs), list(RECURRENT_OUTPUTS), {})
    onnx_run = probe.run_onnx(_session(ort, path), stream, torch_run)
    deviation = {
        'inputs': f'probe_inputs(seed 0) seen {probe.PROBE_FRAMES} times, the ego {probe.PROBE_STEP_M} m '
                  f'forward every {probe.PROBE_STEP_S} s, from the empty state, each frame from the '
                  f'state PyTorch returned (teacher forcing); onnxruntime {ort.__version__} '
                  'CPUExecutionProvider vs PyTorch eager float32 (default sampling backend)',
        **probe.deviation(torch_run, onnx_run, model.pts_bbox_head.memory_cfg.len_per_frame),
    }
    outputs = onnx_run[probe.TRACE_FRAME][0]
    return HeadExport(_io_spec(list(trace_inputs), trace_inputs.values()),
                      _io_spec(list(RECURRENT_OUTPUTS), [outputs[k] for k in RECURRENT_OUTPUTS]),
                      deviation, {})


def export_onnx(cfg: ModelConfig, checkpoint: str | None, out_dir: str | Path, *,
                opset: int = DEFAULT_OPSET, precision: str = 'fp32',
                num_cameras: int = len(CAMERA_NAMES), config_file: str | None = None,
                force: bool = False, random_weights_ok: bool = False,
                log: Callable[[str], None] = print) -> dict:
    """Export ``encoder.onnx`` and ``head.onnx`` of ``cfg`` with ``checkpoint`` (bundled or
    random ``tiny`` / ``tiny_memory`` weights when None: ``loading.load_model``;
    ``random_weights_ok``: any preset, for timing), check them, measure their deviation from
    PyTorch in onnxruntime (CPU) and write ``export.json``. The head is ``HeadGraph`` (the
    feature cache) or, for a recurrent SparseBEV++ model, ``RecurrentHeadGraph`` (the state in
    and out). Returns the manifest."""
    onnx, ort = require_onnx()
    from ..loading import load_model
    from .graphs import EncoderGraph

    check_streamable(cfg)                 # the graphs serve a stream: no future frames
    if opset < MIN_OPSET:
        raise UsageError(f'--opset {opset}: the gather sampling needs opset >= {MIN_OPSET}')
    if precision not in PRECISIONS:
        raise UsageError(f'--precision must be one of {PRECISIONS}, got {precision!r}')
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f'--out {out} exists and is not a folder')
    existing = [out / f for f in (ENCODER_FILE, HEAD_FILE, MANIFEST_FILE) if (out / f).exists()]
    if existing and not force:
        raise ExportError(f'{existing[0]} exists; choose another --out or pass --force')
    out.mkdir(parents=True, exist_ok=True)

    loaded = load_model(cfg, checkpoint, log=log, random_weights_ok=random_weights_ok)
    model = loaded.model.float().eval()
    images, lidar2img, time_diff = probe_inputs(cfg, num_cameras)
    with torch.inference_mode():                                     # the PyTorch reference
        ref_levels = [f[0] for f in model.extract_features(images[None])]
    level_names = [f'level{i}' for i in range(len(ref_levels))]

    head_path = out / HEAD_FILE
    log(f'exporting {head_path} (opset {opset}, sampling {SAMPLING_FORMULATION}'
        f'{", the recurrent state as inputs and outputs" if model.is_recurrent else ""})')
    if model.is_recurrent:
        head = _export_recurrent_head(model, ref_levels, lidar2img, head_path, opset, ort)
    else:
        head = _export_cache_head(model, ref_levels, lidar2img, time_diff, head_path, opset, ort)
    encoder_path = out / ENCODER_FILE
    log(f'exporting {encoder_path} (opset {opset}, {precision})')
    with sampling_backend(SAMPLING_FORMULATION), torch.no_grad():
        encoder = EncoderGraph(model, half=precision == 'fp16')
        _export(encoder, (images,), encoder_path, opset, ['images'], level_names, {})

    ops_used = {'encoder': _check_graph(onnx, encoder_path), 'head': _check_graph(onnx, head_path)}
    ort_levels = _session(ort, encoder_path).run(level_names, {'images': images.numpy()})
    deviation = {
        'encoder_levels_max_abs': [max_abs(o, r.numpy()) for o, r in zip(ort_levels, ref_levels)],
        'encoder_levels_absmax': [float(r.abs().max()) for r in ref_levels],
        **head.deviation,
    }
    manifest = {
        'format': FORMAT, 'format_version': FORMAT_VERSION,
        'model': {'name': cfg.name, 'preset': None if config_file else cfg.name,
                  'config_file': str(config_file) if config_file else None,
                  'checkpoint': loaded.checkpoint,
                  'checkpoint_sha256': sha256_of_file(loaded.checkpoint) if loaded.checkpoint else None,
                  'legacy_yaw_convention': bool(model.pts_bbox_head.legacy_yaw_convention)},
        'opset': opset, 'precision': precision, 'sampling': SAMPLING_FORMULATION,
        'batch': 1, 'fixed_shapes': True, 'dynamic_axes': head.dynamic_axes,
        'num_cameras': num_cameras, 'num_frames': cfg.num_frames, 'input_hw': list(cfg.input_size),
        'recurrent': recurrent_entry(cfg),
        'graphs': {
            'encoder': {'file': ENCODER_FILE, 'sha256': sha256_of_file(encoder_path),
                        'bytes': encoder_path.stat().st_size,
                        'inputs': _io_spec(['images'], [images]),
                        'outputs': _io_spec(level_names, ort_levels), 'ops': ops_used['encoder']},
            'head': {'file': HEAD_FILE, 'sha256': sha256_of_file(head_path),
                     'bytes': head_path.stat().st_size, 'inputs': head.inputs,
                     'outputs': head.outputs, 'ops': ops_used['head']},
        },
        'deviation_from_pytorch': deviation,
        'exported_with': {'torch': torch.__version__, 'onnx': onnx.__version__,
                          'onnxruntime': ort.__version__},
    }
    tmp = out / (MANIFEST_FILE + '.tmp')
    tmp.write_text(json.dumps(manifest, indent=2) + '\n')
    os.replace(tmp, out / MANIFEST_FILE)
    log(f'wrote {out / MANIFEST_FILE}: encoder max abs deviation '
        f'{max(deviation["encoder_levels_max_abs"]):.2e}, head logits (last layer) '
        f'{deviation["head_all_cls_scores_max_abs_per_layer"][-1]:.2e}, boxes '
        f'{deviation["head_all_bbox_preds_max_abs_per_layer"][-1]:.2e}')
    return manifest


def _export(module: torch.nn.Module, args: tuple, path: Path, opset: int, input_names: list[str],
            output_names: list[str], dynamic_axes: dict) -> None:
    """``torch.onnx.export`` (TorchScript exporter) into ``path`` via a temporary file."""
    tmp = path.with_name(path.name + '.tmp')
    with warnings.catch_warnings():     # shape checks become constants: intended (fixed shapes)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        torch.onnx.export(module.eval(), args, str(tmp), opset_version=opset, dynamo=False,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes or None, do_constant_folding=True)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparsebev export-onnx``."""
    from ..cli_common import add_model_arguments
    add_model_arguments(parser, preset_default=None,
                        preset_help='model preset (or --config FILE)')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='folder for encoder.onnx, head.onnx and export.json')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset (default {DEFAULT_OPSET}; >= {MIN_OPSET})')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp32',
                        help="'fp32' (default) or 'fp16' backbone + FPN (the head stays fp32)")
    parser.add_argument('--cameras', type=int, default=len(CAMERA_NAMES),
                        help=f'cameras per frame N (default {len(CAMERA_NAMES)})')
    parser.add_argument('--force', action='store_true', help='replace the files in DIR')


def main(args: argparse.Namespace) -> int:
    """Export, check, measure; prints where the files went."""
    from ..cli_common import model_config_from_args
    cfg = model_config_from_args(args)
    export_onnx(cfg, args.checkpoint, args.out, opset=args.opset, precision=args.precision,
                num_cameras=args.cameras, config_file=args.config, force=args.force)
    return 0
