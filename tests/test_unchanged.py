"""What users see of the shipped models stays as it was: every method's maps and their
measures on two test digits, against the numbers recorded before the package was
regrouped (tests/data/make_shipped_explanations.py says how and when)."""

import json
import math
from pathlib import Path

from data.make_shipped_explanations import record

RECORDED = Path(__file__).parent / "data" / "shipped_explanations.json"


def close(got: float, expected: float, scale: float) -> bool:
    """Equal up to other CPU kernels' rounding, relative to the quantity's own size."""
    return math.isclose(got, expected, rel_tol=1e-3, abs_tol=1e-4 * scale + 1e-7)


def test_shipped_models_explain_as_recorded():
    expected = json.loads(RECORDED.read_text())
    got = record()
    assert got.keys() == expected.keys()  # the same methods apply to each model
    for key, numbers in expected.items():
        if key.endswith("/logits"):
            for row, row_expected in zip(got[key], numbers, strict=True):
                scale = max(map(abs, row_expected))
                assert all(map(close, row, row_expected, [scale] * 10)), key
            continue
        for field, values in numbers.items():
            if values is None:
                assert got[key][field] is None, (key, field)
                continue
            scales = numbers["l1"] if field == "sum" else [1.0] * len(values)
            assert all(map(close, got[key][field], values, scales)), (key, field)
