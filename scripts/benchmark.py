"""Benchmarks: `python scripts/benchmark.py input|train|infer|compare [flags]` (docs/performance.md).

    train   training steps of the project's engine (training.Trainer: forward, backward, weight
            decay, SGD with momentum) on a synthetic batch already on the device: no input cost.
    infer   the Keras model (a compiled predict step) and the exported SavedModel (its
            predict_images signature): batch-1 latency and batch --batch_size throughput.
    input   the training input pipeline (read, fused decode-and-crop, flip, lighting, mean, batch)
            on a folder of ImageNet-sized JPEGs it writes itself, against the plain full-image
            decode of the same files, same threads, same run (docs/input.md).
    compare the training step with this machine's defaults beside float32 and mixed_bfloat16,
            each with XLA on and off, in one process: images/s, ceiling fraction and the ratio to
            the default of each (--precision and --xla are not used).

train and infer report images/s, ms/step, achieved GFLOP/s (the model's own FLOP count: 2 per
multiply-add of the convolutions and dense layers, x3 for a training image) and the ceiling
fraction: achieved GFLOP/s over a --matmul_size^3 matmul in the same dtype on the same device,
timed in every run. Each mode warms up first, then prints medians over --runs (with the per-run
range); --json prints one JSON object per run (keys include images_per_sec and, for train and
infer, ceiling_fraction; infer prints one per engine). --per_layer times each layer instead
(train: forward and backward; infer: forward only).

Examples:
    python scripts/benchmark.py train --runs=5
    python scripts/benchmark.py infer --runs=5 --json
    python scripts/benchmark.py train --per_layer --runs=3
    python scripts/benchmark.py input --threads=1 --runs=5
    python scripts/benchmark.py input --steps --plot=input_steps.png   # where the time goes
    python scripts/benchmark.py input --image_dir=DIR --dataset=tfrecord:PREPARED   # prepared shards vs DIR's files
    python scripts/benchmark.py train --noxla --runs=3   # XLA off (the default depends on the machine)
    python scripts/benchmark.py compare --runs=3         # the default against the other settings
    TF_ENABLE_ONEDNN_OPTS=0 python scripts/benchmark.py train --inter_op_threads=1
"""

import json
import sys

from absl import flags

import _cli as cli
import _flags

MODES = ("input", "train", "infer", "compare")
# Mode defaults of --batch_size and --num_batches: train/infer at batch 64 (docs/performance.md); a training
# step of batch 64 at 227 takes seconds on a 2-core CPU, so few steps per run.
BATCH_SIZE = {"input": 32, "train": 64, "infer": 64, "compare": 64}
NUM_BATCHES = {"input": 20, "train": 3, "infer": 5, "compare": 3}

FLAGS = flags.FLAGS
MACHINE = None  # distribute.machine_description(), set in main
flags.DEFINE_enum("variant", "paper", ["paper", "one_column"], "train/infer: the model variant.")
flags.DEFINE_integer("image_size", 227, "Model input size S.")
flags.DEFINE_integer("batch_size", None, "Images per (global) batch. Default: 64 for train and infer, 32 for input.")
flags.DEFINE_enum("precision", None, ["float32", "mixed_float16", "mixed_bfloat16"],
                  "train/infer: dtype policy (default as scripts/train.py: float32 on CPU, mixed on GPU/TPU).")
flags.DEFINE_bool("xla", None, "train/infer: XLA-compile the forward (and backward) pass (default: train on, as "
                  "scripts/train.py; infer on for GPU/TPU, off on CPU).")
_flags.define_strategy_flags()  # train/infer
flags.DEFINE_integer("steps_per_loop", 1, "train: steps per call into the compiled loop.")
flags.DEFINE_integer("runs", 5, "Timed runs; medians are reported.")
flags.DEFINE_integer("num_batches", None, "Batches timed per run. Default: 3 for train, 5 for infer, 20 for input.")
flags.DEFINE_integer("latency_calls", 10, "infer: batch-1 calls per run (their median is the latency).")
flags.DEFINE_integer("matmul_size", 4096, "train/infer: side of the square matmul that measures the ceiling.")
flags.DEFINE_bool("per_layer", False, "train/infer: time each layer on its own instead (median of --runs calls).")
flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow intra-op threads (0: TensorFlow's default, the core count).")
flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads (0: TensorFlow's default).")
flags.DEFINE_integer("threads", 1, "input: tf.data threads (1: the per-core rate).")
flags.DEFINE_integer("num_images", 200, "input: JPEGs written.")
flags.DEFINE_integer("width", 500, "input: width of the written JPEGs.")
flags.DEFINE_integer("height", 375, "input: height of the written JPEGs.")
flags.DEFINE_string("image_dir", None, "input: use this folder (DIR/train/<class>/*.jpg) instead of writing JPEGs.")
flags.DEFINE_string("dataset", None, "input: the training pipeline reads this dataset string instead of the folder, e.g. "
                    "tfrecord:DIR, the same photos prepared by scripts/prepare_data.py (the plain decode still reads "
                    "--image_dir's files).")
flags.DEFINE_enum("augmentation", "paper", ["paper", "inception", "none"], "input: training augmentation.")
flags.DEFINE_enum("image_dtype", "uint8", ["uint8", "float32"],
                  "input: uint8: the batches the Trainer gets (crops; cast, mean and lighting run on the device); "
                  "float32: the model's input made on the host.")
flags.DEFINE_bool("steps", False, "input: also time the per-image steps on their own (fused decode-and-crop; "
                  "+ flip and resize), each against the plain decode, to show where the time goes.")
flags.DEFINE_string("plot", None, "input --steps: also draw the steps as a PNG bar chart at this path.")
flags.DEFINE_bool("json", False, "Print one JSON object per run instead of a summary.")


def check_flags(mode):
    """The mode and flag checks, before TensorFlow is imported, so a wrong one fails at once."""
    if mode not in MODES:
        cli.fail(f"unknown mode {mode!r}; expected input, train, infer or compare")
    for name in ("batch_size", "num_batches"):
        if FLAGS[name].value is not None and FLAGS[name].value < 1:
            cli.fail(f"--{name}={FLAGS[name].value} must be at least 1.")
    for name in ("runs", "latency_calls", "matmul_size", "steps_per_loop"):
        if FLAGS[name].value < 1:
            cli.fail(f"--{name}={FLAGS[name].value} must be at least 1.")
    if FLAGS.per_layer and mode in ("input", "compare"):
        cli.fail("--per_layer is for train and infer.")
    if mode == "compare" and (FLAGS.precision or FLAGS.xla is not None):
        cli.fail("compare times every precision and XLA setting itself: leave out --precision and --xla.")
    if (FLAGS.steps or FLAGS.plot) and mode != "input":
        cli.fail("--steps and --plot are for the input mode.")
    if FLAGS.plot and not FLAGS.steps:
        cli.fail("--plot draws the step breakdown: add --steps.")
    if FLAGS.dataset and (mode != "input" or FLAGS.steps):
        cli.fail("--dataset is for the input mode, without --steps.")
    if FLAGS.steps and FLAGS.augmentation == "none":
        cli.fail("--steps needs a random crop: use --augmentation=paper or inception.")


def main(argv):
    if len(argv) != 2:
        cli.fail("usage: benchmark.py input|train|infer|compare [flags]")
    mode = argv[1]
    check_flags(mode)
    batch_size = FLAGS.batch_size or BATCH_SIZE[mode]
    num_batches = FLAGS.num_batches or NUM_BATCHES[mode]

    from absl import logging

    logging.set_verbosity(logging.WARNING)  # keep TensorFlow's INFO lines (export, retracing) off the table
    import tensorflow as tf

    if FLAGS.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    if FLAGS.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    from keras_alexnet import benchmarks, distribute

    global MACHINE
    MACHINE = distribute.machine_description()
    if not FLAGS.json:
        print(f"machine: {MACHINE}")
    if FLAGS.per_layer:
        return print_layer_profile(benchmarks.layer_profile(
            variant=FLAGS.variant, image_size=FLAGS.image_size, batch_size=batch_size, xla=bool(FLAGS.xla),
            repeats=FLAGS.runs, backward=mode == "train"), mode, batch_size)
    model_flags = dict(variant=FLAGS.variant, image_size=FLAGS.image_size, batch_size=batch_size,
                       precision=FLAGS.precision, xla=FLAGS.xla, strategy=FLAGS.strategy, tpu=FLAGS.tpu, num_gpus=FLAGS.num_gpus,
                       num_batches=num_batches, runs=FLAGS.runs, matmul_size=FLAGS.matmul_size)
    if mode == "train":
        result = benchmarks.train_benchmark(steps_per_loop=FLAGS.steps_per_loop, **model_flags)
        return print_model_result(result, [result])
    if mode == "compare":
        logging.set_verbosity(logging.ERROR)  # each setting builds its own step: TensorFlow's retracing notes are expected
        del model_flags["precision"], model_flags["xla"]
        return print_comparison(benchmarks.compare_train_settings(steps_per_loop=FLAGS.steps_per_loop, **model_flags))
    if mode == "infer":
        result = benchmarks.infer_benchmark(latency_calls=FLAGS.latency_calls, **model_flags)
        return print_model_result(result, [result["keras"], result["saved_model"]])
    return run_input(benchmarks, batch_size, num_batches)


def run_input(benchmarks, batch_size, num_batches):
    """The input mode: time the pipeline, print it, and with --plot draw its steps."""
    result = benchmarks.input_benchmark(
        image_dir=FLAGS.image_dir, dataset=FLAGS.dataset, num_images=FLAGS.num_images, width=FLAGS.width, height=FLAGS.height,
        image_size=FLAGS.image_size, batch_size=batch_size, num_batches=num_batches,
        runs=FLAGS.runs, threads=FLAGS.threads, augmentation=FLAGS.augmentation, image_dtype=FLAGS.image_dtype,
        steps=FLAGS.steps,
    )
    print_input_result(result)
    if FLAGS.plot:
        from keras_alexnet import figures

        title = (f"input pipeline step by step: {result['augmentation']} augmentation, S={result['image_size']}, "
                 f"{result['threads']} thread(s)\n{result['source_images']}; medians of {len(result['runs'])} runs")
        path = figures.plot_input_steps(result["steps"], FLAGS.plot, title)
        print(f"wrote {path}", file=sys.stderr if FLAGS.json else sys.stdout)
    return 0


def _setup(result):
    return {key: value for key, value in result.items() if not isinstance(value, (dict, list))}


def print_model_result(result, summaries):
    """train: one summary; infer: one per engine (keras, saved_model)."""
    if FLAGS.json:
        for summary in summaries:
            for run in summary["runs"]:
                print(json.dumps({"machine": MACHINE, **_setup(result), **_setup(summary), **run}))
        return 0
    print(f"{result['mode']}: {result['variant']} AlexNet, S={result['image_size']}, batch {result['batch_size']}, "
          f"{result['precision']}, XLA {'on' if result['xla'] else 'off'}, {result['strategy']} x{result['replicas']}, "
          f"{result['device']}; {result['gflop_per_image']:.3f} GFLOP per image; medians of {len(summaries[0]['runs'])} "
          f"runs [min-max]:")
    for summary in summaries:

        def figure(key, form):
            values = [run[key] for run in summary["runs"]]
            return f"{summary[key]:{form}} [{min(values):{form}}-{max(values):{form}}]"

        name = summary.get("engine", "train step")
        print(f"  {name:<11} {figure('images_per_sec', '.2f')} images/s  {figure('ms_per_step', '.0f')} ms/step  "
              f"{figure('gflops_per_sec', '.1f')} GFLOP/s")
        print(f"  {'':<11} matmul {figure('matmul_gflops_per_sec', '.1f')} GFLOP/s  "
              f"ceiling fraction {figure('ceiling_fraction', '.3f')}"
              + (f"  batch-1 latency {figure('latency_ms', '.1f')} ms" if "latency_ms" in summary else ""))
    return 0


def print_comparison(results):
    """One line per setting, the default first: images/s, its ratio to the default, ceiling fraction."""
    if FLAGS.json:
        for result in results:
            for run in result["runs"]:
                print(json.dumps({"machine": MACHINE, **_setup(result), **run}))
        return 0
    default = results[0]
    print(f"compare: training step, {default['variant']} AlexNet, S={default['image_size']}, batch {default['batch_size']}, "
          f"{default['strategy']} x{default['replicas']}, {default['device']}; medians of {len(default['runs'])} runs [min-max]; "
          f"the default here is {default['precision']}, XLA {'on' if default['xla'] else 'off'}:")
    for result in results:
        rates = [run["images_per_sec"] for run in result["runs"]]
        print(f"  {result['setting']:<34} {result['images_per_sec']:7.2f} [{min(rates):.2f}-{max(rates):.2f}] images/s  "
              f"x{result['ratio']:.2f} the default  ceiling fraction {result['ceiling_fraction']:.3f} "
              f"(matmul {result['matmul_gflops_per_sec']:.0f} GFLOP/s in {result['precision']})")
    return 0


def print_layer_profile(rows, mode, batch_size):
    if FLAGS.json:
        for row in rows:
            print(json.dumps({"machine": MACHINE, "mode": mode, "batch_size": batch_size, **row}))
        return 0
    total = next(row for row in rows if row["layer"] == "model")
    timed_key = "forward_backward_ms" if "forward_backward_ms" in total else "forward_ms"
    print(f"per layer, batch {batch_size}, S={FLAGS.image_size}, XLA {'on' if FLAGS.xla else 'off'}, "
          f"median of {FLAGS.runs} calls (share: of the sum over the model's own layers):")
    print(f"  {'layer':<27} {'output':>14} {'GFLOP':>7} {'fwd ms':>8}"
          + (f" {'fwd+bwd ms':>11} {'GFLOP/s':>8}" if timed_key != "forward_ms" else f" {'GFLOP/s':>8}") + "  share")
    own = sum(row[timed_key] for row in rows if row["layer"] != "model" and " as " not in row["layer"])
    factor = 3 if timed_key != "forward_ms" else 1
    for row in rows:
        rate = factor * row["gflop"] / (row[timed_key] / 1000.0) if row["gflop"] else 0.0
        share = "" if row["layer"] == "model" or " as " in row["layer"] else f"{100 * row[timed_key] / own:5.1f}%"
        shape = "x".join(str(size) for size in row["output_shape"])
        print(f"  {row['layer']:<27} {shape:>14} {factor * row['gflop']:7.2f} {row['forward_ms']:8.1f}"
              + (f" {row['forward_backward_ms']:11.1f}" if timed_key != "forward_ms" else "")
              + f" {rate:8.1f}  {share}")
    print(f"  sum of the model's layers: {own:.0f} ms; the whole model in one function: {total[timed_key]:.0f} ms")
    return 0


def print_input_result(result):
    if FLAGS.json:
        for run in result["runs"]:
            print(json.dumps({"machine": MACHINE, "mode": "input", **run, "threads": result["threads"], "image_dtype": result["image_dtype"],
                              "image_size": result["image_size"], "batch_size": result["batch_size"]}))
        return 0
    print(f"input pipeline ({result['augmentation']}, {result['image_dtype']} out, S={result['image_size']}, "
          f"batch {result['batch_size']}, "
          f"{result['threads']} thread(s), {result['source_images']}), medians of {len(result['runs'])} runs:")
    print(f"  training pipeline  {result['images_per_sec']:8.1f} images/s   "
          f"{result['images_per_sec_per_core']:8.1f} images per CPU-second")
    print(f"  plain full decode  {result['decode_images_per_sec']:8.1f} images/s   "
          f"{result['decode_images_per_sec_per_core']:8.1f} images per CPU-second")
    ratios = ", ".join(f"{r['ratio']:.2f}" for r in result["runs"])
    print(f"  pipeline / decode per CPU-second: {result['ratio']:.2f} (median; per run: {ratios})")
    if "steps" in result:
        print("  step by step (each includes the ones above; median images per CPU-second, x plain decode):")
        for row in result["steps"]:
            print(f"    {row['name']:<44} {row['images_per_cpu_sec']:8.1f}  {row['ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    cli.run(main, positional=True)
