"""The public surface of ``azure_sessions_kernel.client`` is curated and documented."""

from __future__ import annotations

import re

import azure_sessions_kernel.client as client
from azure_sessions_kernel.client import _exceptions


def test_all_is_exactly_the_sorted_public_names():
    public = [name for name in vars(client) if not name.startswith("_")]
    assert client.__all__ == sorted(public, key=str.casefold)


def test_public_names_report_the_package():
    own = [getattr(client, name) for name in client.__all__ if getattr(getattr(client, name), "__module__", "").startswith("azure_sessions_kernel.client")]
    assert own and {obj.__module__ for obj in own} == {"azure_sessions_kernel.client"}


def test_exception_tree_in_the_docstring_matches_the_classes():
    """Each class in the docstring's tree has the parent it is drawn under, and none is missing."""
    drawn: dict[str, str | None] = {}
    parents: list[str] = []
    for line in _exceptions.__doc__.splitlines():
        match = re.match(r"^\s{4}((?:[│ ]   )*)(?:[├└]── )?([A-Z]\w+)\b", line)
        if not match:
            continue
        depth = len(match.group(1)) // 4 + (1 if "──" in line else 0)
        del parents[depth:]
        drawn[match.group(2)] = parents[-1] if parents else None
        parents.append(match.group(2))
    assert set(drawn) == set(_exceptions.__all__)
    for name, parent in drawn.items():
        cls = getattr(client, name)
        assert cls.__bases__[0] is (getattr(client, parent) if parent else Exception), name


def test_wire_all_lists_every_public_name_it_defines():
    """``wire`` is the API contract: its ``__all__`` is every name it defines without an underscore."""
    import ast
    from pathlib import Path

    from azure_sessions_kernel import wire

    tree = ast.parse(Path(wire.__file__).read_text())
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
    public = [name for name in defined if not name.startswith("_")]
    assert wire.__all__ == sorted(public, key=str.casefold)


def test_every_wire_name_the_package_uses_is_exported():
    """The client, the kernel and the pool use only ``wire.__all__`` (``wire.X`` or ``from ..wire import``)."""
    import re
    from pathlib import Path

    from azure_sessions_kernel import wire

    package = Path(wire.__file__).parent
    used = set()
    for path in package.rglob("*.py"):
        if path.name == "wire.py":
            continue
        text = path.read_text()
        used |= set(re.findall(r"\bwire\.(?!py\b)([A-Za-z_]\w*)", text))  # not the file name, wire.py
        for names in re.findall(r"from \.+wire import \(?([^)]*?)\)?\n(?!\s)", text, re.S):
            used |= {n.strip() for n in names.replace("\n", ",").split(",") if n.strip()}
    assert used, "found no use of wire at all"
    assert sorted(used - set(wire.__all__)) == []
