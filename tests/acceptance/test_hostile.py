"""One test per hostile-user case (:mod:`hostile`): its outcome must be ``good``.

A case that is not good today is listed in :data:`KNOWN` with the reason, and runs as a strict xfail:
when the defect is fixed the test fails (XPASS) until its line here is removed. ``conftest.py`` picks
the fast subset unless ``DTI_ACCEPTANCE=all``.
"""

from __future__ import annotations

import os

import pytest

from . import hostile

#: Cases that are not good today: case id -> why (the defect, as the suite sees it). Each is a strict
#: xfail; fix the defect, then remove its line.
KNOWN: dict[str, str] = {}

CASES = hostile.define_all()


def _param(case: hostile.Case) -> object:
    marks = []
    if case.id in KNOWN:
        marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=KNOWN[case.id]))
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_case(case: hostile.Case, hostile_work) -> None:
    record = hostile.run_case(case, keep=os.environ.get("DTI_ACCEPTANCE_KEEP") == "1")
    hostile.RECORDS.append(record)
    if record["outcome"] == "unavailable":
        pytest.skip(record["first_line"])
    if record["outcome"] == "harness-error":  # not an AssertionError: a KNOWN case's xfail does not hide it
        raise RuntimeError(hostile.describe(record))
    assert record["outcome"] == "good", hostile.describe(record)


def test_known_cases_exist() -> None:
    """Every KNOWN entry names a case (a renamed or removed case must take its entry along)."""
    ids = {c.id for c in CASES}
    assert not sorted(set(KNOWN) - ids), f"KNOWN names no case: {sorted(set(KNOWN) - ids)}"


def test_case_ids_unique_and_areas_known() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert {c.area for c in CASES} == set(hostile.DEFINERS)
    assert len(CASES) > 1000


def test_slow_cases_exist() -> None:
    """Every id conftest.SLOW leaves out of the default run names a case."""
    from .conftest import SLOW

    ids = {c.id for c in CASES}
    assert not sorted(SLOW - ids), f"SLOW names no case: {sorted(SLOW - ids)}"
