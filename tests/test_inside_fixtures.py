"""The JS test's inside-view data (``js/test/fixtures/inside.json``) has the shape the kernel sends
today: the same keys, types and lengths (the numbers of a random model may differ in their last
digits across CPUs). Regenerate with ``python js/test/fixtures/make_inside_fixtures.py``."""

import importlib.util
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "js" / "test" / "fixtures"


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def test_inside_fixture_has_the_shape_the_kernel_sends(tiny_backend):
    spec = importlib.util.spec_from_file_location("make_inside_fixtures", FIXTURES / "make_inside_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.build(tiny_backend)
    stored = json.loads((FIXTURES / "inside.json").read_text())
    assert set(stored) == {"tokens", "lens", "lens_end", "lens_error", "attention_row", "futures", "compare_column"}
    assert shape(stored) == shape(fresh), "stale: run js/test/fixtures/make_inside_fixtures.py"
