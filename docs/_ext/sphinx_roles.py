"""Griffe extension for the API pages: Sphinx roles in docstrings become links.

wsimito's docstrings cross-reference with Sphinx roles (``:func:`count_mitoses```,
``:class:`~wsimito.tiling.TileGrid```, ``:mod:`.annotations```). mkdocstrings renders
Markdown, where such roles would show as raw text, so each role is rewritten into an
optional autorefs link: a link where the target is on a page of the site, plain code
where it is not (a private helper, torch, numpy). Names are resolved as Python would,
from the docstring's own scope.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_PARAMETER = re.compile(r"^\s*\*{0,2}[A-Za-z_][\w, *]*\s:\s")
_ROLE = re.compile(r":(?:py:)?(func|class|meth|mod|attr|data|exc|obj|const):`(?P<text>[^`]+)`")


def _resolve(obj: griffe.Object, target: str) -> str:
    """The full dotted path of ``target`` as seen from ``obj``'s docstring, or ``target``."""
    if target.startswith("wsimito"):
        return target
    if target.startswith("."):
        module = obj if obj.is_module else obj.module
        base = module.path if module.is_package else module.path.rsplit(".", 1)[0]
        level = len(target) - len(target.lstrip("."))
        for _ in range(level - 1):
            base = base.rsplit(".", 1)[0]
        return f"{base}.{target.lstrip('.')}"
    head, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        if head in scope.members:
            found = scope.members[head].path
            return f"{found}.{rest}" if rest else found
        scope = scope.parent
    try:
        found = obj.resolve(head)
    except Exception:  # noqa: BLE001 - an unknown name stays as written (plain code)
        return target
    return f"{found}.{rest}" if rest else found


def _canonical(root: griffe.Object, path: str) -> str:
    """Where ``path`` is documented: re-exports and imports followed to their definition."""
    names = path.split(".")
    if names[0] != root.name:
        return path
    obj = root
    for name in names[1:]:
        member = obj.members.get(name)
        if member is None:
            return path
        if member.is_alias:
            try:
                member = member.final_target
            except Exception:  # noqa: BLE001 - an import from outside the package
                return path
        obj = member
    return obj.path


def _link(match: re.Match[str], obj: griffe.Object, root: griffe.Object, plain: bool) -> str:
    raw = match["text"].strip()
    if "<" in raw and raw.endswith(">"):  # :func:`title <target>`
        title, target = (part.strip() for part in raw[:-1].split("<", 1))
    else:
        target = raw.lstrip("~!")
        title = target.rsplit(".", 1)[-1] if raw.startswith("~") else target
    if plain:
        return title
    identifier = _canonical(root, _resolve(obj, target.removesuffix("()")))
    if not identifier.startswith(root.name):
        return f"`{title}`"
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def rewrite(obj: griffe.Object, text: str, root: griffe.Object) -> str:
    """``text`` with every Sphinx role replaced by an optional autorefs link.

    On a ``name : type`` line of a parameter list a role becomes its bare title:
    the type is shown as code, where a link cannot go.
    """
    lines = []
    for line in text.split("\n"):
        plain = bool(_PARAMETER.match(line))
        lines.append(_ROLE.sub(lambda m, plain=plain: _link(m, obj, root, plain), line))
    return "\n".join(lines)


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring in the loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Walk every object of ``pkg`` (aliases excluded) and rewrite its docstring."""
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = rewrite(obj, obj.docstring.value, pkg)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
