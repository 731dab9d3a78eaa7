"""SQL lives in t0dqm/catalog: no module outside it builds queries or touches tables.

A static scan of the package (AST). Outside t0dqm/catalog a module may not import sqlalchemy (exception
types from ``sqlalchemy.exc`` excepted: callers catch them), nor import a table object (or the metadata, or
a dict of tables) from t0dqm.catalog.db. It calls functions of the catalog modules instead, which take the
``Connection`` of its ``with catalog.begin() as conn:`` (or the ``Catalog``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from sqlalchemy import MetaData, Table

import t0dqm
from t0dqm.catalog import db

PACKAGE = Path(t0dqm.__file__).parent
CATALOG = "t0dqm.catalog"
DB = "t0dqm.catalog.db"


def table_names() -> frozenset[str]:
    """Names in t0dqm.catalog.db bound to a table, the metadata, or a dict of tables."""
    return frozenset(
        name
        for name, value in vars(db).items()
        if isinstance(value, Table | MetaData)
        or (isinstance(value, dict) and value and all(isinstance(v, Table) for v in value.values()))
    )


def _allowed_sqlalchemy(module: str) -> bool:
    return module == "sqlalchemy.exc" or module.startswith("sqlalchemy.exc.")


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module name of a (possibly relative) ``from ... import``."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def offences(source: str, module: str, tables: frozenset[str], is_package: bool = False) -> list[str]:
    """What one module imports that belongs in t0dqm/catalog (empty: nothing)."""
    found: list[str] = []
    db_aliases: set[str] = set()  # local names bound to the t0dqm.catalog.db module itself
    tree = ast.parse(source, module)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "sqlalchemy" and not _allowed_sqlalchemy(alias.name):
                    found.append(f"line {line}: import {alias.name}")
                if alias.name == DB:
                    if alias.asname:
                        db_aliases.add(alias.asname)
                    else:
                        found.append(f"line {line}: import {DB} (tables reachable as attributes)")
        elif isinstance(node, ast.ImportFrom):
            source_module = _absolute(node, module, is_package)
            names = [a.name for a in node.names]
            if source_module.split(".")[0] == "sqlalchemy" and not _allowed_sqlalchemy(source_module):
                found.append(f"line {line}: from {source_module} import {', '.join(names)}")
            elif source_module == DB:
                bad = sorted(n for n in names if n in tables or n == "*")
                if bad:
                    found.append(f"line {line}: from {DB} import {', '.join(bad)}")
            elif source_module == CATALOG:
                db_aliases.update(a.asname or a.name for a in node.names if a.name == "db")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in db_aliases
            and node.attr in tables
        ):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def scan() -> dict[str, list[str]]:
    """Module name -> its offences, for every module of t0dqm outside t0dqm/catalog."""
    tables = table_names()
    out: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        if module == CATALOG or module.startswith(CATALOG + "."):
            continue
        found = offences(path.read_text(), module, tables, is_package)
        if found:
            out[module] = found
    return out


def test_the_scan_finds_each_form() -> None:
    tables = table_names()
    assert {"files", "archives", "audit", "leases", "alarms", "metadata", "TABLES"} <= tables
    bad = """
import sqlalchemy
import sqlalchemy.engine
from sqlalchemy import select
from sqlalchemy.engine import Connection
from t0dqm.catalog.db import Catalog, files
from t0dqm.catalog.db import *
from ..catalog.db import audit
from ..catalog import db
import t0dqm.catalog.db as cdb
import t0dqm.catalog.db
x = db.leases
y = cdb.archives
def f():
    from sqlalchemy import func
"""
    assert len(offences(bad, "t0dqm.tasks.x", tables)) == 11
    fine = """
import sqlalchemy.exc
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from t0dqm.catalog.db import Catalog, Connection, get_catalog, worker_identity
from t0dqm.catalog import alarms, db, status
from ..catalog.db import dead_owners
x = db.get_catalog
y = status.files
"""
    assert offences(fine, "t0dqm.tasks.x", tables) == []


def test_relative_imports_resolve_from_the_module_or_package() -> None:
    tables = table_names()
    assert offences("from .catalog.db import files\n", "t0dqm", tables, is_package=True) != []
    assert offences("from ..catalog.db import files\n", "t0dqm.dev", tables, is_package=True) != []
    assert offences("from ..catalog.db import files\n", "t0dqm.dev.demo", tables) != []
    assert (
        offences("from .db import files\n", "t0dqm.tasks.x", tables) == []
    )  # t0dqm.tasks.db: not the catalog
    assert offences("from . import files\n", "t0dqm.tasks.x", tables) == []


def test_no_sql_outside_catalog() -> None:
    found = scan()
    assert found == {}, (
        "SQL outside t0dqm/catalog: move the queries into a catalog module (by entity) and call "
        "it with the connection:\n"
        + "\n".join(f"{module}: {hit}" for module, hits in sorted(found.items()) for hit in hits)
    )
