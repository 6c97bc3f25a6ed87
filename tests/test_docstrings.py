"""The public surface is documented: what the API reference (docs/api/) renders.

The surface: the names in ``gradlab.__all__`` and in the ``__all__`` of gradlab.models,
gradlab.theory, gradlab.init, gradlab.tasks, gradlab.train and gradlab.plot (plus gradlab.data
and gradlab.credit_map where they exist). The rule:

- every public class and function has a docstring of at least ``MIN_CHARS`` characters (a
  sentence that says what it is and one more line: the math, shapes or columns);
- every public *function* has an ``Examples:`` (or ``Example:``) section, Google style, written
  as ``>>>`` lines, and the example runs as a doctest (its printed values are checked; each
  example in a fresh namespace; they are small by design). Classes show their use in their module's or their own docstring; an
  Example is not required of them.
- public methods of public classes (not inherited from torch or the standard library) have a
  docstring of at least one sentence (``MIN_METHOD_CHARS``).
Constants (tuples, dicts, numbers) are skipped.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import io
import re
import textwrap

import pytest

MIN_CHARS = 80
MIN_METHOD_CHARS = 20
MODULES = ["gradlab", "gradlab.models", "gradlab.theory", "gradlab.init", "gradlab.tasks",
           "gradlab.train", "gradlab.plot", "gradlab.data"]
SECTION = re.compile(r"^Examples?:\s*$", re.M)


def _surface():
    items = {}
    for name in MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:  # gradlab.data: only where that branch is merged
            continue
        for attr in getattr(mod, "__all__", []):
            obj = getattr(mod, attr)
            if inspect.ismodule(obj):
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                items.setdefault(f"{obj.__module__}.{obj.__qualname__}", (f"{name}.{attr}", obj))
    return sorted(items.values(), key=lambda kv: kv[0])


SURFACE = _surface()
FUNCTIONS = [(n, o) for n, o in SURFACE if inspect.isfunction(o)]


def _methods():
    out = []
    for name, cls in SURFACE:
        if not inspect.isclass(cls):
            continue
        for attr, member in vars(cls).items():
            if attr.startswith("_"):
                continue
            fn = member.fget if isinstance(member, property) else member
            fn = getattr(fn, "__func__", fn)
            if inspect.isfunction(fn) and fn.__name__ != "<lambda>":  # not a field default
                out.append((f"{name}.{attr}", fn))
    return out


def example_section(doc: str) -> str | None:
    """The text of the Example section (dedented); None without a section."""
    m = SECTION.search(doc)
    if m is None:
        return None
    lines = []
    for line in doc[m.end():].splitlines():
        if line and not line.startswith(" "):
            break  # the next section
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def test_surface_is_not_empty():
    names = [n for n, _ in SURFACE]
    assert "gradlab.record" in names and "gradlab.theory.mean_field_chi1" in names
    assert len(FUNCTIONS) >= 40


@pytest.mark.parametrize("name,obj", SURFACE, ids=[n for n, _ in SURFACE])
def test_documented(name, obj):
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and (not obj.__doc__ or obj.__doc__ == ""):
        doc = ""
    assert len(doc) >= MIN_CHARS, f"{name}: docstring of {len(doc)} characters, < {MIN_CHARS}"


@pytest.mark.parametrize("name,fn", _methods(), ids=[n for n, _ in _methods()])
def test_methods_documented(name, fn):
    doc = inspect.getdoc(fn) or ""
    assert len(doc) >= MIN_METHOD_CHARS, f"{name}: docstring of {len(doc)} characters"


@pytest.mark.parametrize("name,fn", SURFACE, ids=[n for n, _ in SURFACE])
def test_example_runs(name, fn):
    section = example_section(inspect.getdoc(fn) or "")
    if section is None and inspect.isclass(fn):
        pytest.skip(f"{name}: a class; an Example section is optional")
    assert section is not None, f"{name}: no 'Example:' section in its docstring"
    test = doctest.DocTestParser().get_doctest(section, {}, name, None, 0)
    assert test.examples, f"{name}: its Example section has no '>>>' lines"
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=out.write)
    assert result.failed == 0, out.getvalue()
