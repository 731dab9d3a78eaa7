"""The SQL-in-catalog import contract: which import lines of sqlalchemy it allows outside t0dqm.catalog."""

from tests.import_contracts import ExternalOnlyIn


def _contract() -> ExternalOnlyIn:
    return ExternalOnlyIn(
        name="sql",
        session_options={},
        contract_options={
            "external": "sqlalchemy",
            "allowed_importers": ["t0dqm.catalog"],
            "allowed_submodules": ["sqlalchemy.exc"],
        },
    )


def test_exception_imports_allowed():
    c = _contract()
    assert c._allowed_line("from sqlalchemy.exc import IntegrityError")
    assert c._allowed_line("    from sqlalchemy.exc import (")
    assert c._allowed_line("import sqlalchemy.exc")


def test_sql_imports_refused():
    c = _contract()
    assert not c._allowed_line("from sqlalchemy import select")
    assert not c._allowed_line("from sqlalchemy.engine import Connection")
    assert not c._allowed_line("import sqlalchemy")
    assert not c._allowed_line("from sqlalchemy.exceptional import x")
    assert not c._allowed_line("import sqlalchemy.exc, sqlalchemy.sql")
