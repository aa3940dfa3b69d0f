"""Read MegaDetector-format results files one image entry at a time (standard library only).

A 1,000,000-image results file is 300-500 MB of JSON; `json.load` of it takes several GB of
Python objects, more than a 1 GB device has. Here the top-level object is walked with
`json.JSONDecoder.raw_decode` over a buffered window of the file: every top-level value except
`images` is decoded whole (they are small), and `images` is yielded entry by entry, so memory
is bounded by the largest single entry, not the file. The device has no `ijson`.

`read_header(path)` gives everything except `images` (MegaDetector's own tool writes `images`
first, so the whole file is scanned, entries discarded); `iter_images(path)` yields the raw
entries and, after the last one, checks that the rest of the file is well-formed JSON too.
`Results` adds the checks every consumer (convert, report, sorting, Camtrap DP) relies on: one
one-line error naming the file, the entry's index and its image file name.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from pathlib import Path
from typing import Iterator, Optional

from .bundle import EdgeError
from .userfiles import open_regular

_CHUNK = 1 << 20
MAX_VALUE_CHARS = 16 << 20  # one entry (or header value) larger than this is refused
_WS = re.compile(r"[ \t\n\r]*")
_KINDS = {"[": "a list", '"': "a string", "t": "a boolean", "f": "a boolean", "n": "null"}


class _Window:
    """A sliding text window over a UTF-8 file that decodes one JSON value at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = open_regular(path, "results")
        self.utf8 = codecs.getincrementaldecoder("utf-8-sig")()
        self.decoder = json.JSONDecoder()
        self.buf, self.pos, self.base, self.eof = "", 0, 0, False

    def close(self) -> None:
        self.f.close()

    def fail(self, why: str) -> EdgeError:
        return EdgeError(f"cannot read results {self.path}: {why} "
                         f"(at character {self.base + self.pos})")

    def _more(self, want: int = 0) -> bool:
        """Append at least `want` (and at least _CHUNK, read when called, so a test can
        shrink the window) more bytes' worth of text; False at the end of the file."""
        if self.eof:
            return False
        self.base += self.pos
        self.buf, self.pos = self.buf[self.pos:], 0
        data = self.f.read(max(want, _CHUNK))
        try:
            self.buf += self.utf8.decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise self.fail(f"not UTF-8 text ({e.reason})") from None
        self.eof = not data
        return True

    def peek(self) -> str:
        """The next non-blank character ('' at the end of the file), not consumed."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self._more():
                return self.buf[self.pos:self.pos + 1]

    def expect(self, chars: str, what: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            raise self.fail(f"expected {what}, found {c!r}" if c else
                            f"expected {what}, found the end of the file (truncated?)")
        self.pos += 1
        return c

    def value(self) -> object:
        """Decode the next value. A value that ends exactly at the window's end is re-read
        with more text (a number such as 12 may be the start of 1234)."""
        self.peek()
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if self._grow():
                    continue
                raise self.fail(f"not valid JSON ({e.msg})") from None
            except RecursionError:
                raise self.fail("nested too deeply") from None
            if end == len(self.buf) and self._grow():
                continue
            self.pos = end
            return obj

    def _grow(self) -> bool:
        """More text for a value being decoded; doubles, so a long value costs linear time."""
        pending = len(self.buf) - self.pos
        if pending >= MAX_VALUE_CHARS:
            raise self.fail(f"one value is larger than {MAX_VALUE_CHARS:,} characters")
        return self._more(min(pending, MAX_VALUE_CHARS - pending))


def _members(w: _Window) -> Iterator[str]:
    """The keys of the top-level object in order; the caller consumes each key's value."""
    c = w.peek()
    if c != "{":
        kind = _KINDS.get(c, "a number" if c else "nothing")
        raise EdgeError(f"cannot read results {w.path}: top level: expected an object, "
                        f"got {kind}")
    w.pos += 1
    if w.peek() == "}":
        w.pos += 1
    else:
        while True:
            if w.peek() != '"':
                raise w.fail("expected a property name")
            key = w.value()
            w.expect(":", "':'")
            yield key
            if w.expect(",}", "',' or '}'") == "}":
                break
    if w.peek():
        raise w.fail("extra data after the top-level object")


def _array(w: _Window, key: str) -> Iterator[object]:
    c = w.peek()
    if c != "[":
        raise EdgeError(f"cannot read results {w.path}: {key}: expected a list, got "
                        f"{_KINDS.get(c, 'a number' if c != '{' else 'an object')}")
    w.pos += 1
    if w.peek() == "]":
        w.pos += 1
        return
    while True:
        yield w.value()
        if w.expect(",]", "',' or ']'") == "]":
            return


def _walk(path: Path, images: bool) -> Iterator[tuple[Optional[str], object]]:
    """(key, value) for header keys; (None, entry) for each image entry when `images`."""
    w = _Window(Path(path))
    try:
        seen = False
        for key in _members(w):
            if key != "images":
                yield key, w.value()
                continue
            if seen:
                raise EdgeError(f"cannot read results {path}: 'images' appears twice")
            seen = True
            for entry in _array(w, "images"):
                if images:
                    yield None, entry
        if not seen:
            raise EdgeError(f"cannot read results {path}: images: missing")
    finally:
        w.close()


def read_header(path: Path) -> dict:
    """Every top-level key of the results file except `images` (entries are read and
    discarded, so the whole file is checked to be well-formed JSON)."""
    return {k: v for k, v in _walk(Path(path), images=False)}


def iter_images(path: Path) -> Iterator[dict]:
    """The raw `images` entries one at a time (not checked: see `Results`)."""
    for key, value in _walk(Path(path), images=True):
        if key is None:
            yield value


# -- checks ---------------------------------------------------------------------------------


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "a list" if isinstance(value, list) else "an object"


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


class EntryCheck:
    """The checks every consumer (convert, report, sorting, Camtrap DP) relies on.

    Calling it with (index, entry) returns the entry if `file` is a non-empty string,
    `failure` a string or null, `detections` a list (null for a failure) of objects with a known
    `category`, a finite `conf`, a 4-number `bbox` and `classifications` as
    [[known category id, finite confidence], ...], `warnings` a list of strings, and our
    `sequence` block likewise; else one EdgeError line naming the file, index and image.
    """

    def __init__(self, path: Path, header: dict) -> None:
        self.path, self.header = Path(path), header
        self.info = self._obj("info")
        self.detection_categories = self._names("detection_categories")
        self.classification_categories = self._names("classification_categories")

    def _obj(self, key: str) -> dict:
        value = self.header.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise EdgeError(f"{self.path}: {key}: expected an object, got {_kind(value)}")
        return value

    def _names(self, key: str) -> dict[str, str]:
        names = self._obj(key)
        for k, v in names.items():
            if not isinstance(v, str):
                raise EdgeError(f"{self.path}: {key}.{k}: expected a string, got {_kind(v)}")
        return names

    def _fail(self, i: int, file: object, where: str, why: str) -> EdgeError:
        name = f" ({file})" if isinstance(file, str) else ""
        return EdgeError(f"{self.path}: images[{i}]{name}: {where}: {why}")

    def __call__(self, i: int, entry: object) -> dict:
        """`entry` if every field consumers read is well-formed, else a one-line EdgeError."""
        if not isinstance(entry, dict):
            raise EdgeError(f"{self.path}: images[{i}]: expected an object, got {_kind(entry)}")
        file = entry.get("file")
        if not isinstance(file, str) or not file:
            raise self._fail(i, None, "file", f"expected a non-empty string, got {_kind(file)}")
        for key in ("failure", "datetime"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise self._fail(i, file, key, f"expected a string, got {_kind(entry[key])}")
        warnings = entry.get("warnings")
        if warnings is not None and not (isinstance(warnings, list) and
                                         all(isinstance(w, str) for w in warnings)):
            raise self._fail(i, file, "warnings", "expected a list of strings")
        dets = entry.get("detections")
        if dets is None and not entry.get("failure"):
            raise self._fail(i, file, "detections", "missing (null is for failures only)")
        if dets is not None and not isinstance(dets, list):
            raise self._fail(i, file, "detections", f"expected a list, got {_kind(dets)}")
        for j, det in enumerate(dets or []):
            self._check_detection(i, file, j, det)
        seq = entry.get("sequence")
        if seq is not None:
            if not isinstance(seq, dict):
                raise self._fail(i, file, "sequence", f"expected an object, got {_kind(seq)}")
            self._check_ranking(i, file, "sequence.classifications", seq.get("classifications"))
        return entry

    def _check_detection(self, i: int, file: str, j: int, det: object) -> None:
        where = f"detections[{j}]"
        if not isinstance(det, dict):
            raise self._fail(i, file, where, f"expected an object, got {_kind(det)}")
        cat = det.get("category")
        if not isinstance(cat, str) or (self.detection_categories and
                                        cat not in self.detection_categories):
            raise self._fail(i, file, f"{where}.category",
                             f"{_kind(cat)} is not an id of detection_categories")
        if not _is_number(det.get("conf")):
            raise self._fail(i, file, f"{where}.conf",
                             f"expected a finite number, got {_kind(det.get('conf'))}")
        box = det.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise self._fail(i, file, f"{where}.bbox",
                             f"expected [x, y, width, height] (4 finite numbers), got "
                             f"{_kind(box)}")
        self._check_ranking(i, file, f"{where}.classifications", det.get("classifications"))

    def _check_ranking(self, i: int, file: str, where: str, ranking: object) -> None:
        if ranking is None:
            return
        if not isinstance(ranking, list):
            raise self._fail(i, file, where, f"expected a list, got {_kind(ranking)}")
        for k, pair in enumerate(ranking):
            at = f"{where}[{k}]"
            if not (isinstance(pair, list) and len(pair) == 2):
                raise self._fail(i, file, at, f"expected [category id, confidence], got "
                                              f"{_kind(pair)}")
            cid, conf = pair
            if not isinstance(cid, (str, int)) or isinstance(cid, bool) or \
                    str(cid) not in self.classification_categories:
                raise self._fail(i, file, at, f"{_kind(cid)} is not an id of "
                                              "classification_categories")
            if not _is_number(conf):
                raise self._fail(i, file, at, f"confidence: expected a finite number, got "
                                              f"{_kind(conf)}")


class Results(EntryCheck):
    """A MegaDetector-format results file read as a stream: `header` (every top-level key
    but `images`) on creation, then `images()` yields each entry, checked (EntryCheck)."""

    def __init__(self, path: Path) -> None:
        super().__init__(Path(path), read_header(Path(path)))

    def images(self) -> Iterator[dict]:
        for i, entry in enumerate(iter_images(self.path)):
            yield self(i, entry)

    def load(self) -> dict:
        """The whole file as one dict (header + checked `images`): for small files only."""
        return {**self.header, "images": list(self.images())}


def check_loaded(path: Path, md: dict) -> dict:
    """EntryCheck over a results file already loaded whole (e.g. by runner.load_md)."""
    check = EntryCheck(Path(path), {k: v for k, v in md.items() if k != "images"})
    for i, entry in enumerate(md.get("images") or []):
        check(i, entry)
    return md


def load_results(path: Path) -> dict:
    """The whole results file, every entry checked (`Results.load`)."""
    return Results(Path(path)).load()


def whole_image(info: dict) -> bool:
    """True for a whole-image classifier's file (ours: detector "none ...")."""
    return str(info.get("detector", "")).startswith("none")


def typical_threshold(info: dict, default: float = 0.2) -> float:
    """The detector's typical_detection_threshold, else `default`."""
    meta = info.get("detector_metadata") if isinstance(info, dict) else None
    value = meta.get("typical_detection_threshold") if isinstance(meta, dict) else None
    return float(value) if _is_number(value) else default
