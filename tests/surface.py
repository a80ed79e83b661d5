"""Read what gpuds' source asks of CuPy and nvCOMP, and check it against the installed packages.

The engine of the ``surface`` tests (tests/test_surface_*.py). Two readers of Python source (the
``ast`` module) list what the code uses:

- :func:`array_module_uses`: every attribute used through the array module (``xp.foo``,
  ``xp.linalg.bar``, ``cp.cuda.Stream``, with the keywords of calls), every method or attribute
  used on a value the reader can tell is an array (assigned from an array-module call, or given
  to ``array_module``), and NumPy functions called on such arrays;
- :func:`nvcomp_uses`: every member of ``nvidia.nvcomp`` used, and every member of its
  ``Codec``, ``BatchArray`` and ``Array`` objects, followed through assignments, tuple returns
  and calls between the functions of one file.

:func:`check_array_module` and :func:`check_nvcomp` compare those uses with the installed
modules, :class:`NvcompDocs` being what the installed nvCOMP documents about itself (its
docstrings hold the argument lists, the option sets per algorithm and the permitted values).
Both readers are deliberately simple: a value they cannot type is not checked (never wrongly
failed), and the tests prove on small synthetic sources that a planted mistake is caught.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gpuds"


@dataclass(frozen=True)
class Use:
    """One use of CuPy / NumPy / nvCOMP in a source file.

    ``kind`` is ``"xp"`` (an attribute of the array module: NumPy or CuPy), ``"cupy"`` (of CuPy
    only), ``"array:xp"`` / ``"array:cupy"`` (of an array), ``"numpy-on-array"`` (a NumPy
    function given an array that may live on the device), or, for nvCOMP, the type of the object
    used (``"module"``, ``"Codec"``, ``"BatchArray"``, ``"Array"``, ``"enum:<Class>"``).
    """

    path: str
    line: int
    kind: str
    name: str
    called: bool = False
    keywords: tuple[str, ...] = ()
    positional: int = 0
    star_kwargs: tuple[str, ...] = ()
    result_attr: str | None = None
    constants: tuple[tuple[str, Any], ...] = ()

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def source_files(package: Path = PACKAGE) -> Iterator[tuple[str, str]]:
    """``(path relative to the repository, text)`` of every module of gpuds."""
    for path in sorted(package.rglob("*.py")):
        yield str(path.relative_to(package.parent)), path.read_text()


# -- reading source: shared helpers ---------------------------------------------------------------


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    return parents


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _callee_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _own_nodes(body: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every node of ``body`` outside nested function and class definitions."""
    stack = list(body)
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                stack.append(child)


def _scopes(tree: ast.Module) -> Iterator[tuple[ast.AST | None, list[ast.stmt]]]:
    """``(function or None for the module, its body)``, enclosing scopes first."""
    yield None, [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.ClassDef)]
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node, node.body


def _bindings(body: list[ast.stmt]) -> Iterator[tuple[ast.AST, ast.AST]]:
    """``(target, value)`` of every assignment in ``body``, tuples paired element by element."""
    for node in _own_nodes(body):
        pairs: list[tuple[ast.AST, ast.AST]] = []
        if isinstance(node, ast.Assign):
            pairs = [(t, node.value) for t in node.targets]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            pairs = [(node.target, node.value)]
        while pairs:
            target, value = pairs.pop()
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                pairs.extend(zip(target.elts, value.elts, strict=False))
            else:
                yield target, value


# -- the array module ----------------------------------------------------------------------------

_MODULE_NAMES = {"xp": "xp", "cp": "cupy", "cupy": "cupy"}
"""Names that hold the array module by convention (``cp``/``cupy``: code that runs on a GPU)."""
_MODULE_ATTRIBUTES = {"xp": "xp", "_cp": "cupy"}
"""``backend.xp``, ``self.backend.xp``, ``self._cp``."""
_MODULE_FACTORIES = {"array_module": "xp", "get_array_module": "xp", "_import_cupy": "cupy"}
_TO_HOST = {"tolist", "item", "get", "tobytes", "asnumpy"}
"""Calls whose result is a host value, not a device array."""


class _ArrayScope:
    def __init__(self, parent: _ArrayScope | None, numpy: ModuleType) -> None:
        self.modules: dict[str, str] = dict(parent.modules) if parent else {}
        self.arrays: dict[str, str] = dict(parent.arrays) if parent else {}
        self.numpy = numpy

    def module_of(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return _MODULE_NAMES.get(node.id) or self.modules.get(node.id)
        if isinstance(node, ast.Attribute):
            name = _dotted(node)
            return _MODULE_ATTRIBUTES.get(node.attr) or (self.modules.get(name) if name else None)
        if isinstance(node, ast.Call):
            return _MODULE_FACTORIES.get(_callee_name(node.func) or "")
        return None

    def chain_of(self, node: ast.AST) -> tuple[str, list[str]] | None:
        """``(namespace, ["linalg", "norm"])`` for ``xp.linalg.norm``."""
        names: list[str] = []
        while isinstance(node, ast.Attribute):
            names.append(node.attr)
            base = self.module_of(node.value)
            if base is not None:
                return base, names[::-1]
            node = node.value
        return None

    def array_of(self, node: ast.AST) -> str | None:
        """The namespace of the array ``node`` evaluates to, when that can be told."""
        if isinstance(node, ast.Name | ast.Attribute):
            name = _dotted(node)
            if name is not None and name in self.arrays:
                return self.arrays[name]
            return None
        if isinstance(node, ast.Subscript | ast.Starred):
            return self.array_of(node.value)
        if isinstance(node, ast.UnaryOp):
            return self.array_of(node.operand)
        if isinstance(node, ast.BinOp):
            return self.array_of(node.left) or self.array_of(node.right)
        if isinstance(node, ast.Compare):
            return self.array_of(node.left) or next(
                (ns for ns in map(self.array_of, node.comparators) if ns), None
            )
        if isinstance(node, ast.IfExp):
            return self.array_of(node.body) or self.array_of(node.orelse)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            chain = self.chain_of(node.func)
            if chain is not None:
                ns, names = chain
                head = getattr(self.numpy, names[0], None)
                if names[0] == "cuda" or names[-1] in _TO_HOST or isinstance(head, type):
                    return None  # streams, devices, host copies, dtypes: not arrays
                return ns
            receiver = self.array_of(node.func.value)
            if receiver is not None and node.func.attr not in _TO_HOST:
                return receiver
        return None

    def bind(self, body: list[ast.stmt]) -> None:
        for _ in range(5):  # to a fixed point: assignments may come in any order
            before = (dict(self.modules), dict(self.arrays))
            for node in _own_nodes(body):
                if not (isinstance(node, ast.Call) and node.args):
                    continue
                if _MODULE_FACTORIES.get(_callee_name(node.func) or "") == "xp":
                    name = _dotted(node.args[0])
                    if name is not None:
                        self.arrays.setdefault(name, "xp")
            for target, value in _bindings(body):
                name = _dotted(target)
                if name is None:
                    continue
                if isinstance(target, ast.Name) and target.id in _MODULE_NAMES:
                    self.modules[name] = _MODULE_NAMES[target.id]
                elif (ns := self.module_of(value)) is not None:
                    self.modules[name] = ns
                elif (ns := self.array_of(value)) is not None:
                    self.arrays[name] = ns
            if (self.modules, self.arrays) == before:
                return


def array_module_uses(source: str, path: str, numpy: ModuleType) -> list[Use]:
    """Everything ``source`` uses through the array module or on its arrays (see module doc)."""
    tree = ast.parse(source, filename=path)
    parents = _parents(tree)
    scopes: dict[ast.AST | None, _ArrayScope] = {}
    uses: list[Use] = []
    for owner, body in _scopes(tree):
        enclosing = parents.get(owner) if owner is not None else None
        while enclosing is not None and enclosing not in scopes:
            enclosing = parents.get(enclosing)
        parent = scopes.get(enclosing) if owner is not None else None
        scope = scopes[owner] = _ArrayScope(parent or scopes.get(None), numpy)
        scope.bind(body)
        for node in _own_nodes(body):
            uses.extend(_array_uses_at(node, scope, parents, path))
    return sorted(set(uses), key=lambda u: (u.line, u.kind, u.name))


def _call_parts(node: ast.AST, parents: Mapping[ast.AST, ast.AST]) -> dict[str, Any]:
    parent = parents.get(node)
    if not (isinstance(parent, ast.Call) and parent.func is node):
        return {}
    after = parents.get(parent)
    result_attr = after.attr if isinstance(after, ast.Attribute) and after.value is parent else None
    return {
        "called": True,
        "keywords": tuple(k.arg for k in parent.keywords if k.arg is not None),
        "positional": len(parent.args),
        "star_kwargs": tuple(ast.unparse(k.value) for k in parent.keywords if k.arg is None),
        "result_attr": result_attr,
        "constants": tuple(
            (k.arg, k.value.value)
            for k in parent.keywords
            if k.arg is not None and isinstance(k.value, ast.Constant)
        ),
    }


def _array_uses_at(
    node: ast.AST, scope: _ArrayScope, parents: Mapping[ast.AST, ast.AST], path: str
) -> Iterator[Use]:
    if isinstance(node, ast.Attribute):
        parent = parents.get(node)
        outermost = not (isinstance(parent, ast.Attribute) and parent.value is node)
        chain = scope.chain_of(node)
        if chain is not None and outermost:
            ns, names = chain
            yield Use(path, node.lineno, ns, ".".join(names), **_call_parts(node, parents))
        elif chain is None and (array := scope.array_of(node.value)) is not None:
            yield Use(path, node.lineno, f"array:{array}", node.attr, **_call_parts(node, parents))
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in ("np", "numpy")
        and any(scope.array_of(a) for a in node.args)
    ):
        yield Use(path, node.lineno, "numpy-on-array", node.func.attr)


def signature_parameters(obj: Any) -> tuple[set[str], bool] | None:
    """The keyword names ``obj`` accepts and whether it takes ``**kwargs``, from
    ``inspect.signature`` or, for Cython and ufunc objects, the signature line that opens their
    docstring; None when neither can be read."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        pass
    else:
        names = {
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        varkw = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
        return names, varkw
    doc = (getattr(obj, "__doc__", None) or "").strip()
    match = re.match(r"[\w.]+\((.*)\)\s*(->.*)?$", doc.splitlines()[0] if doc else "")
    if match is None:
        return None
    names, varkw = set(), False
    for part in _split_parameters(match.group(1).replace("\\", "")):
        if part == "/":
            names.clear()  # those before it are positional-only
        elif part.startswith("**"):
            varkw = True
        elif part and not part.startswith("*"):
            names.add(part.split("=")[0].split(":")[0].split()[-1])
    names.discard("self")
    return names, varkw


def _split_parameters(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def resolve(module: ModuleType, dotted: str) -> Any:
    obj: Any = module
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


def has(module: ModuleType, dotted: str) -> bool:
    try:
        resolve(module, dotted)
    except AttributeError:
        return False
    return True


@dataclass
class ArrayReport:
    """What :func:`check_array_module` found: problems (``where: what``) and the calls whose
    keywords no signature could confirm (CuPy names them nowhere readable)."""

    problems: list[str] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)
    checked: int = 0


def check_array_module(
    uses: Iterable[Use],
    numpy: ModuleType,
    cupy: ModuleType,
    cupy_only: Mapping[str, Mapping[str, str]],
    returns: Mapping[str, Any],
) -> ArrayReport:
    """Check array-module uses against the installed NumPy and CuPy.

    ``xp`` names must exist in both (unless ``cupy_only[name]`` lists the file: GPU-only code
    reaching CuPy's own API through the backend's module), ``cupy`` names in CuPy, array members
    on both ``ndarray`` classes (CuPy's only for ``array:cupy``); keywords must be accepted by
    CuPy's signature (and NumPy's, for ``xp``) where one can be read; an attribute read on a
    call's result is checked on ``returns[name]``, an object of the kind that call returns; and
    no NumPy function may be given an array that can live on the device.
    """
    report = ArrayReport()
    for use in uses:
        report.checked += 1
        if use.kind == "numpy-on-array":
            report.problems.append(
                f"{use.where}: np.{use.name}() is given an array that may be a CuPy array "
                "(NumPy functions refuse them): use xp."
                f"{use.name} or copy it to the host first"
            )
            continue
        if use.kind.startswith("array:"):
            modules = [cupy] if use.kind == "array:cupy" else [numpy, cupy]
            for module in modules:
                if not hasattr(module.ndarray, use.name):
                    report.problems.append(
                        f"{use.where}: {module.__name__}.ndarray has no '{use.name}'"
                    )
            if use.keywords and hasattr(cupy.ndarray, use.name):
                _check_keywords(report, use, getattr(cupy.ndarray, use.name), cupy, "ndarray.")
            continue
        allowed_files = cupy_only.get(use.name, {})
        modules = [cupy]
        if use.kind == "xp" and use.path not in allowed_files:
            modules = [numpy, cupy]
        for module in modules:
            if not has(module, use.name):
                side = "xp" if use.kind == "xp" else "cp"
                report.problems.append(f"{use.where}: {module.__name__} has no {side}.{use.name}")
        if not has(cupy, use.name):
            continue
        target = resolve(cupy, use.name)
        if use.keywords:
            _check_keywords(report, use, target, cupy, "")
            if numpy in modules and has(numpy, use.name):
                _check_keywords(report, use, resolve(numpy, use.name), numpy, "")
        if use.result_attr is not None and use.name in returns:  # arrays: see array uses
            returned = returns[use.name]
            if not hasattr(returned, use.result_attr):
                report.problems.append(
                    f"{use.where}: {type(returned).__qualname__} (what cupy.{use.name}() "
                    f"returns) has no '{use.result_attr}'"
                )
    return report


def _check_keywords(
    report: ArrayReport, use: Use, target: Any, module: ModuleType, prefix: str
) -> None:
    accepted = signature_parameters(target)
    if accepted is None:
        report.unreadable.add(f"{module.__name__}.{prefix}{use.name}")
        return
    names, varkw = accepted
    for keyword in use.keywords:
        if keyword not in names and not varkw:
            report.problems.append(
                f"{use.where}: {module.__name__}.{prefix}{use.name} takes no keyword "
                f"'{keyword}' (it takes {', '.join(sorted(names)) or 'none'})"
            )


# -- nvCOMP --------------------------------------------------------------------------------------

_NVCOMP_NAMES = frozenset({"nv", "nvcomp"})
_NVCOMP_ATTRIBUTES = frozenset({"_nv"})
_NVCOMP_FACTORIES = frozenset({"_import_nvcomp"})

NVCOMP_RESULTS = {
    ("module", "Codec"): "Codec",
    ("module", "as_arrays"): "BatchArray",
    ("module", "as_array"): "Array",
    ("Codec", "encode"): "BatchArray",
    ("Codec", "decode"): "BatchArray",
    ("BatchArray", "cpu"): "BatchArray",
    ("BatchArray", "cuda"): "BatchArray",
    ("BatchArray", "__getitem__"): "Array",
    ("Array", "cpu"): "Array",
    ("Array", "cuda"): "Array",
}
"""What a call returns, as gpuds uses it (gpuds passes batches to ``encode``/``decode``): the
nvCOMP test checks each against the "Returns:" of the installed docstrings."""


class _NvcompTypes:
    """Types of the nvCOMP values in one file, followed through assignments, tuple returns and
    calls between the file's functions (arguments to parameters)."""

    def __init__(self, tree: ast.Module, parents: Mapping[ast.AST, ast.AST]) -> None:
        self.parents = parents
        self.functions = {
            f.name: f
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        self.names: dict[ast.AST | None, dict[str, Any]] = {}
        self.returns: dict[str, Any] = {}
        self.parameters: dict[str, dict[str, Any]] = {}
        scopes = list(_scopes(tree))
        for _ in range(6):
            before = repr((self.names, self.returns, self.parameters))
            for owner, body in scopes:
                self._bind(owner, body)
            if repr((self.names, self.returns, self.parameters)) == before:
                break

    def scope_of(self, node: ast.AST) -> ast.AST | None:
        current = self.parents.get(node)
        while current is not None and not isinstance(
            current, ast.FunctionDef | ast.AsyncFunctionDef
        ):
            current = self.parents.get(current)
        return current

    def type_of(self, node: ast.AST, owner: ast.AST | None) -> Any:
        names = self.names.get(owner, {})
        if isinstance(node, ast.Name):
            if node.id in names:
                return names[node.id]
            return "module" if node.id in _NVCOMP_NAMES else None
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted is not None and dotted in names:
                return names[dotted]
            if node.attr in _NVCOMP_ATTRIBUTES:
                return "module"
            base = self.type_of(node.value, owner)
            if base == "module" and node.attr[:1].isupper():
                return f"class:{node.attr}"
            return None
        if isinstance(node, ast.Subscript):
            base = self.type_of(node.value, owner)
            index = node.slice.value if isinstance(node.slice, ast.Constant) else None
            if isinstance(base, tuple) and isinstance(index, int):
                return base[index] if 0 <= index < len(base) else None
            return NVCOMP_RESULTS.get((base, "__getitem__")) if isinstance(base, str) else None
        if isinstance(node, ast.Call):
            if _callee_name(node.func) in _NVCOMP_FACTORIES:
                return "module"
            if isinstance(node.func, ast.Attribute):
                base = self.type_of(node.func.value, owner)
                if isinstance(base, str) and (base, node.func.attr) in NVCOMP_RESULTS:
                    return NVCOMP_RESULTS[(base, node.func.attr)]
            callee = self._local_function(node)
            if callee is not None:
                return self.returns.get(callee.name)
        if isinstance(node, ast.Tuple):
            types = tuple(self.type_of(e, owner) for e in node.elts)
            return types if any(types) else None
        return None

    def _local_function(self, call: ast.Call) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        func = call.func
        if isinstance(func, ast.Name):
            return self.functions.get(func.id)
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and (func.value.id in ("self", "cls") or func.value.id[:1].isupper())
        ):
            return self.functions.get(func.attr)
        return None

    def _bind(self, owner: ast.AST | None, body: list[ast.stmt]) -> None:
        names = self.names.setdefault(owner, {})
        if isinstance(owner, ast.FunctionDef | ast.AsyncFunctionDef):
            names.update(self.parameters.get(owner.name, {}))
        for target, value in _bindings(body):
            kind = self.type_of(value, owner)
            if kind is None:
                continue
            if isinstance(target, ast.Tuple) and isinstance(kind, tuple):
                for element, element_kind in zip(target.elts, kind, strict=False):
                    name = _dotted(element)
                    if name is not None and element_kind is not None:
                        names[name] = element_kind
            elif (name := _dotted(target)) is not None:
                names[name] = kind
        for node in _own_nodes(body):
            if (
                isinstance(node, ast.Return)
                and node.value is not None
                and isinstance(owner, ast.FunctionDef | ast.AsyncFunctionDef)
            ):
                kind = self.type_of(node.value, owner)
                if kind is not None:
                    self.returns[owner.name] = kind
            if isinstance(node, ast.Call) and (callee := self._local_function(node)) is not None:
                params = [a.arg for a in callee.args.posonlyargs + callee.args.args]
                if params[:1] in (["self"], ["cls"]):
                    params = params[1:]
                found = self.parameters.setdefault(callee.name, {})
                for param, arg in zip(params, node.args, strict=False):
                    kind = self.type_of(arg, owner)
                    if kind is not None:
                        found[param] = kind
                for keyword in node.keywords:
                    kind = self.type_of(keyword.value, owner) if keyword.arg else None
                    if kind is not None:
                        found[str(keyword.arg)] = kind


def nvcomp_uses(source: str, path: str) -> list[Use]:
    """Every member of nvCOMP, and of its objects, that ``source`` uses (see module doc)."""
    tree = ast.parse(source, filename=path)
    parents = _parents(tree)
    types = _NvcompTypes(tree, parents)
    uses: list[Use] = []
    for node in ast.walk(tree):
        owner = types.scope_of(node)
        if isinstance(node, ast.Attribute):
            base = types.type_of(node.value, owner)
            if isinstance(base, str):
                kind = f"enum:{base[6:]}" if base.startswith("class:") else base
                uses.append(Use(path, node.lineno, kind, node.attr, **_call_parts(node, parents)))
        elif isinstance(node, ast.Subscript):
            if types.type_of(node.value, owner) == "BatchArray":
                uses.append(Use(path, node.lineno, "BatchArray", "__getitem__"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = node.args
            if node.func.id == "len" and args and types.type_of(args[0], owner) == "BatchArray":
                uses.append(Use(path, node.lineno, "BatchArray", "__len__"))
            if (
                node.func.id in ("hasattr", "getattr")
                and len(args) >= 2
                and types.type_of(args[0], owner) == "module"
                and isinstance(args[1], ast.Constant)
            ):
                uses.append(Use(path, node.lineno, "module", str(args[1].value)))
        elif isinstance(node, ast.For) and types.type_of(node.iter, owner) == "BatchArray":
            uses.append(Use(path, node.lineno, "BatchArray", "__getitem__"))
    return sorted(set(uses), key=lambda u: (u.line, u.kind, u.name))


@dataclass(frozen=True)
class Overload:
    parameters: tuple[str, ...]
    returns: str


@dataclass
class NvcompDocs:
    """What the installed ``nvidia.nvcomp`` says about itself: members, enum values, the
    signatures of every overload (from the docstrings' signature lines), ``Codec``'s arguments
    (common and per algorithm) and the values its docstring permits."""

    module: ModuleType
    common: set[str] = field(default_factory=set)
    options: dict[str, set[str]] = field(default_factory=dict)
    permitted: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    text: str = ""

    @classmethod
    def read(cls, module: ModuleType) -> NvcompDocs:
        docs = cls(module)
        docs._read_codec_arguments(module.Codec.__init__.__doc__ or "")
        docs.text = "\n".join(_all_docstrings(module))
        return docs

    def _read_codec_arguments(self, doc: str) -> None:
        section: str | None = None  # None: the common arguments
        indent: int | None = None
        current: tuple[str, str] | None = None
        started = False
        for line in doc.splitlines():
            if line.strip() == "Args:":
                started = True
                continue
            if not started:
                continue
            heading = re.match(r"\s*(\w+) algorithm specific options:\s*$", line)
            if heading:
                section, indent, current = heading.group(1), None, None
                self.options[section] = set()
                continue
            argument = re.match(r"(\s*)([a-z_][a-z0-9_]*): ", line)
            if argument and (indent is None or len(argument.group(1)) == indent):
                indent = len(argument.group(1))
                name = argument.group(2)
                (self.common if section is None else self.options[section]).add(name)
                current = (section or "", name)
                continue
            bullet = re.match(r"\s*\* (\S+)", line)
            if bullet and current is not None:
                value = bullet.group(1).strip("`")
                self.permitted.setdefault(current, []).append(value)

    @property
    def algorithms(self) -> set[str]:
        """Algorithm names the docstrings mention: the option sections of ``Codec`` and the
        formats ``get_uncomp_buffer_size`` lists."""
        size_doc = self.module.Codec.get_uncomp_buffer_size.__doc__ or ""
        mentioned = set(re.findall(r"\b([A-Z][A-Za-z0-9]+)\b", size_doc))
        return set(self.options) | (mentioned & {"Zstd", "Snappy", "LZ4", "Deflate", "GDeflate"})

    def options_of(self, algorithm: str) -> set[str]:
        for name, options in self.options.items():
            if name.lower() == algorithm.lower():
                return options
        return set()

    def members(self, kind: str) -> set[str]:
        if kind == "module":
            return set(dir(self.module))
        if kind.startswith("enum:"):
            enum = getattr(self.module, kind[5:], None)
            return set(getattr(enum, "__members__", {})) | set(dir(enum)) if enum else set()
        cls = getattr(self.module, kind, None)
        return set(dir(cls)) if cls is not None else set()

    def overloads(self, owner: str, name: str) -> list[Overload]:
        """The signatures in the docstring of ``owner.name`` (``owner`` ``"module"`` for
        functions; ``name`` ``"__init__"`` for a class's constructor)."""
        target = getattr(self.module, name if owner == "module" else owner, None)
        if owner != "module":
            target = getattr(target, name, None)
        elif isinstance(target, type):
            target = getattr(target, "__init__", None)
        doc = getattr(target, "__doc__", None) or ""
        found = []
        wanted = "__init__" if owner == "module" and name[:1].isupper() else name
        pattern = rf"^\s*(?:\d+\.\s+)?{re.escape(wanted)}\((.*)\)\s*->\s*(.+?)\s*$"
        for match in re.finditer(pattern, doc, re.MULTILINE):
            params = []
            for part in _split_parameters(match.group(1)):
                pname = part.split(":")[0].split("=")[0].strip()
                if pname and pname != "self":
                    params.append(pname)
            found.append(Overload(tuple(params), match.group(2)))
        return found


def _all_docstrings(module: ModuleType) -> Iterator[str]:
    seen: set[int] = set()
    stack: list[Any] = [module]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        doc = getattr(obj, "__doc__", None)
        if isinstance(doc, str):
            yield doc
        if isinstance(obj, ModuleType | type):
            for name in dir(obj):
                if name.startswith("__") and name not in ("__init__", "__getitem__", "__len__"):
                    continue
                try:
                    stack.append(getattr(obj, name))
                except AttributeError:
                    continue


def normalise(text: str) -> str:
    """Casefolded, with runs of whitespace as one space (for comparing quotations)."""
    return " ".join(text.split()).casefold()


@dataclass
class NvcompReport:
    problems: list[str] = field(default_factory=list)
    codec_calls: list[Use] = field(default_factory=list)
    checked: int = 0


def check_nvcomp(uses: Iterable[Use], docs: NvcompDocs, expandable: set[str]) -> NvcompReport:
    """Check nvCOMP uses against the installed module and its docstrings.

    Every member used must exist (module names, class members, enum members); a call must match
    an overload its docstring documents (positional count and keyword names); a class gpuds
    constructs must document a constructor; ``Codec(...)`` keywords must be ``Codec`` arguments,
    the algorithm's own where the algorithm is a literal. A ``**mapping`` in a ``Codec`` call must
    be one of ``expandable`` (the caller checks what those hold, per algorithm).
    """
    report = NvcompReport()
    for use in uses:
        report.checked += 1
        if use.name not in docs.members(use.kind):
            report.problems.append(f"{use.where}: nvcomp {use.kind} has no '{use.name}'")
            continue
        if use.kind == "module" and use.name == "Codec" and use.called:
            report.codec_calls.append(use)
            _check_codec_call(report, use, docs, expandable)
            continue
        if not use.called or use.kind.startswith("enum:"):
            continue
        overloads = docs.overloads(use.kind, use.name)
        if not overloads:
            report.problems.append(
                f"{use.where}: nvcomp documents no signature for {use.kind}.{use.name} "
                "(a class without a constructor, or an undocumented call)"
            )
            continue
        fits = [
            o
            for o in overloads
            if use.positional <= len(o.parameters)
            and set(use.keywords) <= set(o.parameters[use.positional :])
        ]
        if not fits:
            documented = "; ".join(f"({', '.join(o.parameters)})" for o in overloads)
            report.problems.append(
                f"{use.where}: {use.kind}.{use.name} called with {use.positional} positional "
                f"argument(s) and keywords {list(use.keywords)}; nvcomp documents {documented}"
            )
    return report


def _check_codec_call(
    report: NvcompReport, use: Use, docs: NvcompDocs, expandable: set[str]
) -> None:
    algorithm = dict(use.constants).get("algorithm")
    every = docs.common.union(*docs.options.values())
    for keyword in use.keywords:
        if keyword not in every:
            report.problems.append(
                f"{use.where}: nvcomp.Codec has no argument '{keyword}' (documented: "
                f"{', '.join(sorted(every))})"
            )
        elif isinstance(algorithm, str) and keyword not in docs.common | docs.options_of(algorithm):
            report.problems.append(
                f"{use.where}: '{keyword}' is not a {algorithm} option of nvcomp.Codec "
                f"({algorithm} takes: {', '.join(sorted(docs.options_of(algorithm))) or 'none'})"
            )
    if isinstance(algorithm, str) and algorithm.lower() not in {a.lower() for a in docs.algorithms}:
        report.problems.append(f"{use.where}: nvcomp documents no algorithm {algorithm!r}")
    for mapping in use.star_kwargs:
        if mapping not in expandable:
            report.problems.append(
                f"{use.where}: nvcomp.Codec(**{mapping}) cannot be checked: pass options "
                f"through one of {sorted(expandable)}"
            )
    if use.positional:
        report.problems.append(f"{use.where}: nvcomp.Codec takes keyword arguments only")


def public_surface(obj: Any) -> set[str]:
    """Names a caller may use: public attributes, and the protocol methods that matter here."""
    protocol = {"__getitem__", "__len__", "__iter__", "__enter__", "__exit__"}
    protocol |= {"__array_interface__", "__cuda_array_interface__", "__dlpack__"}
    return {n for n in dir(obj) if not n.startswith("_") or n in protocol}
