"""What the v1 and v2 parity tests (test_parity.py, test_parity_v2.py) do alike: load a fixture's
helper scripts, compare checksums, load the fixture's filled weights the way a user loads an
official checkpoint, and summarise feature maps per image."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from sparsebev_core.checkpoints.official import load_checkpoint
from sparsebev_core.recipe.config import ModelConfig
from sparsebev_core.model.detector import SparseBEV, build_model


def load_script(path: Path, module_name: str) -> ModuleType:
    """Import a fixture's own script (``inputs.py``, ``fill_v2.py``, ...) from its file."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sha256_mismatches(expected: dict, actual: dict) -> list[str]:
    """The checksum entries of ``expected`` that ``actual`` does not reproduce, for messages."""
    return [f'{k}: fixture {expected[k][:16]}... ours {str(actual.get(k, "missing"))[:16]}...'
            for k in expected if expected[k] != actual.get(k)]


def stats_per_image(levels: list[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mean, std) over (C, h, w) of each image, float64, per level ``[N_img, C, h, w]``."""
    out = []
    for x in levels:
        x = x.detach().cpu().double().flatten(1)                               # [N_img, C*h*w]
        out.append((x.mean(1).numpy(), x.std(1, unbiased=False).numpy()))
    return out


def model_with_filled_weights(cfg: ModelConfig, manifest_path: Path, fill_lib: ModuleType,
                              meta: dict, tmp_dir: Path, name: str) -> SparseBEV:
    """``cfg``'s model (float32, eval) with the fixture's filled weights: checksum against
    ``meta['weights_sha256']``, saved as an official mmcv-style checkpoint, loaded strictly
    through ``load_checkpoint``."""
    manifest = json.loads(manifest_path.read_text())
    weights = fill_lib.fill_state_dict(manifest, seed=int(meta.get('weights_seed', 0)))
    weights_sha = fill_lib.state_dict_checksum(weights)
    assert weights_sha == meta['weights_sha256'], \
        f'{name}: filled weights checksum {weights_sha} != fixture {meta["weights_sha256"]}'
    model = build_model(cfg).float().eval()
    ckpt = tmp_dir / f'{name}_official.pth'
    torch.save({'meta': {'source': f'parity {Path(fill_lib.__file__).name}'}, 'state_dict': weights}, ckpt)
    load_checkpoint(model, ckpt)
    ckpt.unlink()                                     # ~170 MB: do not leave it in pytest's tmp
    return model
