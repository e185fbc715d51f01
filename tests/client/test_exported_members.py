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
