"""The one import scanner of the test suite: every import of a Python file, read from its AST.

Imports inside functions (lazy ones) count as much as those at the top, and those under
``if TYPE_CHECKING:`` too (they are marked). Relative imports are resolved to absolute module
names, and ``from package import submodule`` names the submodule. Used by the layering tests
(``test_layers.py``), the ROS packaging checks (``test_ros_static.py``) and the OpenMMLab
check (``test_official_config.py``).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Import:
    """One imported module of a file."""
    line: int
    module: str                 # absolute dotted name: 'sparsebev_core.recipe.config', 'torch'
    lazy: bool                  # inside a function: runs only when the function runs
    typing_only: bool = False   # under ``if TYPE_CHECKING:``


def module_name(path: Path, root: Path = ROOT) -> str:
    """``sparsebev_core/recipe/config.py`` -> ``sparsebev_core.recipe.config`` (packages: the
    folder's name)."""
    parts = list(path.resolve().relative_to(root.resolve()).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _is_module(dotted: str, root: Path) -> bool:
    """Whether ``package.name`` is a module: a file or folder, or a name the package's
    ``__init__.py`` does not define (a compiled extension such as ``_msmv_sampling_cuda``)."""
    base = root.joinpath(*dotted.split('.'))
    if base.with_suffix('.py').is_file() or (base / '__init__.py').is_file():
        return True
    init = base.parent / '__init__.py'
    return init.is_file() and base.name not in _names_defined(init)


def _names_defined(init: Path) -> set[str]:
    """Names bound at the top of a package's ``__init__.py``."""
    names = set()
    for node in ast.parse(init.read_text(encoding='utf-8')).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split('.')[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    """Every import of the file at ``path`` (a file outside ``root`` resolves relative imports
    as if it were at the top of ``root``)."""
    try:
        me = module_name(path, root)
        package = me if path.name == '__init__.py' else me.rpartition('.')[0]
    except ValueError:
        package = ''
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool, typing_only: bool) -> None:
        if isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(node.test):
            for child in node.body:
                visit(child, lazy, True)
            for child in node.orelse:
                visit(child, lazy, typing_only)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(node.lineno, alias.name, lazy, typing_only) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split('.') if package else []
                parts = parts[:len(parts) - (node.level - 1)]
                base = '.'.join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ''
            for alias in node.names:
                sub = f'{base}.{alias.name}'
                module = sub if alias.name != '*' and _is_module(sub, root) else base
                found.append(Import(node.lineno, module, lazy, typing_only))
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner, typing_only)

    visit(ast.parse(path.read_text(encoding='utf-8'), str(path)), False, False)
    return list(dict.fromkeys(found))                  # one entry per (line, module)


def top_level_names(path: Path, root: Path = ROOT) -> set[str]:
    """The top-level package of every import (``numpy``, ``rclpy``, ``sparsebev_core``)."""
    return {imp.module.split('.')[0] for imp in imports_of(path, root)}
