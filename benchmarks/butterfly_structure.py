"""Benchmark: ButterflyFlow's full-dimension butterfly against the channel-only one, on digits and on
digits scrambled by a fixed butterfly permutation (the structure the paper's full form targets).

Data:

* ``digits``: the embedded 8x8 digits (17 levels);
* ``butterfly-permuted digits`` (generated, written to a temporary ``.npz``): every image is
  squeezed to ``(4, 4, 4)`` (the layout of Glow's first level), its 64 entries (row-major) are
  permuted by ``S_1 S_2 ... S_6`` -- six butterfly factors whose 2x2 blocks are each a swap or the
  identity, drawn once with ``numpy.random.default_rng(--perm-seed)`` -- and un-squeezed. The
  pixels' spatial neighbourhoods are destroyed, yet a full butterfly with free blocks (exact
  swaps) can undo the permutation exactly: ``S_6 ... S_1`` is one butterfly; a channel-only
  butterfly or a 1x1 convolution cannot. Same fixed train/test split as digits.

Models: ``tfinv train`` of the default digits Glow (2 levels, 4 steps, 64 hidden channels) with
``--linear`` in ``--linears`` (default: ``inv_conv1x1``, ``butterfly`` = 1x1 + channel butterfly,
``full_butterfly`` = 1x1 + `FullButterflyLayer`), budget ``--epochs`` (3), batch 64, Adam 1e-3,
seed ``--seeds`` (0). Reported: test bits/dim per (dataset, linear).

Run: ``python benchmarks/butterfly_structure.py [--epochs 3] [--out results.json]``; stdout is
one JSON object, progress on stderr.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
from _common import log, stdout_to_stderr, write_file_whole, write_json  # noqa: E402


def butterfly_permutation(size: int, rng: np.random.Generator) -> np.ndarray:
    """Index array ``p`` with ``v[p] = S_1 S_2 ... S_L v``: random swap-or-keep butterfly factors."""
    levels = int(np.log2(size))
    swaps = rng.integers(0, 2, (levels, size // 2)).astype(bool)
    index = np.arange(size)
    for level in reversed(range(levels)):  # S_L acts first
        stride = 1 << level
        for j in np.nonzero(swaps[level])[0]:
            first = (j // stride) * 2 * stride + j % stride
            index[[first, first + stride]] = index[[first + stride, first]]
    return index


def permuted_digits(path: str, seed: int) -> None:
    from tfinv.data.digits import DIGITS_PATH

    with np.load(DIGITS_PATH) as f:
        images, labels = f["images"], f["labels"]
    if images.ndim == 3:
        images = images[..., None]
    n = images.shape[0]
    squeezed = space_to_depth_np(images, 2)
    flat = squeezed.reshape(n, -1)
    perm = butterfly_permutation(flat.shape[1], np.random.default_rng(seed))
    scrambled = depth_to_space_np(flat[:, perm].reshape(squeezed.shape), 2)
    assert sorted(scrambled[0].ravel().tolist()) == sorted(images[0].ravel().tolist())
    buffer = io.BytesIO()
    np.savez(buffer, images=scrambled.astype(images.dtype), labels=labels)
    write_file_whole(path, buffer.getvalue())


def space_to_depth_np(x: np.ndarray, f: int) -> np.ndarray:
    import tensorflow as tf

    from tfinv.layers.squeeze import Squeeze

    layer = Squeeze()
    layer.build((None,) + x.shape[1:])
    return layer.forward_and_log_det(tf.constant(x.astype(np.float32)))[0].numpy().round().astype(x.dtype)


def depth_to_space_np(x: np.ndarray, f: int) -> np.ndarray:
    import tensorflow as tf

    from tfinv.layers.squeeze import Squeeze

    layer = Squeeze()
    n, h, w, c = x.shape
    layer.build((None, h * 2, w * 2, c // 4))
    return layer.inverse_and_log_det(tf.constant(x.astype(np.float32)))[0].numpy().round().astype(x.dtype)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--linears", nargs="+", default=["inv_conv1x1", "butterfly", "full_butterfly"])
    parser.add_argument("--datasets", nargs="+", default=["permuted", "digits"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--perm-seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    from faithful_digits import train  # same loop and budget as the other Glow variants

    rows = []
    with stdout_to_stderr() as real_stdout, tempfile.TemporaryDirectory() as tmp:
        permuted = os.path.join(tmp, "butterfly_permuted_digits.npz")
        permuted_digits(permuted, args.perm_seed)
        for dataset in args.datasets:
            source = permuted if dataset == "permuted" else "digits"
            for linear in args.linears:
                for seed in args.seeds:
                    row = train(linear, "affine", seed, args.epochs, dataset=source,
                                extra=["--num-levels", "17"] if dataset == "permuted" else [])
                    row["dataset"] = dataset
                    log(f"{dataset} {linear} seed {seed}: test bits/dim {row['test_bits_per_dim']}")
                    rows.append(row)
        report = {"benchmark": "butterfly_structure",
                  "budget": {"epochs": args.epochs, "batch_size": 64, "lr": 1e-3, "seeds": args.seeds,
                             "model": "Glow levels=2 steps_per_level=4 hidden=64"},
                  "perm_seed": args.perm_seed, "platform": platform.platform(), "results": rows}
        write_json(report, args.out, real_stdout)


if __name__ == "__main__":
    main()
