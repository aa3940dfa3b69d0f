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


def coral_labels(dest: Path) -> Path:
    """Write the Coral model's ImageNet labels to `dest` with its second "crane" (line 519, the
    machine; line 136 is the bird) renamed: kerascls-edge refuses labels naming two classes the
    same, as the shared file does."""
    labels = (CORAL / "imagenet_labels.txt").read_text().splitlines()
    assert labels[135] == labels[518] == "crane"
    labels[518] = "crane (machine)"
    dest.write_text("\n".join(labels) + "\n")
    return dest


def coral_tflite(d: Path) -> Path:
    """The bare Coral .tflite (linked, same name) in `d`/coral with `coral_labels` beside it:
    what `str(CORAL_MODEL)` gave before kerascls-edge refused the shared folder's labels."""
    folder = d / "coral"
    folder.mkdir(exist_ok=True)
    model = folder / CORAL_MODEL.name
    if not model.exists():
        model.symlink_to(CORAL_MODEL)
    coral_labels(folder / "labels.txt")
    return model
