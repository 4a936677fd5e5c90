"""Tests of our safetensors reader/writer: round trips, every malformed file of mkbad (F1-F8), F14, lifetime."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import llama32_native
import mkbad
import numpy as np
import pytest
from llama32_native.errors import (
    MissingTensorError,
    ModelLoadError,
    ModelNotFoundError,
    SafetensorsFormatError,
    UnsupportedDTypeError,
)
from llama32_native.loading.safetensors import (
    MAX_HEADER_SIZE,
    Entry,
    SafetensorsFile,
    header_length,
    json_depth,
    parse_header,
    write_safetensors,
)

FILE_CASES = mkbad.file_cases()


def _sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    return {
        "f32": f32,
        "f16": rng.standard_normal((4, 3)).astype(np.float16),
        "f64": rng.standard_normal(7),
        "bf16": mkbad.to_bf16_bits(f32),
        "u8": rng.integers(0, 256, (2, 34), dtype=np.uint8),
        "i8": rng.integers(-128, 128, 9, dtype=np.int8),
        "i16": rng.integers(-999, 999, 3, dtype=np.int16),
        "u16": rng.integers(0, 65535, 3, dtype=np.uint16),
        "i32": rng.integers(-(2**31), 2**31 - 1, 5, dtype=np.int32),
        "u32": rng.integers(0, 2**32 - 1, 5, dtype=np.uint32),
        "i64": rng.integers(-(2**62), 2**62, 2, dtype=np.int64),
        "u64": np.array([0, 2**64 - 1], dtype=np.uint64),
        "bool": np.array([True, False, True]),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "empty2": np.zeros((2, 0), dtype=np.float16),
        "strided": f32.T,  # non-contiguous input
        "big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
    }


def _read_all(path: Path) -> None:
    with SafetensorsFile(path) as f:
        for name in f.entries:
            f.array(name)


# ----------------------------------------------------------------------------- round trips


def test_round_trip_every_dtype(tmp_path: Path) -> None:
    tensors = _sample()
    path = tmp_path / "x.safetensors"
    write_safetensors(path, tensors, {"format": "pt", "note": "ünïcode"}, dtypes={"bf16": "BF16"})
    with SafetensorsFile(path) as f:
        assert f.metadata == {"format": "pt", "note": "ünïcode"}
        assert set(f.entries) == set(tensors)
        assert f.entries["bf16"].dtype == "BF16" and f.entries["u8"].dtype == "U8"
        for name, want in tensors.items():
            got = f.array(name)
            assert got.shape == want.shape, name
            np.testing.assert_array_equal(got, want, err_msg=name)
            assert not got.flags.writeable, name
        assert f.array("bf16").dtype == np.uint16
        assert f.array("f16").dtype == np.float16
        assert f.array("big_endian").dtype == np.dtype("<f4")


def test_arrays_are_zero_copy_views(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    write_safetensors(path, {"w": np.arange(1024, dtype=np.float32)})
    with SafetensorsFile(path) as f:
        a, b = f.array("w"), f.array("w")
        assert not a.flags.owndata
        assert np.shares_memory(a, b)


def test_header_is_padded_and_layout_deterministic(tmp_path: Path) -> None:
    tensors = _sample()
    p1, p2 = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_safetensors(p1, tensors, dtypes={"bf16": "BF16"})
    write_safetensors(p2, dict(reversed(list(tensors.items()))), dtypes={"bf16": "BF16"})
    raw = p1.read_bytes()
    assert raw == p2.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and raw[8 + n - 1 : 8 + n] in (b" ", b"}")
    with SafetensorsFile(p1) as f:
        order = list(f.entries)  # by data offset
        bits = [f.array(n).dtype.itemsize for n in order]
        assert bits == sorted(bits, reverse=True)
        assert f.data_offset % 8 == 0


def test_parse_header_is_pure() -> None:
    entries, metadata = parse_header(mkbad.VALID_FILE, len(mkbad.VALID_FILE))
    assert metadata == {}
    assert entries == {"a": Entry("F32", (2,), 0, 8), "b": Entry("F32", (2,), 8, 16)}
    # Only the header bytes are needed.
    n = struct.unpack("<Q", mkbad.VALID_FILE[:8])[0]
    assert parse_header(mkbad.VALID_FILE[: 8 + n], len(mkbad.VALID_FILE)) == (entries, metadata)
    with pytest.raises(TypeError):
        parse_header(mkbad.VALID_FILE, -1)


@pytest.mark.parametrize(
    "header",
    [
        {},
        {"z": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}},
        {
            "z": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]},
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        },
        {
            "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
            "f4": {"dtype": "F4", "shape": [4], "data_offsets": [4, 6]},
            "pad": {"dtype": "U8", "shape": [2], "data_offsets": [6, 8]},
        },
        {"__metadata__": {}, "a": {"dtype": "BF16", "shape": [1, 4], "data_offsets": [0, 8]}},
    ],
    ids=["no-tensors", "zero-size-only", "zero-size-at-end", "scalar-and-f4", "empty-metadata"],
)
def test_valid_edge_headers(header: dict, tmp_path: Path) -> None:
    spans = [e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"]
    data = mkbad.st_bytes(header, bytes(max(spans, default=0)))
    entries, _ = parse_header(data, len(data))
    assert set(entries) == set(header) - {"__metadata__"}
    p = tmp_path / "x.safetensors"
    p.write_bytes(data)
    with SafetensorsFile(p) as f:
        for name, e in f.entries.items():
            if e.dtype != "F4":
                assert f.array(name).shape == e.shape


def test_header_length_limits() -> None:
    big = MAX_HEADER_SIZE + 8
    assert header_length(struct.pack("<Q", MAX_HEADER_SIZE), big) == MAX_HEADER_SIZE
    with pytest.raises(SafetensorsFormatError):
        header_length(struct.pack("<Q", MAX_HEADER_SIZE + 1), big + 1)


@pytest.mark.parametrize(
    "text,depth",
    [(b"", 0), (b"{}", 1), (b'{"a":{"shape":[1]}}', 3), (b'{"a":"[[[[[[[[[[[["}', 1), (b'{"a\\"[[[[[[[[[[[[":1}', 1)],
)
def test_json_depth(text: bytes, depth: int) -> None:
    assert json_depth(text, limit=0) == depth


def test_deep_header_is_refused_even_with_a_huge_recursion_limit(tmp_path: Path) -> None:
    """A raised recursion limit must not let json.loads recurse 10^5 deep (a C stack overflow)."""
    p = tmp_path / "deep.safetensors"
    p.write_bytes(mkbad.st_bytes('{"a":' + "[" * 100_000 + "]" * 100_000 + "}"))
    code = (
        "import sys; sys.setrecursionlimit(10**6)\n"
        "from llama32_native.loading.safetensors import SafetensorsFile\n"
        "from llama32_native.errors import SafetensorsFormatError\n"
        f"try:\n    SafetensorsFile({str(p)!r})\nexcept SafetensorsFormatError:\n    print('refused')\n"
    )
    package_root = str(Path(llama32_native.__file__).resolve().parents[1])  # wherever this run imports it from
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, *sys.path]))
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "refused", out


def test_writer_rejects_bad_arguments(tmp_path: Path) -> None:
    p = tmp_path / "x.safetensors"
    a = np.zeros(4, np.float32)
    with pytest.raises(ValueError):
        write_safetensors(p, {"a": a}, dtypes={"a": "BF16"})  # 16-bit dtype for 32-bit items
    with pytest.raises(ValueError):
        write_safetensors(p, {"a": a}, dtypes={"a": "NOPE"})
    with pytest.raises(ValueError):
        write_safetensors(p, {"a": a}, dtypes={"b": "F32"})
    with pytest.raises(ValueError):
        write_safetensors(p, {"__metadata__": a})
    with pytest.raises(TypeError):
        write_safetensors(p, {"a": a}, {"k": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        write_safetensors(p, {"a": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        write_safetensors(p, {"a": np.array(["x"], dtype=object)})
    assert not p.exists() and os.listdir(tmp_path) == []  # no partial file left behind


def test_writer_overrides_same_size_dtypes(tmp_path: Path) -> None:
    p = tmp_path / "x.safetensors"
    write_safetensors(p, {"q": np.zeros((2, 8), np.uint8)}, dtypes={"q": "F8_E4M3"})
    with SafetensorsFile(p) as f:
        assert f.entries["q"].dtype == "F8_E4M3"
        with pytest.raises(UnsupportedDTypeError):
            f.array("q")


# ----------------------------------------------------------------------------- malformed files


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_malformed_file(case: mkbad.FileCase, tmp_path: Path) -> None:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(case.data)
    with pytest.raises(ModelLoadError) as info:
        _read_all(p)
    assert type(info.value) is case.expect, info.value
    assert str(p) in str(info.value)
    if case.expect is SafetensorsFormatError:
        with pytest.raises(SafetensorsFormatError):
            parse_header(case.data, len(case.data))
    else:
        parse_header(case.data, len(case.data))


@pytest.mark.parametrize("case", [c for c in FILE_CASES if c.id.startswith(("F1", "F2"))], ids=lambda c: c.id)
def test_bad_length_allocates_nothing(case: mkbad.FileCase, tmp_path: Path) -> None:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(case.data)
    tracemalloc.start()
    try:
        with pytest.raises(SafetensorsFormatError):
            SafetensorsFile(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_corpus_script_writes_every_case(tmp_path: Path) -> None:
    assert mkbad.main(["mkbad", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.safetensors"))) == len(FILE_CASES) + 1
    assert len({c.id for c in FILE_CASES}) == len(FILE_CASES)


# ----------------------------------------------------------------------------- F14 and the OS


def _open_with_deadline(path: Path, seconds: float = 5.0) -> BaseException | None:
    """Open in a thread so a blocking open (a FIFO) fails the test instead of hanging it."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            SafetensorsFile(path).close()
            result.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            result.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert result, f"opening {path} blocked"
    return result[0]


def test_directory_is_refused(tmp_path: Path) -> None:
    assert type(_open_with_deadline(tmp_path)) is ModelLoadError


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    p = tmp_path / "fifo.safetensors"
    os.mkfifo(p)
    assert type(_open_with_deadline(p)) is ModelLoadError


def test_dev_zero_is_refused() -> None:
    assert type(_open_with_deadline(Path("/dev/zero"))) is ModelLoadError


def test_symlink_loop_is_a_load_error(tmp_path: Path) -> None:
    p = tmp_path / "loop.safetensors"
    p.symlink_to(p.name)
    err = _open_with_deadline(p)
    assert type(err) is ModelLoadError and "symbolic links" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        SafetensorsFile(tmp_path / "nope.safetensors")


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    p = tmp_path / "x.safetensors"
    p.write_bytes(mkbad.VALID_FILE)
    p.chmod(0)
    with pytest.raises(ModelLoadError, match="permission denied"):
        SafetensorsFile(p)


def test_symlinked_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(mkbad.VALID_FILE)
    (tmp_path / "x.safetensors").symlink_to("blob")
    with SafetensorsFile(tmp_path / "x.safetensors") as f:
        assert list(f.entries) == ["a", "b"]


# ----------------------------------------------------------------------------- lifetime


def test_close_with_live_views_keeps_them_valid(tmp_path: Path) -> None:
    p = tmp_path / "x.safetensors"
    want = np.arange(100, dtype=np.float32)
    write_safetensors(p, {"w": want})
    f = SafetensorsFile(p)
    view = f.array("w")
    f.close()
    assert f.closed
    np.testing.assert_array_equal(view, want)  # the mapping lives as long as the view
    with pytest.raises(ValueError):
        f.array("w")
    f.close()  # idempotent


def test_context_manager_closes(tmp_path: Path) -> None:
    p = tmp_path / "x.safetensors"
    write_safetensors(p, {"w": np.ones(3, np.float32)})
    with SafetensorsFile(p) as f:
        assert "w" in f and f.keys() == ["w"]
        with pytest.raises(MissingTensorError):
            f.array("missing")
    assert f.closed and "closed" in repr(f)


def test_file_replaced_by_rename_while_mapped(tmp_path: Path) -> None:
    p = tmp_path / "x.safetensors"
    write_safetensors(p, {"w": np.full(64, 7.0, np.float32)})
    with SafetensorsFile(p) as f:
        view = f.array("w")
        write_safetensors(p, {"w": np.full(64, -1.0, np.float32)})  # atomic replace
        np.testing.assert_array_equal(view, 7.0)
    with SafetensorsFile(p) as f:
        np.testing.assert_array_equal(f.array("w"), -1.0)


# ----------------------------------------------------------------------------- the reference package


def test_reference_reads_our_files(tmp_path: Path) -> None:
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {k: v for k, v in _sample().items() if k not in ("bf16",)}
    p = tmp_path / "ours.safetensors"
    write_safetensors(p, tensors, {"format": "np"})
    got = st_numpy.load_file(str(p))
    assert set(got) == set(tensors)
    for name, want in tensors.items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_we_read_reference_files(tmp_path: Path) -> None:
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {k: np.ascontiguousarray(v) for k, v in _sample().items() if k not in ("bf16", "big_endian")}
    p = tmp_path / "theirs.safetensors"
    st_numpy.save_file(tensors, str(p), metadata={"format": "np"})
    with SafetensorsFile(p) as f:
        assert f.metadata == {"format": "np"}
        for name, want in tensors.items():
            np.testing.assert_array_equal(f.array(name), want, err_msg=name)
    # Same tensors, same bytes: the two writers agree on the layout.
    ours = tmp_path / "ours.safetensors"
    write_safetensors(ours, tensors, {"format": "np"})
    with SafetensorsFile(p) as a, SafetensorsFile(ours) as b:
        assert {n: (e.dtype, e.shape) for n, e in a.entries.items()} == {
            n: (e.dtype, e.shape) for n, e in b.entries.items()
        }


def test_bf16_matches_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    t = torch.randn(5, 7).to(torch.bfloat16)
    p = tmp_path / "bf16.safetensors"
    st_torch.save_file({"w": t}, str(p))
    with SafetensorsFile(p) as f:
        bits = f.array("w")
        np.testing.assert_array_equal(bits, t.view(torch.int16).numpy().view(np.uint16))
        widened = (bits.astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_array_equal(widened, t.float().numpy())
    ours = tmp_path / "ours.safetensors"
    write_safetensors(ours, {"w": np.array(bits)}, dtypes={"w": "BF16"})
    back = st_torch.load_file(str(ours))["w"]
    assert back.dtype == torch.bfloat16 and torch.equal(back, t)


# Files the reference reader (safetensors 0.8) accepts and we refuse, on purpose: ours
# rejects duplicate keys and unknown fields and requires the header to start with '{' (docs/FORMATS.md,
# "Safetensors"); MAX_RANK bounds the shape; serde also reads a struct from a JSON list.
REFERENCE_MORE_LENIENT = {
    "F3-leading-space",
    "F4-duplicate-tensor",
    "F4-duplicate-metadata-key",
    "F4-metadata-null",
    "F4-unknown-field",
    "F4-entry-is-list",
    "F6-rank-17",
}


def test_reference_refuses_what_we_refuse(tmp_path: Path) -> None:
    """Every malformed file the reference package accepts is a documented, deliberate divergence."""
    safetensors = pytest.importorskip("safetensors")
    accepted_by_reference = set()
    for case in FILE_CASES:
        p = tmp_path / f"{case.id}.safetensors"
        p.write_bytes(case.data)
        try:
            with safetensors.safe_open(str(p), framework="np") as f:
                for name in f:
                    f.get_tensor(name)
        except Exception:  # noqa: BLE001, S112 - any refusal counts
            continue
        accepted_by_reference.add(case.id)
    assert accepted_by_reference <= REFERENCE_MORE_LENIENT, accepted_by_reference - REFERENCE_MORE_LENIENT
