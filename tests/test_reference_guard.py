"""The conftest guard: a test marked `reference` may not be skipped, whatever skips it."""

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


@pytest.fixture
def guarded(pytester: pytest.Pytester) -> pytest.Pytester:
    """A test folder that runs under this suite's conftest, with the `reference` marker registered."""
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    reference: identity with a reference implementation\n")
    return pytester


SKIPPED_WHILE_RUNNING = """
import pytest

@pytest.mark.reference
def test_identity():
    pytest.skip("reference data absent")
"""
SKIPPED_BEFORE_RUNNING = """
import pytest

pytestmark = pytest.mark.reference

@pytest.mark.skipif(True, reason="transformers is absent")
def test_parity():
    pass
"""


@pytest.mark.parametrize("source, outcome, reason", [
    (SKIPPED_WHILE_RUNNING, {"failed": 1}, "reference data absent"),
    (SKIPPED_BEFORE_RUNNING, {"errors": 1}, "transformers is absent"),
], ids=["while-running", "before-running"])
def test_a_skipped_reference_test_fails_the_run(guarded, source, outcome, reason):
    guarded.makepyfile(source)
    result = guarded.runpytest()
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines([f"*a reference test must not be skipped (it was: {reason})*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_other_tests_may_still_skip(guarded):
    guarded.makepyfile(
        """
        import pytest

        def test_optional():
            pytest.skip("no browser")

        @pytest.mark.reference
        def test_identity():
            pass
        """
    )
    result = guarded.runpytest()
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK
