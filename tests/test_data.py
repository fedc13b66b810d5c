"""tfinv.data: the fixed digits split, dequantisation, the .npz path and its errors, PNG grids."""

import numpy as np
import pytest
import tensorflow as tf

from tfinv import data


def epoch(dataset):
    return np.concatenate(list(dataset.as_numpy_iterator()))


# ---------------------------------------------------------------- split
def test_digits_split_sizes_disjoint_and_complete():
    train = data.split_indices(1797, "train")
    test = data.split_indices(1797, "test")
    assert (len(train), len(test)) == (1437, 360)
    assert not set(train) & set(test)
    assert sorted(set(train) | set(test)) == list(range(1797))
    np.testing.assert_array_equal(data.split_indices(1797, "all"), np.arange(1797))


def test_digits_arrays_match_the_split_and_are_deterministic():
    images, labels = data.digits_arrays("test")
    again, _ = data.digits_arrays("test")
    np.testing.assert_array_equal(images, again)
    with np.load(data.DIGITS_PATH) as raw:
        index = data.split_indices(1797, "test")
        np.testing.assert_array_equal(images[..., 0], raw["images"][index])
        np.testing.assert_array_equal(labels, raw["labels"][index])
    assert images.shape == (360, 8, 8, 1) and images.dtype == np.uint8
    assert images.max() == data.DIGITS_NUM_LEVELS - 1 == 16


def test_split_ignores_the_loader_seed():
    a = epoch(data.digits(split="test", batch_size=512, seed=1, dequantize=False, shuffle=False))
    b = epoch(data.digits(split="test", batch_size=512, seed=2, dequantize=False, shuffle=False))
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- dequantisation
def test_dequantised_values_are_counts_plus_unit_noise():
    counts, _ = data.digits_arrays("test")
    x = epoch(data.digits(split="test", shuffle=False, batch_size=100))
    assert x.shape == (360, 8, 8, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(np.floor(x), counts.astype(np.float32))
    assert x.min() >= 0.0 and x.max() < data.DIGITS_NUM_LEVELS
    noise = x - counts
    assert 0.45 < noise.mean() < 0.55 and noise.std() > 0.25  # U[0, 1): mean 1/2, std 0.289


def test_train_noise_is_fresh_every_epoch_and_seeded():
    ds = data.digits(shuffle=False, batch_size=256)
    first, second = epoch(ds), epoch(ds)
    np.testing.assert_array_equal(np.floor(first), np.floor(second))
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(first, epoch(data.digits(shuffle=False, batch_size=256)))
    assert not np.allclose(first, epoch(data.digits(shuffle=False, batch_size=256, seed=1)))


def test_train_shuffle_reorders_every_epoch_deterministically():
    ds = data.digits(dequantize=False, batch_size=1437)
    first, second = epoch(ds), epoch(ds)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, epoch(data.digits(dequantize=False, batch_size=1437)))
    ordered, _ = data.digits_arrays("train")
    np.testing.assert_array_equal(np.sort(first.reshape(1437, -1), 0), np.sort(ordered.reshape(1437, -1), 0))


def test_test_noise_is_fixed_per_image_whatever_the_batching():
    ds = data.digits(split="test", shuffle=False, batch_size=64)
    first = epoch(ds)
    np.testing.assert_array_equal(first, epoch(ds))
    np.testing.assert_array_equal(first, epoch(data.digits(split="test", shuffle=False, batch_size=7)))
    fresh = data.digits(split="test", shuffle=False, fixed_noise=False)
    assert not np.allclose(epoch(fresh), epoch(fresh))


def test_dequantize_false_and_labels():
    counts, labels = data.digits_arrays("test")
    x, y = zip(*data.digits(split="test", shuffle=False, dequantize=False, with_labels=True).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate(x), counts.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate(y), labels)
    assert np.concatenate(y).dtype == np.int64


def test_batches_and_drop_remainder():
    shapes = [b.shape for b in data.digits(split="test", batch_size=100)]
    assert shapes == [(100, 8, 8, 1)] * 3 + [(60, 8, 8, 1)]
    assert len(list(data.digits(split="test", batch_size=100, drop_remainder=True))) == 3
    assert data.digits().element_spec == tf.TensorSpec((None, 8, 8, 1), tf.float32)


# ---------------------------------------------------------------- .npz files
def test_npz_images_rank3_gets_a_channel_axis(tmp_path):
    path = tmp_path / "faces.npz"
    counts = np.random.default_rng(0).integers(0, 256, (20, 4, 6), dtype=np.uint8)
    np.savez(path, images=counts)
    x = epoch(data.npz_images(path, split="all", shuffle=False, batch_size=8))
    assert x.shape == (20, 4, 6, 1)
    np.testing.assert_array_equal(np.floor(x)[..., 0], counts)
    assert len(epoch(data.npz_images(path, split="test"))) == 4  # ceil(0.2 * 20)


def test_npz_images_rgb_float_counts_and_custom_key(tmp_path):
    path = tmp_path / "rgb.npz"
    counts = np.random.default_rng(1).integers(0, 4, (10, 2, 2, 3)).astype(np.float64)
    np.savez(path, pixels=counts, y=np.arange(10))
    images, labels = data.load_npz_arrays(path, "all", key="pixels", num_levels=4, label_key="y")
    assert images.shape == (10, 2, 2, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.arange(10))
    x, y = next(iter(data.npz_images(path, key="pixels", num_levels=4, label_key="y", with_labels=True)))
    assert x.shape[1:] == (2, 2, 3) and float(tf.reduce_max(x)) < 4.0


def test_load_arrays_by_name_or_path(tmp_path):
    images, labels = data.load_arrays("digits", "train")
    assert images.shape == (1437, 8, 8, 1) and labels.shape == (1437,)
    path = tmp_path / "unlabelled.npz"
    np.savez(path, images=np.zeros((5, 2, 2), np.uint8))
    images, labels = data.load_arrays(str(path), "all")
    assert images.shape == (5, 2, 2, 1) and labels is None
    assert data.resolve_num_levels("digits") == 17 and data.resolve_num_levels(path) == 256


BAD_ARRAYS = {
    "rank 2": (np.zeros((5, 8), np.uint8), r"shape \(N, H, W\) or \(N, H, W, C\), got shape \(5, 8\)"),
    "rank 5": (np.zeros((2, 2, 2, 1, 1), np.uint8), r"got shape \(2, 2, 2, 1, 1\) \(rank 5\)"),
    "empty": (np.zeros((0, 4, 4), np.uint8), "at least one non-empty image"),
    "NaN": (np.full((2, 2, 2), np.nan), r"1?NaN/Inf value"),
    "Inf": (np.array([[[0.0, np.inf]]]), "1 NaN/Inf value"),
    "too large": (np.full((2, 2, 2), 17, np.int64), r"in \[0, 16\] \(num_levels=17\), got values in \[17, 17\]"),
    "negative": (np.full((2, 2, 2), -1, np.int64), r"got values in \[-1, -1\]"),
    "non-integer": (np.full((2, 2, 2), 0.5), r"non-integer values \(e\.g\. 0\.5\)"),
    "strings": (np.full((2, 2, 2), "a"), "dtype <U1"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_bad_npz_arrays_name_the_file_key_and_expectation(tmp_path, case):
    array, message = BAD_ARRAYS[case]
    path = tmp_path / "bad.npz"
    np.savez(path, images=array)
    with pytest.raises(ValueError, match=message) as err:
        data.npz_images(path, num_levels=17)
    assert str(path) in str(err.value) and "'images'" in str(err.value)
    if case not in ("rank 2", "rank 5", "empty"):
        assert "integer pixel counts in [0, 16]" in str(err.value)


def test_bad_files_keys_and_labels(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        data.npz_images(tmp_path / "missing.npz")
    text = tmp_path / "text.npz"
    text.write_text("not numpy")
    with pytest.raises(ValueError, match=r"text\.npz: expected an \.npz archive"):
        data.npz_images(text)
    path = tmp_path / "d.npz"
    np.savez(path, pixels=np.zeros((4, 2, 2), np.uint8), labels=np.zeros(3))
    with pytest.raises(ValueError, match=r"d\.npz: no array 'images'; the file holds \['labels', 'pixels'\]"):
        data.npz_images(path)
    with pytest.raises(ValueError, match=r"d\.npz, key 'labels': expected labels of shape \(4,\), got \(3,\)"):
        data.npz_images(path, key="pixels")
    unlabelled = tmp_path / "u.npz"
    np.savez(unlabelled, images=np.zeros((4, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"u\.npz: with_labels=True needs a label array 'labels'"):
        data.npz_images(unlabelled, with_labels=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        data.digits(split="valid")
    with pytest.raises(ValueError, match="num_levels must be an integer >= 2"):
        data.validate_images(np.zeros((1, 2, 2)), num_levels=1)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.digits(batch_size=0)
    with pytest.raises(ValueError, match="dataset 'digits' has 17 pixel levels, got num_levels=256"):
        data.load_arrays("digits", num_levels=256)
    with pytest.raises(ValueError, match="unknown dataset 'mnist': expected one of \\['digits'\\]"):
        data.load_arrays("mnist")
    with pytest.raises(ValueError, match="train split would be empty"):
        data.split_indices(1, "train")


# ---------------------------------------------------------------- PNG grids
def test_image_grid_layout_scaling_and_clipping():
    images = np.zeros((5, 2, 3, 1))
    images[0] = 17.0
    images[1] = 40.0  # overshooting samples are clipped to white
    images[2] = -3.0
    grid = data.image_grid(images, num_levels=17, scale=2, padding=1, background=128)
    assert grid.shape == ((2 * 3 + 1) * 2, (3 * 4 + 1) * 2, 1) and grid.dtype == np.uint8
    assert (grid[2:6, 2:8] == 255).all() and (grid[2:6, 10:16] == 255).all()
    assert (grid[2:6, 18:24] == 0).all() and (grid[:2] == 128).all()
    assert data.image_grid(np.zeros((4, 2, 2, 3)), 256).shape == (28, 28, 3)  # 2x2 tiles, scale 4
    two_channels = np.stack([np.zeros((1, 2, 2)), np.full((1, 2, 2), 255.0)], axis=-1)
    strip = data.image_grid(two_channels, 255, scale=1, padding=0)
    np.testing.assert_array_equal(strip[..., 0], [[0, 0, 255, 255], [0, 0, 255, 255]])
    with pytest.raises(ValueError, match=r"non-empty \(N, H, W\) or \(N, H, W, C\) images, got \(4, 2\)"):
        data.image_grid(np.zeros((4, 2)), 256)


def test_save_image_grid_writes_a_png(tmp_path):
    path = tmp_path / "sub" / "grid.png"
    grid = data.save_image_grid(np.full((64, 8, 8, 1), 8.5), path, num_levels=17)
    decoded = tf.io.decode_png(tf.io.read_file(str(path))).numpy()
    assert decoded.shape == ((8 * 9 + 1) * 4, (8 * 9 + 1) * 4, 1)
    np.testing.assert_array_equal(decoded, grid)


def test_pipelines_run_without_tf_datas_autotuner():
    """Both of tfinv's pipelines (and `dataset_options` for one's own) turn tf.data's model-based
    autotuner off (it stalled the end of fit calls on a 2-core CPU; module doc), and still
    yield the same examples as without the options."""
    images, _ = data.digits_arrays("test", with_labels=False)
    datasets = [data.dequantized_dataset(images[:40], batch_size=16, seed=3, shuffle=False, fixed_noise=True),
                data.dequantized_epochs(images[:40], epochs=1, batch_size=16, seed=3)]
    assert data.dataset_options().autotune.enabled is False
    for ds in datasets:
        assert ds.options().autotune.enabled is False
        default = ds.with_options(tf.data.Options())  # options merge: this keeps autotune off
        assert default.options().autotune.enabled is False
    on = tf.data.Options()
    on.autotune.enabled = True
    np.testing.assert_array_equal(epoch(datasets[0]), epoch(datasets[0].with_options(on)))
