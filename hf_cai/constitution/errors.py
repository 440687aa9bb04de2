"""The one error every constitution problem raises: bad file, bad field, unknown principle."""

from __future__ import annotations


class ConstitutionError(ValueError):
    """A constitution file or object is malformed. The message names the source, the field and the problem."""

    def __init__(self, problem: str, *, source: str | None = None, field_path: str | None = None):
        self.problem = problem
        self.source = source
        self.field_path = field_path
        where = ", ".join(part for part in (source, f"field '{field_path}'" if field_path else None) if part)
        super().__init__(f"{where}: {problem}" if where else problem)
