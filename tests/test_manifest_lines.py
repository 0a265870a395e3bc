"""Line splitting of JSONL manifests: bounded memory, line numbers, oversized lines."""

from __future__ import annotations

import io

import pyarrow as pa

from pipeline.io import manifest_lines
from pipeline.io.manifest_lines import iter_lines, parse_lines


def test_lines_numbers_and_blank_lines(monkeypatch) -> None:
    monkeypatch.setattr(manifest_lines, "_READ_BYTES", 3)  # lines cross every read boundary
    data = b'{"a": 1}\n\n  \n{"b": 2}\r\n{"c": 3}'
    assert list(iter_lines(io.BytesIO(data).read)) == [(1, b'{"a": 1}'), (4, b'{"b": 2}\r'), (5, b'{"c": 3}')]


def test_an_oversized_line_is_reported_not_buffered(monkeypatch) -> None:
    monkeypatch.setattr(manifest_lines, "_READ_BYTES", 4)
    data = b'{"ok": 1}\n' + b"x" * 100 + b'\n{"ok": 2}\n' + b"y" * 50
    out = list(iter_lines(io.BytesIO(data).read, max_line_bytes=20))
    assert out == [(1, b'{"ok": 1}'), (2, None), (3, b'{"ok": 2}'), (4, None)]


def test_parse_lines_keeps_known_fields_as_text() -> None:
    batch = pa.table(
        {
            "path": ["/m/x.jsonl"] * 3,
            "line": [1, 2, 3],
            "raw": [b'{"id": 7, "audio": "a.wav", "duration": 1.5, "flag": true, "junk": {"x": 1}}', None, b"42"],
        }
    )
    rows = parse_lines(batch).to_pylist()
    assert rows[0] == {"id": "7", "audio": "a.wav", "duration": "1.5", "manifest_error": None}
    assert rows[1]["id"] == "x.jsonl:2" and "longer than" in rows[1]["manifest_error"]
    assert rows[2]["id"] == "x.jsonl:3" and "a JSON int, not an object" in rows[2]["manifest_error"]
