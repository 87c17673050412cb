"""Layering, read from the source (``imports.imports_of``: every import, those inside functions
and under ``TYPE_CHECKING`` included), so an import that only runs in one code path is caught.

Between the three packages: ``sparsebev_core`` imports neither ``sparsebev_ros`` nor
``sparsebev_cli``; ``sparsebev_ros`` does not import ``sparsebev_cli``.

Inside the core, every module lives in a room on a floor (docs/architecture.md, "Layers"); a
module imports only from its own room or from rooms on lower floors, and no two modules import
each other, directly or around a circle, except inside ``ops/`` (the sampling backends and
their registry). The rules the rooms exist for are spelled out one by one below as well.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imports import ROOT, imports_of, module_name

CORE = 'sparsebev_core'
UPPER_LAYERS = ('sparsebev_ros', 'sparsebev_cli')
CONTRACTS = ('errors', 'geometry', 'frame', 'rig', 'resets', 'attributes', 'image', 'png',
             'yaml_file')
FLOORS: dict[str, int] = {
    'contracts': 0,                                # the data and the rules every layer shares
    'recipe': 1, 'devices': 1,                     # what a model is; where code runs
    'ops': 2, 'cli_common': 2,                     # the sampling op (and csrc/); shared flags
    'model': 3,                                    # the network only
    'checkpoints': 4, 'streaming': 4, 'data': 4,   # weights on disk; Frame in, Detections out
    'loading': 5,                                  # one way to a detector
    'export': 6, 'engine': 6, 'viz': 6, 'integrations': 6,   # commands and adapters
    'face': 7,                                     # sparsebev_core/__init__.py
}
CIRCLES_ALLOWED_IN = ('ops',)


def room(module: str) -> str | None:
    """The room of a core module (None: not a core module)."""
    parts = module.split('.')
    if parts[0] != CORE:
        return None
    if len(parts) == 1:
        return 'face'
    top = parts[1]
    if top in CONTRACTS:
        return 'contracts'
    return 'ops' if top in ('csrc', '_msmv_sampling_cuda') else top   # the op's C++/CUDA side


def core_files(package: Path = ROOT / CORE) -> list[Path]:
    return sorted(package.rglob('*.py'))


def core_graph(package: Path = ROOT / CORE, root: Path = ROOT) -> dict[str, set[str]]:
    """Core module -> the core modules it imports (lazy and typing-only imports included)."""
    graph: dict[str, set[str]] = {}
    for path in core_files(package):
        me = module_name(path, root)
        graph[me] = {imp.module for imp in imports_of(path, root)
                     if room(imp.module) is not None and imp.module != me}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for each import into a higher floor, or into another room of the same floor."""
    bad = []
    for a, targets in sorted(graph.items()):
        for b in sorted(targets):
            ra, rb = room(a), room(b)
            if rb not in FLOORS or ra not in FLOORS:
                bad.append(f'{a} -> {b} (room {ra if ra not in FLOORS else rb!r} has no floor)')
            elif FLOORS[rb] > FLOORS[ra] or (FLOORS[rb] == FLOORS[ra] and ra != rb):
                bad.append(f'{a} (floor {FLOORS[ra]}, {ra}) -> {b} (floor {FLOORS[rb]}, {rb})')
    return bad


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles (strongly connected groups of two or more modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:                     # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def forbidden_imports(package: Path, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """``file:line module`` for each import under ``package`` of a module in ``forbidden``
    (a dotted prefix: 'sparsebev_ros', 'sparsebev_core.engine', 'torch')."""
    return [f'{path.relative_to(root)}:{imp.line} imports {imp.module}'
            for path in sorted(package.rglob('*.py')) for imp in imports_of(path, root)
            if any(imp.module == f or imp.module.startswith(f + '.') for f in forbidden)]


# ------------------------------------------------------------------------------ between packages
def test_core_imports_neither_ros_nor_cli_layer():
    assert len(core_files()) > 60                            # the scan sees the whole package
    assert forbidden_imports(ROOT / CORE, UPPER_LAYERS) == []


def test_ros_layer_does_not_import_the_cli_layer():
    assert forbidden_imports(ROOT / 'sparsebev_ros', ('sparsebev_cli',)) == []


def test_the_live_ros_path_never_imports_the_offline_bag_tools():
    live = [p for p in (ROOT / 'sparsebev_ros').glob('*.py')]
    assert [f'{p.name}: {i.module}' for p in live for i in imports_of(p)
            if i.module.startswith('sparsebev_ros.bags')] == []


# ------------------------------------------------------------------------------ inside the core
def test_every_core_module_has_a_room_on_a_floor():
    assert {room(m) for m in core_graph()} <= set(FLOORS)


def test_no_core_module_imports_upward():
    assert upward_imports(core_graph()) == []


def test_no_import_circle_outside_ops():
    assert [c for c in circles(core_graph()) if {room(m) for m in c} - set(CIRCLES_ALLOWED_IN)] == []


def test_contracts_import_only_contracts():
    contracts = [ROOT / CORE / f'{name}.py' for name in CONTRACTS]
    assert [f'{p.name}: {i.module}' for p in contracts for i in imports_of(p)
            if room(i.module) not in (None, 'contracts')] == []


def test_the_recipe_imports_no_torch_and_nothing_above_it():
    recipe = ROOT / CORE / 'recipe'
    assert forbidden_imports(recipe, ('torch',)) == []
    assert [f'{p.name}: {i.module}' for p in recipe.rglob('*.py') for i in imports_of(p)
            if room(i.module) not in (None, 'contracts', 'recipe')] == []


def test_validating_a_preset_or_a_ros_parameter_file_never_loads_torch():
    code = ('import sys; from sparsebev_ros.params import validate; '
            'from sparsebev_core.recipe.presets import PRESET_NAMES, get_preset; '
            'from sparsebev_core.recipe.official_write import export_official_config; '
            'import sparsebev_core, sparsebev_core.loading, sparsebev_core.cli_common; '
            '[export_official_config(get_preset(n)) for n in PRESET_NAMES]; '
            "validate({'preset': 'r50_nuimg_704x256'}); sparsebev_core.get_preset('tiny'); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_network_never_imports_streaming_loading_checkpoints_or_engine():
    forbidden = tuple(f'{CORE}.{r}' for r in ('streaming', 'loading', 'checkpoints', 'engine'))
    assert forbidden_imports(ROOT / CORE / 'model', forbidden) == []


def test_checkpoints_never_import_the_engine_or_loading():
    forbidden = (f'{CORE}.engine', f'{CORE}.loading')
    assert forbidden_imports(ROOT / CORE / 'checkpoints', forbidden) == []


def test_the_public_face_names_real_things_and_stays_lazy():
    import sparsebev_core
    for name, module in sparsebev_core.PUBLIC_NAMES.items():
        assert room(module) in FLOORS and FLOORS[room(module)] < FLOORS['face']
        assert getattr(__import__(module, fromlist=[name]), name) is getattr(sparsebev_core, name)
    result = subprocess.run([sys.executable, '-c', 'import sys, sparsebev_core; '
                             "assert 'torch' not in sys.modules"], cwd=ROOT, timeout=60)
    assert result.returncode == 0


# ------------------------------------------------------------------------------ the checks can fail
@pytest.mark.parametrize('where, line', [
    ('sparsebev_core/module.py', 'import sparsebev_ros'),
    ('sparsebev_core/module.py', 'from sparsebev_ros.params import PARAMS'),
    ('sparsebev_core/module.py', 'import sparsebev_cli.cli as c'),
    ('sparsebev_core/module.py', 'def f():\n    from sparsebev_ros import replay\n'),
])
def test_the_scan_catches_an_upper_layer_import(tmp_path, where, line):
    """The check fails when a core module imports upward (also inside a function)."""
    path = tmp_path / where
    path.parent.mkdir(parents=True)
    path.write_text('import numpy\nfrom .geometry import CAMERA_NAMES\n' + line)
    assert len(forbidden_imports(tmp_path / CORE, UPPER_LAYERS, tmp_path)) == 1


@pytest.mark.parametrize('where, line, rule', [
    ('model/head.py', 'def f():\n    from ..loading import load_model\n', 'upward'),       # lazy
    ('model/head.py', 'from ..streaming.detector import StreamingDetector\n', 'upward'),
    ('recipe/presets.py', 'from ..model.detector import build_model\n', 'upward'),
    ('checkpoints/official.py', 'from ..engine.train_state import TrainPosition\n', 'upward'),
    ('frame.py', 'from .recipe.config import ModelConfig\n', 'upward'),
    ('cli_common.py', 'def f():\n    from .loading import load_model\n', 'upward'),
    ('streaming/history.py', 'from .detector import StreamingDetector\n', 'circle'),
])
def test_an_upward_import_or_a_circle_put_back_is_caught(tmp_path, where, line, rule):
    """Each rule fails when one such import is added back (inside a function too): a copy of
    the core with one more import line, scanned like the real one."""
    import shutil
    copy = tmp_path / CORE
    shutil.copytree(ROOT / CORE, copy, ignore=shutil.ignore_patterns('*.pth', '__pycache__'))
    graph = core_graph(copy, tmp_path)
    assert upward_imports(graph) == [] and circles(graph) == circles(core_graph())
    target = copy / where
    target.write_text(target.read_text() + '\n\n' + line)
    graph = core_graph(copy, tmp_path)
    if rule == 'upward':
        assert len(upward_imports(graph)) == 1, upward_imports(graph)
    else:
        assert any('sparsebev_core.streaming.history' in c for c in circles(graph))
