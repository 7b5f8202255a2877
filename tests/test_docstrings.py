"""Every public docstring of wsimito is real numpydoc, checked by numpydoc's own validator.

Public means: a module, class, function, method or property whose name (and whose
module's name) has no leading underscore, defined in wsimito (in the synthetic slide
generator, only what ``wsimito.synthetic`` exports); a method marked
``@override`` without a docstring of its own is documented by the method it overrides.
Each is checked with ``numpydoc.validate`` (as scikit-learn and pandas do): ``name : type``
entries for every parameter, a Returns section where something is returned, sections in
numpydoc's order, capitalised sentences. Not required: an extended summary, See Also,
Examples (they are given where they help) and the summary on the line after the quotes.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import warnings
from collections.abc import Iterator

import pytest
from numpydoc.docscrape import NumpyDocString, get_doc_object
from numpydoc.validate import Validator, validate

import wsimito

# numpydoc's checks minus the ones above. GL01 wants the summary on the line after the
# opening quotes; ruff's D212/D213 leave that free and the code starts on the first line.
IGNORED = {"ES01", "SA01", "EX01", "GL01"}

# Packages whose modules are implementation: only what the package exports (``__all__``)
# is public there. The synthetic slide generator's internals are numerical kernels.
INTERNAL_PACKAGES = ("wsimito.synthetic",)


def _exported(module_name: str) -> set[str] | None:
    """The names public in ``module_name``, or ``None`` for every name without ``_``."""
    for package in INTERNAL_PACKAGES:
        if module_name.startswith(package + "."):
            return set(importlib.import_module(package).__all__)
    return None


def _modules() -> list[str]:
    names = ["wsimito"]
    for info in pkgutil.walk_packages(wsimito.__path__, "wsimito."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts):
            continue
        names.append(info.name)
    return sorted(names)


def _public_objects() -> Iterator[str]:
    for module_name in _modules():
        module = importlib.import_module(module_name)
        exported = _exported(module_name)
        yield module_name
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
                continue
            if exported is not None and name not in exported:
                continue
            if inspect.isfunction(obj):
                yield f"{module_name}.{name}"
            elif inspect.isclass(obj):
                yield f"{module_name}.{name}"
                for member, value in vars(obj).items():
                    if member.startswith("_"):
                        continue
                    if isinstance(value, staticmethod | classmethod):
                        value = value.__func__
                    if not (inspect.isfunction(value) or isinstance(value, property)):
                        continue
                    func = value.fget if isinstance(value, property) else value
                    if getattr(func, "__override__", False) and not func.__doc__:
                        continue  # @override without a docstring: the base's applies
                    yield f"{module_name}.{name}.{member}"


OBJECTS = sorted(set(_public_objects()))


def _object(name: str) -> object:
    module_name, _, attr = name.rpartition(".")
    try:
        return importlib.import_module(name)
    except ImportError:
        return getattr(_object(module_name), attr)


def _class_attributes(cls: type) -> set[str]:
    """Names documented under a class's Attributes section (dataclass fields, for one)."""
    if not cls.__doc__:
        return set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = NumpyDocString(inspect.cleandoc(cls.__doc__))
    return {n.strip() for entry in doc["Attributes"] for n in entry.name.split(",")}


class _Validator(Validator):
    """numpydoc's validator, for packages too: an ``__init__`` without a def or class."""

    def __init__(self, obj_name: str) -> None:
        super().__init__(get_doc_object(Validator._load_obj(obj_name)))

    @property
    def source_file_def_line(self) -> int | None:
        try:
            return super().source_file_def_line
        except StopIteration:
            return None


def _errors(name: str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = validate(name, _Validator)
    obj = _object(name)
    found = []
    for code, message in report["errors"]:
        if code in IGNORED:
            continue
        if code == "PR01":
            # Private parameters (``_warn``) are not documented; a dataclass or record
            # may document its fields under Attributes; a Protocol's signature is
            # typing's ``(*args, **kwargs)``.
            missing = {m for m in re.findall(r"'([^']+)'", message) if not m.startswith("_")}
            if inspect.isclass(obj):
                missing -= _class_attributes(obj)
                if getattr(obj, "_is_protocol", False):
                    missing -= {"*args", "**kwargs"}
            if not missing:
                continue
            message = f"Parameters {sorted(missing)} not documented"
        found.append(f"{code} {message}")
    return found


@pytest.mark.parametrize("name", OBJECTS)
def test_docstring_is_numpydoc(name: str) -> None:
    errors = _errors(name)
    assert not errors, f"{name}:\n  " + "\n  ".join(errors)
