"""int8 TFLite op audit of the zoo II families (slow: one conversion per family).

Each family converts in its own subprocess (the converter leaks memory). Run as a script
for the report: ``python -m tests.test_zoo2_int8 [names...]``.
"""

from __future__ import annotations

import sys
from collections import Counter

import pytest

from tests.int8_audit import audit

NAMES = ["convnext_tiny", "convnextv2_atto", "efficientnet_b0", "efficientnet_lite0",
         "mobilenetv3_small", "mobilenetv3_large"]
# ops allowed to stay float, with the reason (empty: every family is full-integer)
ALLOWED: dict[str, set[str]] = {}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_int8_has_no_float_ops(name):
    result = audit(name)
    assert set(result["float"]) <= ALLOWED.get(name, set()), result
    if name.startswith("mobilenetv3"):
        assert "HARD_SWISH" not in result["ops"]  # int8 spells it as MUL/ADD for XNNPACK


if __name__ == "__main__":
    for n in sys.argv[1:] or NAMES:
        r = audit(n)
        print(f"{n:<20} float ops {sum(Counter(r['float']).values()):>3} {r['float']}  "
              f"ops {r['ops']}", flush=True)
        if r["where"]:
            print("    where:", r["where"][:6], flush=True)
