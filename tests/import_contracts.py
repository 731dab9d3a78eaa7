"""Import-linter contract types of t0dqm's own (pyproject.toml [tool.importlinter], run by `make check`).

import-linter sees an external package as one module (`sqlalchemy`), so its built-in contracts cannot allow
`sqlalchemy.exc` while forbidding the rest of SQLAlchemy. :class:`ExternalOnlyIn` reads the import lines.
"""

from __future__ import annotations

import re

import grimp
from importlinter import Contract, ContractCheck, fields, output
from importlinter.application import contract_utils


class ExternalOnlyIn(Contract):
    """Only `allowed_importers` (and their descendants) import the external package `external`;
    other modules may import its `allowed_submodules` (e.g. `sqlalchemy.exc`) and nothing else of it.

    Options: external, allowed_importers, allowed_submodules (optional), ignore_imports (optional).
    """

    type_name = "external_only_in"

    external = fields.StringField()
    allowed_importers = fields.ListField(subfield=fields.ModuleField())
    allowed_submodules = fields.ListField(subfield=fields.StringField(), required=False)
    ignore_imports = fields.SetField(subfield=fields.ImportExpressionField(), required=False)

    def _allowed_line(self, line: str) -> bool:
        for sub in self.allowed_submodules or []:  # type: ignore[attr-defined]
            pattern = (
                rf"^\s*(from\s+{re.escape(sub)}(\.\w+)*\s+import\b|import\s+{re.escape(sub)}(\.\w+)*\s*$)"
            )
            if re.match(pattern, line):
                return True
        return False

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        removal = contract_utils.remove_ignored_imports_and_report(
            graph=graph,
            ignore_imports=self.ignore_imports,  # type: ignore[attr-defined]
            unmatched_alerting=contract_utils.AlertLevel.ERROR,
        )
        external: str = self.external  # type: ignore[attr-defined]
        allowed = [m.name for m in self.allowed_importers]  # type: ignore[attr-defined]
        illegal: list[tuple[str, int, str]] = []
        if external in graph.modules:
            for importer in sorted(graph.find_modules_that_directly_import(external)):
                if any(importer == a or importer.startswith(a + ".") for a in allowed):
                    continue
                for detail in graph.get_import_details(importer=importer, imported=external):
                    if not self._allowed_line(detail["line_contents"]):
                        illegal.append((importer, detail["line_number"], detail["line_contents"]))
        return ContractCheck(
            kept=not illegal,
            warnings=list(removal.warnings),
            ignored_import_count=removal.ignored_import_count,
            metadata={"illegal": illegal},
        )

    def render_broken_contract(self, check: ContractCheck) -> None:
        for importer, line_number, line in check.metadata["illegal"]:
            output.print_error(f"- {importer} (l.{line_number}): {line}", bold=False)
            output.new_line()
