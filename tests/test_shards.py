"""Streamed shards: byte for byte what np.save writes, whole images per shard, whatever the batches."""

import io

import numpy as np
import pytest

from hue import shards


def saved_bytes(array: np.ndarray) -> bytes:
    """The bytes np.save writes for `array`."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("row_shape", [(7,), (3, 4)])
def test_npy_stream_writes_what_np_save_writes(tmp_path, dtype, row_shape):
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((n, *row_shape)) for n in (5, 0, 1, 12)]  # float64: cast on write
    stream = shards.NpyStream(tmp_path / "a.npy", np.dtype(dtype), row_shape)
    for block in blocks:
        stream.write(block)
    stream.close()
    want = np.concatenate(blocks).astype(dtype)
    assert (tmp_path / "a.npy").read_bytes() == saved_bytes(want)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy", mmap_mode="r"), want)


def test_npy_stream_of_no_rows_and_of_a_wrong_block(tmp_path):
    stream = shards.NpyStream(tmp_path / "e.npy", np.dtype("float16"), (4,))
    with pytest.raises(ValueError, match="rows of shape"):
        stream.write(np.zeros((2, 5)))
    stream.close()
    assert (tmp_path / "e.npy").read_bytes() == saved_bytes(np.zeros((0, 4), np.float16))


def batches(sizes, p=4, c=3, seed=1):
    """Descriptor batches (pixel (B, P, C) float16, gap/gmp (B, C), energy (B, 2, 2) float32) of `sizes` images."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((b, p, c)).astype(np.float16), rng.standard_normal((b, c)).astype(np.float16),
             rng.standard_normal((b, c)).astype(np.float16), rng.standard_normal((b, 2, 2)).astype(np.float32))
            for b in sizes]


@pytest.mark.parametrize("sizes", [[5, 5, 5, 2], [12, 1], [3], [7, 7]])
def test_shard_writer_cuts_whole_images_wherever_batches_end(tmp_path, sizes):
    parts = batches(sizes)
    writer = shards.ShardWriter(tmp_path, "float16", images_per_shard=7)
    for part in parts:
        writer.add(*part)
    n_images = sum(sizes)
    assert writer.close() == -(-n_images // 7)
    whole = [np.concatenate(x) for x in zip(*parts)]  # pixel, gap, gmp, energy over all images
    for shard, lo in enumerate(range(0, n_images, 7)):
        for key, values in zip(("pixel", "gap", "gmp", "energy"), whole):
            want = values[lo:lo + 7]
            want = want.reshape(-1, want.shape[-1]) if key == "pixel" else want  # (n * P, C)
            assert (tmp_path / f"{key}-{shard:05d}.npy").read_bytes() == saved_bytes(want), (key, shard)
    assert not (tmp_path / f"pixel-{-(-n_images // 7):05d}.npy").exists()


def test_shard_writer_with_nothing_added_writes_nothing(tmp_path):
    assert shards.ShardWriter(tmp_path, "float16", 4).close() == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("per_shard", [1, 3])
def test_shard_writer_casts_and_takes_empty_batches_and_views(tmp_path, per_shard):
    rng = np.random.default_rng(2)
    wide = rng.standard_normal((5, 4, 6))  # float64; every other channel: a non-contiguous view
    parts = [(wide[i:j, :, ::2], wide[i:j, 0, :3], wide[i:j, 1, :3], wide[i:j, :, :2].reshape(-1, 2, 2, 2)[:, 0])
             for i, j in ((0, 0), (0, 3), (3, 3), (3, 5))]  # batches of 0, 3, 0 and 2 images
    writer = shards.ShardWriter(tmp_path, "float16", images_per_shard=per_shard)
    for part in parts:
        writer.add(*part)
    assert writer.close() == -(-5 // per_shard)
    pixel = np.concatenate([p[0] for p in parts]).astype(np.float16)  # (5, 4, 3)
    energy = np.concatenate([p[3] for p in parts]).astype(np.float32)  # (5, 2, 2)
    for shard, lo in enumerate(range(0, 5, per_shard)):
        want = pixel[lo:lo + per_shard]
        assert (tmp_path / f"pixel-{shard:05d}.npy").read_bytes() == saved_bytes(want.reshape(-1, 3))
        assert (tmp_path / f"energy-{shard:05d}.npy").read_bytes() == saved_bytes(energy[lo:lo + per_shard])


def test_shard_writer_refuses_a_batch_unlike_the_first_before_writing(tmp_path):
    (pixel, gap, gmp, energy), = batches([3])
    writer = shards.ShardWriter(tmp_path, "float16", images_per_shard=10)
    writer.add(pixel, gap, gmp, energy)
    other = batches([2], p=5)[0]  # five positions per image instead of four
    with pytest.raises(ValueError, match="first batch's shapes"):
        writer.add(*other)
    with pytest.raises(ValueError, match="first batch's shapes"):
        writer.add(pixel, gap[:2], gmp, energy)  # a descriptor of fewer images
    writer.close()
    assert np.load(tmp_path / "pixel-00000.npy").shape == (12, 3)  # only the first batch was written
