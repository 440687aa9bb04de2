"""The one error every constitution problem raises: bad file, bad field, unknown principle."""

from __future__ import annotations

from collections.abc import Sequence

from hf_cai.errors import HFCAIError


class ConstitutionError(HFCAIError, ValueError):
    """A constitution file or object is malformed. The message names the source, the field and the problem.

    When a file has several problems, one error lists them all: :attr:`problems` holds one error per problem (each
    with its own :attr:`field_path`), and the message has one line per problem.
    """

    def __init__(self, problem: str, *, source: str | None = None, field_path: str | None = None):
        self.problem = problem
        self.source = source
        self.field_path = field_path
        self.problems: tuple[ConstitutionError, ...] = (self,)
        where = ", ".join(part for part in (source, f"field '{field_path}'" if field_path else None) if part)
        super().__init__(f"{where}: {problem}" if where else problem)

    @classmethod
    def combine(cls, problems: Sequence[ConstitutionError], *, source: str | None = None) -> ConstitutionError:
        """One error for all of ``problems`` (which must not be empty): the problem itself when there is only one,
        else an error naming ``source`` whose message lists each problem with its field on a line of its own."""
        if len(problems) == 1:
            return problems[0]
        lines = [
            f"field '{p.field_path}': {p.problem}" if p.field_path else p.problem
            for p in problems
        ]
        error = cls(f"{len(problems)} problems:\n  " + "\n  ".join(lines), source=source)
        error.problems = tuple(problems)
        return error
