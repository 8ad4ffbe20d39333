"""The PNG fast check of the screening gives Pillow's answer, and is taken for ordinary files.

``concepts.screening._png_is_sound`` reads a PNG's header chunks and its last bytes instead of opening
the file with Pillow. Known answer: for every file below -- ordinary PNGs of every mode Pillow writes
and PNGs damaged in the ways that make Pillow refuse to open them (checksum, filter method, colour type,
size, short chunks, missing end) -- ``image_problem`` says the same as the Pillow-only check, and the fast
check itself says "sound" only for files Pillow opens.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from concepts import screening


def _png(path, mode="RGB", size=(16, 12), **save):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (*size[::-1], 4), dtype=np.uint8), "RGBA").convert(mode)
    image.save(path, **save)
    return path


def _chunks(data: bytes) -> list[list]:
    out, pos = [], 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        out.append([data[pos + 4:pos + 8], bytearray(data[pos + 8:pos + 8 + length])])
        pos += 12 + length
    return out


def _assemble(chunks, fix_crc=True) -> bytes:
    body = b""
    for kind, payload in chunks:
        crc = zlib.crc32(bytes(kind) + bytes(payload)) if fix_crc else 0
        body += struct.pack(">I", len(payload)) + bytes(kind) + bytes(payload) + struct.pack(">I", crc)
    return b"\x89PNG\r\n\x1a\n" + body


def _pil_only(path) -> str | None:
    """The answer of the screening without the fast check."""
    original = screening._png_is_sound
    screening._png_is_sound = lambda *_: False
    try:
        screening._MEMO.clear()
        return screening.image_problem(path)
    finally:
        screening._png_is_sound = original
        screening._MEMO.clear()


def _with_fast_check(path) -> str | None:
    screening._MEMO.clear()
    try:
        return screening.image_problem(path)
    finally:
        screening._MEMO.clear()


ORDINARY = {
    "rgb": dict(mode="RGB"), "rgba": dict(mode="RGBA"), "grey": dict(mode="L"), "grey-alpha": dict(mode="LA"),
    "bilevel": dict(mode="1"), "palette": dict(mode="P"), "palette-transparent": dict(mode="P", transparency=0),
    "grey16": dict(mode="I;16"), "dpi": dict(mode="RGB", dpi=(300, 300)), "optimised": dict(mode="L", optimize=True),
}


@pytest.mark.parametrize("name", sorted(ORDINARY))
def test_ordinary_pngs_take_the_fast_check_and_pass(tmp_path, name):
    path = _png(tmp_path / f"{name}.png", **ORDINARY[name])
    assert screening._png_is_sound(path, path.stat().st_size)
    assert _with_fast_check(path) is None and _pil_only(path) is None


def _damaged(tmp_path, name: str):
    good = _png(tmp_path / "good.png", mode="RGB").read_bytes()
    chunks = _chunks(good)
    ihdr = chunks[0][1]
    path = tmp_path / f"{name}.png"
    if name == "bad-ihdr-checksum":
        data = _assemble(chunks, fix_crc=False)
    elif name == "filter-method":
        ihdr[11] = 1
        data = _assemble(chunks)
    elif name == "colour-type":
        ihdr[9] = 5
        data = _assemble(chunks)
    elif name == "zero-width":
        ihdr[0:4] = b"\0\0\0\0"
        data = _assemble(chunks)
    elif name == "short-ihdr":
        chunks[0][1] = ihdr[:10]
        data = _assemble(chunks)
    elif name == "short-gamma":
        chunks.insert(1, [b"gAMA", bytearray(b"\0\0")])
        data = _assemble(chunks)
    elif name == "short-transparency":
        chunks.insert(1, [b"tRNS", bytearray(b"\0\0")])     # RGB needs 6 bytes
        data = _assemble(chunks)
    elif name == "broken-chunk-name":
        chunks.insert(1, [b"g4MA", bytearray(b"\0\0\0\1")])
        data = _assemble(chunks)
    elif name == "bad-text-checksum":
        chunks.insert(1, [b"tEXt", bytearray(b"Comment\0hello")])
        data = bytearray(_assemble(chunks))
        text_end = 8 + 25 + 12 + len(b"Comment\0hello")
        data[text_end - 1] ^= 0xFF
        data = bytes(data)
    elif name == "truncated":
        data = good[: len(good) // 2]
    elif name == "no-signature":
        data = b"\x89PNX" + good[4:]
    elif name == "not-a-png":
        data = b"this is a text file saved as png\n" * 20
    elif name == "jpeg-named-png":
        Image.new("RGB", (8, 8)).save(tmp_path / "x.jpg")
        data = (tmp_path / "x.jpg").read_bytes()
    elif name == "ihdr-not-first":
        chunks.insert(0, [b"sRGB", bytearray(b"\0")])
        data = _assemble(chunks)
    else:
        raise AssertionError(name)
    path.write_bytes(data)
    return path


DAMAGED = ["bad-ihdr-checksum", "filter-method", "colour-type", "zero-width", "short-ihdr", "short-gamma",
           "short-transparency", "broken-chunk-name", "bad-text-checksum", "truncated", "no-signature",
           "not-a-png", "jpeg-named-png", "ihdr-not-first"]


@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_pngs_get_pillows_answer(tmp_path, name):
    path = _damaged(tmp_path, name)
    expected = _pil_only(path)
    assert _with_fast_check(path) == expected
    if screening._png_is_sound(path, path.stat().st_size):
        # Only where Pillow itself opens the file (an sRGB chunk before IHDR, say).
        assert expected is None
        with Image.open(path) as handle:
            handle.load()


@pytest.mark.parametrize("name", DAMAGED[:8] + ["truncated"])
def test_files_pillow_refuses_are_never_sound(tmp_path, name):
    path = _damaged(tmp_path, name)
    opens = True
    try:
        with Image.open(path) as handle:
            handle.load()
    except Exception:
        opens = False
    if not opens:
        assert not screening._png_is_sound(path, path.stat().st_size)
        assert _with_fast_check(path) is not None


def test_a_huge_declared_size_is_left_to_pillows_bomb_check(tmp_path, monkeypatch):
    path = _png(tmp_path / "big.png", size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert not screening._png_is_sound(path, path.stat().st_size)


def test_header_chunks_pillow_knows_need_pillow(tmp_path):
    """Chunks the fast check does not list (text, ICC profile) send the file to Pillow, which opens it."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a scan")
    path = _png(tmp_path / "text.png", pnginfo=info)
    assert not screening._png_is_sound(path, path.stat().st_size)
    assert _with_fast_check(path) is None
