"""Camtrap DP packages checked by the standard's own validator (not a test module).

``validate`` runs frictionless against the standard's 1.0.2 schemas that the
``schema_server`` fixture (tests/conftest.py) serves on 127.0.0.1; ``rows`` reads a table.
"""

from __future__ import annotations

import csv
import http.server
import json
from pathlib import Path

from tests.shared_paths import DATA

STANDARD = DATA / "camtrapdp"
TABLES = ("deployments", "media", "observations")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: D102
        pass


def validate(package: Path, server) -> list[str]:
    """frictionless errors for `package`, its descriptor pointed at the served schemas."""
    url, frictionless = server
    desc = json.loads((package / "datapackage.json").read_text())
    desc["profile"] = f"{url}/relaxed-profile.json"
    for res in desc["resources"]:
        if res["name"] in TABLES:
            res["schema"] = f"{url}/{res['name']}-table-schema.json"
    check = package / "_validate.datapackage.json"
    check.write_text(json.dumps(desc))
    try:
        report = frictionless.validate(str(check))
    finally:
        check.unlink()
    return [f"{e.type}: {e.message}" for task in report.tasks for e in task.errors] + \
           [f"{e.type}: {e.message}" for e in report.errors]


def rows(package: Path, table: str) -> list[dict]:
    with open(package / f"{table}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
