"""Layering: ``sparsebev_core`` (model, data, training, evaluation) never imports the layers
above it, ``sparsebev_ros`` (pipeline, replay, node) and ``sparsebev_cli`` (the command and the
demo, which compose both). Checked on the source (AST of every .py file, lazy imports inside
functions included), so an import that only runs in one code path is caught too."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UPPER_LAYERS = ('sparsebev_ros', 'sparsebev_cli')


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute ``import X`` / ``from X import ...`` in the source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def upper_layer_imports(package: Path, forbidden: tuple[str, ...]) -> list[str]:
    """``file:line module`` for each import of a forbidden top-level package under ``package``."""
    bad = []
    for path in sorted(package.rglob('*.py')):
        for line, module in imported_modules(path.read_text(encoding='utf-8')):
            if module.split('.')[0] in forbidden:
                bad.append(f'{path.relative_to(package.parent)}:{line} imports {module}')
    return bad


def test_core_imports_neither_ros_nor_cli_layer():
    files = list((ROOT / 'sparsebev_core').rglob('*.py'))
    assert len(files) > 40                                   # the scan sees the whole package
    assert upper_layer_imports(ROOT / 'sparsebev_core', UPPER_LAYERS) == []


def test_ros_layer_does_not_import_the_cli_layer():
    assert upper_layer_imports(ROOT / 'sparsebev_ros', ('sparsebev_cli',)) == []


@pytest.mark.parametrize('line', ['import sparsebev_ros', 'from sparsebev_ros.params import PARAMS',
                                  'import sparsebev_cli.cli as c',
                                  'def f():\n    from sparsebev_ros import replay\n'])
def test_the_scan_catches_an_upper_layer_import(tmp_path, line):
    """The check fails when a core module imports upward (also inside a function)."""
    package = tmp_path / 'sparsebev_core'
    package.mkdir()
    (package / 'module.py').write_text('import numpy\nfrom .geometry import CAMERA_NAMES\n' + line)
    assert len(upper_layer_imports(package, UPPER_LAYERS)) == 1
