"""Where the tests find ../shared/data (real camera-trap frames, the third-party Coral model).

Tests that need these skip with a reason where the folder is absent.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
CORAL = DATA / "models" / "coral"
CORAL_MODEL = CORAL / "mobilenet_v2_1.0_224_quant.tflite"
SPECIESNET = DATA / "camtrap" / "speciesnet_test_data"
ENA24 = DATA / "camtrap" / "ena24_small"
