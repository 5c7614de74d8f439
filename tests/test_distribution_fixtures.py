"""The JS test's vectors (``js/test/fixtures/distribution.json``) are what the engine's processors
give today: regenerate with ``python js/test/fixtures/make_distribution_fixtures.py``."""

import importlib.util
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "js" / "test" / "fixtures"


def test_distribution_fixture_is_current():
    spec = importlib.util.spec_from_file_location("make_distribution_fixtures", FIXTURES / "make_distribution_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (FIXTURES / "distribution.json").read_text() == module.text(), (
        "stale: run js/test/fixtures/make_distribution_fixtures.py"
    )
