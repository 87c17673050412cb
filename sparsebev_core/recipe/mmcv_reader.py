"""Read mmcv-style Python config files without executing them.

Official SparseBEV configs are Python files that mmcv runs with ``exec``. We never run them:
``read_config_file(path)`` walks the syntax tree and evaluates only a small, safe subset
(docs/official_config.md lists it):

* module-level assignments ``name = <expr>`` (a docstring is allowed too);
* literals: numbers, strings, ``True``/``False``/``None``, lists, tuples, ``{...}`` dicts;
* names assigned earlier in the same file;
* calls of ``dict(...)`` (keywords and/or one mapping), ``list(x)``, ``tuple(x)`` and
  ``range(...)`` on integers (the EVA02 config builds its window indexes with it);
* ``+ - * / // %`` on numbers, ``+`` on strings/lists/tuples, ``list * int``, unary ``-``/``+``,
  f-strings of plain values.

Everything else (imports, attribute access, other calls, lambdas, comprehensions,
subscripts, control flow) is refused with ``UnsafeConfigError`` naming the file and line.

``_base_`` (a path or a list of paths, relative to the file) is resolved recursively with
mmcv's merge rules: the child's dicts are merged key by key into the base's, recursively;
a child dict holding ``_delete_=True`` replaces the base's value instead; any other value
replaces it. Keys that two bases of one file both define are an error, as in mmcv.
"""
from __future__ import annotations

import ast
import copy
import operator
from pathlib import Path
from typing import Any

from ..errors import InputError

BASE_KEY = '_base_'
DELETE_KEY = '_delete_'
MAX_SEQUENCE = 100_000          # longest list/tuple/string/range a config may build


class ConfigFileError(InputError):
    """A config file cannot be read: missing, unparsable, or a ``_base_`` problem."""


class UnsafeConfigError(ConfigFileError):
    """A config file uses a construct the restricted reader refuses; names file and line."""


_BINARY_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_UNARY_OPS = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_SEQUENCES = (list, tuple, str)


class _Evaluator:
    """Evaluates the allowed expression subset against the names of one file."""

    def __init__(self, path: Path):
        self.path = path
        self.names: dict[str, Any] = {}
        self.referenced: set[str] = set()           # names used by later assignments

    def refuse(self, node: ast.AST, what: str) -> UnsafeConfigError:
        line = getattr(node, 'lineno', '?')
        return UnsafeConfigError(
            f'{self.path}:{line}: {what} is not allowed in a config file (only assignments of '
            f'literals, names, dict/list/tuple/range calls and arithmetic are read; nothing is '
            f'executed)')

    def run(self, tree: ast.Module) -> dict[str, Any]:
        for i, stmt in enumerate(tree.body):
            if (i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)):
                continue                                        # module docstring
            if not isinstance(stmt, ast.Assign):
                raise self.refuse(stmt, f'the statement "{type(stmt).__name__}"'
                                  + (' (import)' if isinstance(stmt, (ast.Import, ast.ImportFrom)) else ''))
            value = self.eval(stmt.value)
            for target in stmt.targets:
                if not isinstance(target, ast.Name):
                    raise self.refuse(target, 'assigning to anything but a plain name')
                self.names[target.id] = copy.deepcopy(value)
        return self.names

    def eval(self, node: ast.AST) -> Any:
        method = getattr(self, '_' + type(node).__name__, None)
        if method is None:
            raise self.refuse(node, f'the expression "{type(node).__name__}"')
        return method(node)

    def _Constant(self, node: ast.Constant) -> Any:
        if node.value is Ellipsis or isinstance(node.value, (bytes, complex)):
            raise self.refuse(node, f'the constant {node.value!r}')
        return node.value

    def _Name(self, node: ast.Name) -> Any:
        if node.id not in self.names:
            raise UnsafeConfigError(f'{self.path}:{node.lineno}: name {node.id!r} is not defined '
                                    f'above in this file (names of _base_ files are not visible, '
                                    f'as in mmcv)')
        self.referenced.add(node.id)
        return copy.deepcopy(self.names[node.id])

    def _List(self, node: ast.List) -> list:
        return [self.eval(e) for e in node.elts]

    def _Tuple(self, node: ast.Tuple) -> tuple:
        return tuple(self.eval(e) for e in node.elts)

    def _Dict(self, node: ast.Dict) -> dict:
        if any(k is None for k in node.keys):
            raise self.refuse(node, '"**" unpacking in a dict literal')
        return {self._key(k): self.eval(v) for k, v in zip(node.keys, node.values)}

    def _key(self, node: ast.AST) -> Any:
        key = self.eval(node)
        if not isinstance(key, (str, int, float, bool, type(None), tuple)):
            raise self.refuse(node, f'a dict key of type {type(key).__name__}')
        return key

    def _JoinedStr(self, node: ast.JoinedStr) -> str:
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue) and value.conversion == -1 and value.format_spec is None:
                item = self.eval(value.value)
                if not isinstance(item, (str, int, float, bool, type(None))):
                    raise self.refuse(value, f'an f-string of a {type(item).__name__}')
                parts.append(str(item))
            else:
                raise self.refuse(value, 'an f-string conversion or format spec')
        return self._bounded(node, ''.join(parts))

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        op = _UNARY_OPS.get(type(node.op))
        operand = self.eval(node.operand)
        if op is None or not _is_number(operand):
            raise self.refuse(node, f'the unary operator "{type(node.op).__name__}" here')
        return op(operand)

    def _BinOp(self, node: ast.BinOp) -> Any:
        op = _BINARY_OPS.get(type(node.op))
        if op is None:
            raise self.refuse(node, f'the operator "{type(node.op).__name__}"')
        left, right = self.eval(node.left), self.eval(node.right)
        numbers = _is_number(left) and _is_number(right)
        concat = (isinstance(node.op, ast.Add) and isinstance(left, _SEQUENCES)
                  and type(left) is type(right))
        repeat = (isinstance(node.op, ast.Mult) and isinstance(left, _SEQUENCES)
                  and isinstance(right, int) and not isinstance(right, bool))
        if not (numbers or concat or repeat):
            raise self.refuse(node, f'"{type(node.op).__name__}" on {type(left).__name__} and '
                              f'{type(right).__name__}')
        if repeat and len(left) * max(right, 0) > MAX_SEQUENCE:
            raise self.refuse(node, f'a sequence longer than {MAX_SEQUENCE}')
        try:
            return self._bounded(node, op(left, right))
        except ArithmeticError as err:
            raise self.refuse(node, f'arithmetic that fails ({err})') from None

    def _Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in ('dict', 'list', 'tuple', 'range'):
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise self.refuse(node, f'calling {name}()')
        name = node.func.id
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.refuse(node, '"*" unpacking in a call')
        args = [self.eval(a) for a in node.args]
        if name == 'dict':
            if len(args) > 1 or (args and not isinstance(args[0], dict)):
                raise self.refuse(node, 'dict() with anything but keywords and one mapping')
            out = dict(args[0]) if args else {}
            for kw in node.keywords:
                if kw.arg is None:
                    raise self.refuse(node, '"**" unpacking in dict()')
                out[kw.arg] = self.eval(kw.value)
            return out
        if node.keywords:
            raise self.refuse(node, f'keywords in {name}()')
        if name == 'range':
            if not 1 <= len(args) <= 3 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
                raise self.refuse(node, 'range() with anything but 1-3 integers')
            return self._bounded(node, range(*args))
        if len(args) != 1 or not isinstance(args[0], (list, tuple, range)):
            raise self.refuse(node, f'{name}() of anything but one list, tuple or range')
        return list(args[0]) if name == 'list' else tuple(args[0])

    def _bounded(self, node: ast.AST, value: Any) -> Any:
        if isinstance(value, (list, tuple, str, range)) and len(value) > MAX_SEQUENCE:
            raise self.refuse(node, f'a sequence longer than {MAX_SEQUENCE}')
        return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_config_text(text: str, path: str | Path = '<config>') -> dict[str, Any]:
    """The names one config file assigns (``_base_`` not resolved), read without executing."""
    return _parse(text, Path(path))[0]


def _parse(text: str, path: Path) -> tuple[dict[str, Any], set[str]]:
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as err:
        raise ConfigFileError(f'{path}:{err.lineno}: not valid Python: {err.msg}') from None
    evaluator = _Evaluator(path)
    return evaluator.run(tree), evaluator.referenced


def merge_config(child: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """mmcv's ``_merge_a_into_b``: ``child`` merged into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict):
            value = dict(value)
            delete = value.pop(DELETE_KEY, False)
            if key in out and isinstance(out[key], dict) and not delete:
                out[key] = merge_config(value, out[key])
                continue
            if key in out and out[key] is not None and not isinstance(out[key], dict) and not delete:
                raise ConfigFileError(f'cannot merge the dict "{key}" into a '
                                      f'{type(out[key]).__name__}; add _delete_=True to replace it')
        out[key] = copy.deepcopy(value)
    return out


def _strip_delete_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete_keys(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [_strip_delete_keys(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_strip_delete_keys(v) for v in value)
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The fully merged config dict of an mmcv-style config file (``_base_`` resolved)."""
    return read_config_file_with_helpers(path)[0]


def read_config_file_with_helpers(path: str | Path) -> tuple[dict[str, Any], set[str]]:
    """(merged config dict, helper names): names that some file of the chain refers to later.

    Helper names (``embed_dims``, ``num_frames``, ``img_backbone`` ...) are how configs share
    a value between fields; the value itself is read where it is used.
    """
    result, helpers = _read(Path(path), ())
    return _strip_delete_keys(result), helpers


def _read(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], set[str]]:
    path = path.resolve()
    if path in chain:
        raise ConfigFileError(f'_base_ cycle: {" -> ".join(str(p) for p in (*chain, path))}')
    if not path.is_file():
        where = f' (a _base_ of {chain[-1]})' if chain else ''
        raise ConfigFileError(f'config file not found: {path}{where}')
    if path.suffix != '.py':
        raise ConfigFileError(f'{path}: only Python (.py) config files are supported')
    names, helpers = _parse(path.read_text(encoding='utf-8'), path)
    bases = names.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, (list, tuple)) or not all(isinstance(b, str) for b in bases):
        raise ConfigFileError(f'{path}: _base_ must be a path or a list of paths, got {bases!r}')
    merged: dict[str, Any] = {}
    for base in bases:
        base_dict, base_helpers = _read(path.parent / base, (*chain, path))
        duplicate = sorted(set(merged) & set(base_dict))
        if duplicate:
            raise ConfigFileError(f'{path}: keys {duplicate} are defined by more than one _base_ file')
        merged.update(base_dict)
        helpers |= base_helpers
    names = {k: v for k, v in names.items() if not k.startswith('__')}
    return merge_config(names, merged), helpers
