"""Headless chromium for the page tests: the DOM after a page's scripts ran, or a screenshot.

Debian's `chromium` (CI installs it: `apt-get install -y chromium`); tests skip with
`needs_chromium` where it is absent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not "
                                    "installed (apt-get install -y chromium)")


def browser(tmp_path: Path, page: Path, fragment: str = "", screenshot: Path | None = None,
            size: str = "1200,900") -> str:
    """Open ``page#fragment`` as a file:// URL; return the DOM (or take a screenshot)."""
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--no-first-run", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", f"--window-size={size}"]
    cmd += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    proc = subprocess.run([*cmd, f"{page.resolve().as_uri()}#{fragment}"], check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
