"""Report: tf.data's autotuner against ``model.fit`` throughput of a small flow on CPU.

Why `tfinv.data.dataset_options` turns tf.data's model-based autotuner off. The same digits Glow
(speed.py's: L=2, K=4, width 64, batch 64, Adam, the CPU default of XLA with 8 steps per call)
runs ``fit`` of ``--steps`` steps on the same shuffled, prefetched pipeline, with the autotuner on
(tf.data's default) and off, alternately, ``--repeats`` times each. Reported per variant: every
run's images/s, the median, and the number of runs that stalled (slower than ``--stall-factor``
times the variant-independent best run). On the 2-core machine of these figures, half the calls
with the autotuner on ended with a ~0.5 s stall after the last train step (the pipeline's
teardown); none did with it off. Also: 5 epochs of ``fit`` with validation on tfinv's own
finite pipelines (a new iterator every epoch), with and without the options.

Run: ``python benchmarks/tf_data_autotune.py [--steps 160] [--repeats 10] [--out FILE]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import tensorflow as tf  # noqa: E402

from _common import log, stdout_to_stderr, write_json  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=160, help="train steps per fit call")
    parser.add_argument("--repeats", type=int, default=10, help="fit calls per variant")
    parser.add_argument("--stall-factor", type=float, default=0.75,
                        help="a run below this fraction of the best run counts as stalled")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "figures" / "tf_data_autotune.json"))
    args = parser.parse_args(argv)
    with stdout_to_stderr() as real_stdout:
        import keras

        import speed
        import tfinv
        from tfinv import data

        train, _ = speed.make_data(8)
        keras.utils.set_random_seed(0)
        model = tfinv.models.Glow(train.shape[1:], levels=speed.LEVELS, steps_per_level=speed.STEPS_PER_LEVEL,
                                  hidden_channels=speed.WIDTH, num_levels=speed.NUM_LEVELS, seed=0)
        model.initialize(tf.constant(train[:speed.BATCH]))
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        pipeline = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train), seed=0).repeat()
        pipeline = pipeline.batch(speed.BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        variants = {"autotune_on": pipeline, "autotune_off": pipeline.with_options(data.dataset_options())}
        for ds in variants.values():  # warm-up: tracing, XLA compilation
            model.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0)
        rates = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, ds in variants.items():
                started = time.perf_counter()
                model.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0)
                rates[name].append(args.steps * speed.BATCH / (time.perf_counter() - started))
        best = max(max(r) for r in rates.values())
        report = {"benchmark": "tf_data_autotune", "steps": args.steps, "repeats": args.repeats,
                  "jit_compile": bool(model.jit_compile), "steps_per_execution": int(model.steps_per_execution),
                  "infinite_pipeline": {}}
        for name, runs in rates.items():
            report["infinite_pipeline"][name] = {
                "images_per_second_runs": [round(r) for r in runs],
                "median_images_per_second": round(statistics.median(runs)),
                "stalled_runs": sum(r < args.stall_factor * best for r in runs),
            }
            log(f"{name}: {report['infinite_pipeline'][name]}")

        images, _ = data.digits_arrays("train", with_labels=False)
        test, _ = data.digits_arrays("test", with_labels=False)
        autotune_on = tf.data.Options()
        autotune_on.autotune.enabled = True  # overrides tfinv's options (set later wins)
        finite = {}
        for name, options in (("autotune_on", autotune_on), ("autotune_off", data.dataset_options())):
            finite[name] = (data.dequantized_dataset(images, batch_size=64, seed=0).with_options(options),
                            data.dequantized_dataset(test, batch_size=64, seed=0, shuffle=False,
                                                     fixed_noise=True).with_options(options))
        seconds = {name: [] for name in finite}
        for train_ds, val_ds in finite.values():  # warm-up: the evaluation step's trace
            model.fit(train_ds, epochs=1, validation_data=val_ds, verbose=0)
        for _ in range(3):
            for name, (train_ds, val_ds) in finite.items():
                started = time.perf_counter()
                model.fit(train_ds, epochs=5, validation_data=val_ds, verbose=0)
                seconds[name].append(time.perf_counter() - started)
        report["finite_pipelines_5_epochs_with_validation_seconds"] = {
            name: [round(s, 3) for s in runs] for name, runs in seconds.items()}
        report["environment"] = {"tensorflow": tf.__version__, "cpu_count": os.cpu_count(),
                                 "load_average": os.getloadavg()}
        write_json(report, args.out, stream=real_stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
