"""Marks as skipped the mutants that only change a type annotation.

With ``from __future__ import annotations`` annotations are stored as strings
and never evaluated (vidtrt calls ``typing.get_type_hints`` only on the model
config dataclasses in ``vidtrt/models``, which no config here mutates), so
``int | None`` → ``int + None`` can change nothing: each such mutant is an
equivalent one, and running the tests on it only costs time. Modules without
that import are left alone.

    .venv/bin/python benchmarks/mutation/filter_annotations.py SESSION.sqlite
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult


@cache
def annotation_spans(module_path: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) of every annotation, as (line, column); none when the
    module evaluates its annotations."""
    tree = ast.parse(module_path.read_text())
    postponed = any(
        isinstance(node, ast.ImportFrom) and node.module == "__future__" and any(a.name == "annotations" for a in node.names)
        for node in tree.body
    )
    if not postponed:
        return []
    annotations = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            annotations.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
    return [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in annotations]


def only_annotations(item) -> bool:
    for mutation in item.mutations:
        start, end = tuple(mutation.start_pos), tuple(mutation.end_pos)
        if not any(lo <= start and end <= hi for lo, hi in annotation_spans(Path(mutation.module_path))):
            return False
    return True


def main(session: str) -> int:
    skipped = 0
    with use_db(session, WorkDB.Mode.open) as work_db:
        for item in list(work_db.pending_work_items):
            if only_annotations(item):
                work_db.set_result(
                    item.job_id,
                    WorkResult(output="Annotation only (never evaluated)", worker_outcome=WorkerOutcome.SKIPPED),
                )
                skipped += 1
    print(f"{skipped} annotation-only mutants skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
