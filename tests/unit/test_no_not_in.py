"""No ``NOT IN (subquery)`` anywhere in t0dqm. PostgreSQL cannot turn it into an anti-join: it re-reads
the materialised subquery for every outer row (75 ms per received file per million members, issue 14).

This is a static scan of the package. It finds ``.not_in(...)`` / ``.notin_(...)`` and negated
``.in_(...)`` calls that are given a query, and raw SQL strings containing ``NOT IN (SELECT``.
tests/integration/test_catalog_scale.py also watches the SQL that the periodic decisions really send.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import t0dqm

NOT_IN_SQL = re.compile(r"NOT\s+IN\s*\(\s*SELECT", re.IGNORECASE)
QUERY_BUILDERS = {"select", "subquery", "scalar_subquery", "exists", "text", "union", "union_all"}


def _builds_query(node: ast.AST) -> bool:
    """True when the expression contains a call building a query (select(...), .subquery(), ...)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            func = sub.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in QUERY_BUILDERS:
                return True
    return False


def _in_call(node: ast.AST, names: set[str]) -> ast.Call | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names:
        return node
    return None


def offences(source: str, filename: str = "<string>") -> list[str]:
    """Every NOT IN (subquery) the scan finds in one module's source."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        call = _in_call(node, {"not_in", "notin_"})
        if call is not None and any(_builds_query(a) for a in call.args):
            found.append(f"{where}: .{call.func.attr}(<query>)")  # type: ignore[attr-defined]
        negated = None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Invert, ast.Not)):
            negated = _in_call(node.operand, {"in_"})
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) == "not_"
            and node.args
        ):
            negated = _in_call(node.args[0], {"in_"})
        if negated is not None and any(_builds_query(a) for a in negated.args):
            found.append(f"{where}: negated .in_(<query>)")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and NOT_IN_SQL.search(node.value):
            found.append(f"{where}: SQL text with NOT IN (SELECT")
    return found


def test_the_scan_finds_each_form() -> None:
    bad = """
q1 = select(files.c.id).where(files.c.id.not_in(select(members.c.file_id)))
q2 = select(files.c.id).where(files.c.id.notin_(sub.subquery()))
q3 = select(files.c.id).where(~files.c.id.in_(select(members.c.file_id)))
q4 = select(files.c.id).where(not_(files.c.id.in_(select(members.c.file_id))))
q5 = "SELECT id FROM files WHERE id not in ( select file_id FROM members)"
"""
    assert len(offences(bad)) == 5
    fine = """
q1 = select(files.c.id).where(files.c.state.not_in(["removed"]), files.c.id.not_in(ids))
q2 = select(files.c.id).where(~exists().where(members.c.file_id == files.c.id))
q3 = select(files.c.id).where(files.c.id.in_(select(members.c.file_id)))
"""
    assert offences(fine) == []


def test_no_not_in_subquery_in_t0dqm() -> None:
    package = Path(t0dqm.__file__).parent
    found = [
        hit
        for path in sorted(package.rglob("*.py"))
        for hit in offences(path.read_text(), str(path.relative_to(package.parent)))
    ]
    assert found == [], (
        "NOT IN (subquery) is back; write it as NOT EXISTS (t0dqm.catalog.queries.not_member):\n"
        + "\n".join(found)
    )
