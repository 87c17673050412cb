"""``OnnxRuntime``: an ONNX export folder run by onnxruntime behind the runtime seam.

``StreamingDetector(OnnxRuntime(onnx_dir, cfg), cfg)`` streams exactly as with the torch
runtime: the feature cache, the history choice, the geometry, the time differences and the
top-k decoding stay in ``StreamingDetector``; the two calls run ``encoder.onnx`` and
``head.onnx`` (``export.onnx_export``). Inputs are handed to onnxruntime as numpy views of the
CPU tensors (onnxruntime's CPU provider reads them in place: the cache buffers are never
copied per step); outputs come back as ``torch.from_numpy`` views.

A SparseBEV++ export (manifest ``recurrent``) implements ``run_recurrent_head`` instead of
``run_head`` (``runtime.RecurrentRuntime``): the state goes in and the next state comes out of
the graph, and ``StreamingDetector`` carries it between calls exactly as with ``EagerRuntime``.

Start-up checks, all before any step (``onnx_manifest.read_manifest``): the export belongs to the
configured model, each graph is complete (size and sha256), the requested execution providers
are installed; onnxruntime missing is a ``MissingDependencyError``. Nothing is half-loaded: a
failure raises before the runtime exists.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..errors import MissingDependencyError
from ..model.recurrent_state import EgoMotion, RecurrentState
from ..recipe.config import ModelConfig
from .onnx_manifest import (ENCODER_FILE, HEAD_FILE, NEXT_STATE_NAMES, ONNX_INSTALL_HINT,
                            OnnxExportError, next_state_from, read_manifest, recurrent_head_feed)

Tensor = torch.Tensor

PROVIDER_ALIASES = {'cpu': 'CPUExecutionProvider', 'cuda': 'CUDAExecutionProvider',
                    'tensorrt': 'TensorrtExecutionProvider'}
DEFAULT_PROVIDERS = ('CPUExecutionProvider',)


class ProviderUnavailableError(OnnxExportError):
    """A requested onnxruntime execution provider is not in the installed onnxruntime."""


def import_onnxruntime():
    """The ``onnxruntime`` module, or ``MissingDependencyError`` with the install command."""
    try:
        import onnxruntime
    except ImportError as err:
        raise MissingDependencyError(f'runtime onnxruntime needs the onnxruntime package, which '
                                     f'is not installed: {ONNX_INSTALL_HINT}') from err
    return onnxruntime


def resolve_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """Full provider names (aliases ``cpu``, ``cuda``, ``tensorrt`` allowed), each installed."""
    names = [PROVIDER_ALIASES.get(p.lower(), p) for p in requested] or list(DEFAULT_PROVIDERS)
    missing = [p for p in names if p not in available]
    if missing:
        raise ProviderUnavailableError(
            f'onnxruntime execution provider(s) {missing} are not available in this onnxruntime '
            f'(available: {list(available)}); set onnx_providers to available ones, or install '
            'the onnxruntime build that has them (onnxruntime-gpu for CUDA / TensorRT)')
    return names


SEAM_OUTPUTS = ('all_cls_scores', 'all_bbox_preds')
RECURRENT_SEAM_OUTPUTS = (*SEAM_OUTPUTS, 'propagated_index', 'propagation_used')


class OnnxRuntime:
    """The seam calls on onnxruntime sessions of an export folder: ``encode`` and ``run_head``,
    or ``encode`` and ``run_recurrent_head`` for a SparseBEV++ export.

    Args:
        onnx_dir: the folder written by ``sparsebev export-onnx`` (``export.json`` + graphs).
        cfg: the model the caller expects; the manifest must match it.
        providers: onnxruntime execution providers in priority order (full names or the
            aliases ``cpu``, ``cuda``, ``tensorrt``); default CPU.
        threads: onnxruntime intra-op threads (0: onnxruntime's default).
        num_cameras: cameras per frame the caller will feed (None: not checked).
    """

    def __init__(self, onnx_dir: str | Path, cfg: ModelConfig,
                 providers: Sequence[str] = DEFAULT_PROVIDERS, threads: int = 0,
                 num_cameras: int | None = None) -> None:
        ort = import_onnxruntime()
        self.manifest = read_manifest(onnx_dir, cfg, num_cameras)
        self.providers = resolve_providers(providers, ort.get_available_providers())
        folder = Path(onnx_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        self.encoder = _session(ort, folder / ENCODER_FILE, options, self.providers)
        self.head = _session(ort, folder / HEAD_FILE, options, self.providers)
        graphs = self.manifest['graphs']
        self.level_names = [o['name'] for o in graphs['encoder']['outputs']]
        # the head's per-level inputs: the cache buffers (v1) or the current frame's levels
        self.head_level_names = [i['name'] for i in graphs['head']['inputs']][:len(self.level_names)]
        self.recurrent = self.manifest.get('recurrent')          # None: a feature-cache head
        self.device = torch.device('cpu')           # inputs are handed over as host memory
        self.legacy_yaw_convention = bool(self.manifest['model']['legacy_yaw_convention'])

    def encode(self, images: Tensor) -> list[Tensor]:
        """uint8 RGB ``[N, 3, H, W]`` -> per level ``[N, C, h_l, w_l]`` float32."""
        levels = self.encoder.run(self.level_names, {'images': _host(images)})
        return [torch.from_numpy(level) for level in levels]

    def run_head(self, cache_levels: Sequence[Tensor], slots: Tensor, lidar2img: Tensor,
                 time_diff: Tensor, valid_views: Tensor | None = None) -> dict[str, Tensor]:
        """The cache buffers as they are + ``slots``, ``lidar2img``, ``time_diff`` and the
        camera mask ``valid_views [1, T*N]`` (None: all present) -> ``all_cls_scores
        [L, 1, Q, K]``, ``all_bbox_preds [L, 1, Q, 10]``."""
        if self.recurrent is not None:
            raise TypeError(f'{self.manifest["model"]["name"]!r} is a recurrent SparseBEV++ '
                            'export: run_recurrent_head')
        if valid_views is None:
            valid_views = torch.ones(lidar2img.shape[:2], dtype=torch.bool)
        feed = {name: _host(level) for name, level in zip(self.head_level_names, cache_levels)}
        feed.update(slots=_host(slots), lidar2img=_host(lidar2img), time_diff=_host(time_diff),
                    valid_views=_host(valid_views.to(torch.bool)))
        outputs = self.head.run(list(SEAM_OUTPUTS), feed)
        return {name: torch.from_numpy(out) for name, out in zip(SEAM_OUTPUTS, outputs)}

    def run_recurrent_head(self, features: Sequence[Tensor], lidar2img: Tensor,
                           state: RecurrentState, motion: EgoMotion, propagate: Tensor,
                           valid_views: Tensor | None = None
                           ) -> tuple[dict[str, Tensor], RecurrentState]:
        """The seam's recurrent head call on ``head.onnx`` (docs/architecture.md, "The recurrent
        head call"): levels ``[N, C, h_l, w_l]``, lidar2img ``[1, N, 4, 4]``, the state (the
        variable form is padded to the fixed one), the motion since its frame, propagate
        ``[1]`` bool, valid_views ``[1, N]`` bool or None (all present) -> (``all_cls_scores``,
        ``all_bbox_preds``, ``propagated_index``, ``propagation_used``; the next fixed-form
        state). Shapes that do not fit the export raise ``RecurrentStateError``."""
        if self.recurrent is None:
            raise TypeError(f'{self.manifest["model"]["name"]!r} is a feature-cache export: run_head')
        state = state.padded(self.recurrent['memory_len'])
        state.check(1, self.recurrent['embed_dims'], self.recurrent['num_propagated'],
                    self.recurrent['memory_len'])
        motion.check(1)
        if valid_views is None:
            valid_views = torch.ones(lidar2img.shape[:2], dtype=torch.bool)
        feed = recurrent_head_feed(features, lidar2img, state, motion, torch.as_tensor(propagate),
                                   valid_views)
        names = [*RECURRENT_SEAM_OUTPUTS, *NEXT_STATE_NAMES]
        out = dict(zip(names, self.head.run(names, {k: _host(v) for k, v in feed.items()})))
        return ({name: torch.from_numpy(out[name]) for name in RECURRENT_SEAM_OUTPUTS},
                next_state_from(out))


def _host(tensor: Tensor):
    """A numpy view of a CPU tensor (a copy only when it lives on a GPU)."""
    return tensor.detach().cpu().numpy()


def _session(ort, path: Path, options, providers: list[str]):
    """An ``InferenceSession``; an unreadable graph is an ``OnnxExportError`` naming the file."""
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:        # onnxruntime raises its own Fail / InvalidProtobuf / ...
        raise OnnxExportError(f'onnxruntime cannot load {path} ({type(err).__name__}: '
                              f'{str(err).strip()[:300]}); export it again with '
                              'sparsebev export-onnx ... --force') from err
