"""Top-1 and top-5 error of a trained AlexNet over a whole split (§6), with one or ten views (§4.1).

    python scripts/evaluate.py --model_dir runs/alexnet                  # its dataset, validation split
    python scripts/evaluate.py --model_dir runs/alexnet --crops 10       # the paper's ten-crop test
    python scripts/evaluate.py --saved_model saved_models/alexnet/1 --dataset tfds:imagenet2012 \\
        --data_dir ~/tensorflow_datasets --batch_size 256 --strategy mirrored

Prints one JSON object (num_examples, top1_error, top5_error, top1_accuracy, top5_accuracy, loss,
weakest_classes, ...) and writes it to --output (default with --model_dir:
<model_dir>/eval_<split>_<crops>crop.json). Draws the confusion matrix beside it
(<output without .json>_confusion.png, or --confusion_png) and names the weakest classes on stderr.
"""

import json
import os
import sys

from absl import flags

import _cli as cli
import _flags

flags.DEFINE_string("model_dir", None, "A training run's directory (config.json and checkpoints/).")
flags.DEFINE_string("checkpoint", None, "A checkpoint path prefix in --model_dir (default: the newest).")
flags.DEFINE_string("saved_model", None, "A SavedModel version folder written by scripts/export.py (instead of --model_dir).")
_flags.define_run_data_flags("validation", "The split to evaluate.")
flags.DEFINE_enum("crops", "1", ["1", "10"], "1: the centre view; 10: four corners, centre and their mirrors, softmax averaged (§4.1).")
flags.DEFINE_integer("batch_size", 64, "Global batch size (examples; ten-crop runs 10 views per example), split over the replicas.")
_flags.define_strategy_flags()
flags.DEFINE_string("output", None, "Write the JSON result here (default with --model_dir: <model_dir>/eval_<split>_<crops>crop.json).")
flags.DEFINE_string("confusion_png", None, "Draw the confusion matrix here (default: beside the JSON result, "
                    "<output without .json>_confusion.png; none with --saved_model and no --output).")
flags.DEFINE_integer("log_every", None, "Print progress every N steps (default: ten lines over the split; 0: never).")

FLAGS = flags.FLAGS


def _output_path(crops):
    """--output, or with --model_dir its eval_<split>_<crops>crop.json; None for a SavedModel."""
    if FLAGS.output or not FLAGS.model_dir:
        return FLAGS.output
    return os.path.join(FLAGS.model_dir, f"eval_{FLAGS.split}_{crops}crop.json")


def _load_model(config):
    """(probabilities function, class names, image size, class count, run config) of the
    --model_dir checkpoint or the --saved_model export (whose run config is `config`, empty)."""
    from keras_alexnet import checkpoints, evaluation, export

    if not FLAGS.model_dir:
        probabilities, class_names, image_size = export.load_saved_model(FLAGS.saved_model)
        return probabilities, class_names, image_size, len(class_names), config
    model, config = checkpoints.restore_model(FLAGS.model_dir, FLAGS.checkpoint)
    return (evaluation.model_probabilities(model), config.get("class_names"), int(config["image_size"]),
            int(config["num_classes"]), config)


def _data_source(config):
    """(dataset string, data_dir, manual_dir): the flags, or the run's own from its config.json."""
    from keras_alexnet.errors import UsageError

    spec = FLAGS.dataset or config.get("dataset")
    if not spec:
        raise UsageError("--dataset is needed with --saved_model (e.g. --dataset tfds:imagenet2012).")
    return spec, FLAGS.data_dir or config.get("data_dir"), FLAGS.manual_dir or config.get("manual_dir")


def _check_strategy(strategy, output, figure_path):
    """Refuse what would fail after the model is loaded: TPUs, a batch that does not split, an
    --output or figure folder that cannot be written, a figure name of no format (checked before
    an evaluation that can take an hour)."""
    import tensorflow as tf

    from keras_alexnet.errors import UsageError
    from keras_alexnet.figures import check_format
    from keras_alexnet.run_config import check_writable

    if isinstance(strategy, tf.distribute.TPUStrategy):
        # TPU programs need fixed batch shapes; exact evaluation here relies on partial batches.
        raise UsageError("--strategy tpu is not supported for evaluation: evaluate on CPU or GPU (--strategy default or mirrored).")
    if output:
        check_writable(os.path.dirname(os.path.abspath(output)), "the folder of --output")
    if figure_path:
        check_format(figure_path)
        check_writable(os.path.dirname(os.path.abspath(figure_path)), "the folder of --confusion_png")
    replicas = strategy.num_replicas_in_sync
    if FLAGS.batch_size % replicas:
        raise UsageError(f"--batch_size={FLAGS.batch_size} does not split over {replicas} replicas: use a multiple of {replicas}.")


def _label_map(info, spec, num_classes, class_names):
    """The dataset's labels in the model's classes (`evaluation.match_classes`): a dataset with
    some of the model's classes is matched by name; one with classes the model lacks is refused."""
    from keras_alexnet import evaluation
    from keras_alexnet.errors import UsageError

    if not class_names or len(class_names) != num_classes:  # an old run without names: counts only
        if info.num_classes != num_classes:
            raise UsageError(f"--dataset={spec} has {info.num_classes} classes but the model has {num_classes}: "
                             "evaluate on the dataset the model was trained on.")
        return None
    try:
        label_map = evaluation.match_classes(info.class_names, class_names)
    except ValueError as error:
        if info.num_classes != num_classes:
            raise UsageError(f"--dataset={spec}: {error}: evaluate on data of the classes the model was "
                             "trained on (a folder: one subfolder per class, named as in training).") from None
        print(f"warning: --dataset={spec}: {error}; labels are compared by index.", file=sys.stderr)
        return None
    if label_map is not None:
        print(f"note: --dataset={spec} has {info.num_classes} of the model's {num_classes} classes; "
              "labels are matched to the model's by class name.", file=sys.stderr)
    return label_map


def _confusion_path(output):
    """--confusion_png, or beside the JSON result: <output without .json>_confusion.png (not
    beside a gs://... result: the figure is written with local file functions)."""
    if FLAGS.confusion_png or not output or "://" in output:
        return FLAGS.confusion_png
    return os.path.splitext(output)[0] + "_confusion.png"


def _per_class(result, class_names, num_classes, figure_path):
    """The weakest classes (in the result and one stderr line) and the confusion matrix (PNG)."""
    from keras_alexnet import evaluation, figures
    from keras_alexnet.errors import counted

    names = list(class_names) if class_names and len(class_names) == num_classes else [str(i) for i in range(num_classes)]
    matrix = evaluation.confusion_matrix(result.pop("label_predictions"), num_classes)
    weakest = evaluation.weakest_classes(matrix, names)
    print(f"weakest classes: {evaluation.describe_weakest(weakest)}", file=sys.stderr)
    if figure_path:
        figures.plot_confusion(matrix, names, figure_path, title=f"{FLAGS.split} split, "
                               f"{counted(result['crops'], 'view')}: top-1 {result['top1_accuracy']:.3f}")
    return {"weakest_classes": weakest, "confusion_png": figure_path}


def _report(result, output):
    """Print the result as one JSON line, then write it to `output` (if any)."""
    import tensorflow as tf

    print(json.dumps(result, sort_keys=True))  # first: a failed write below cannot lose it
    if output:
        with tf.io.gfile.GFile(output, "w") as f:
            f.write(json.dumps(result, indent=2, sort_keys=True) + "\n")


def run():
    from keras_alexnet import checkpoints, data, distribute, evaluation

    crops = int(FLAGS.crops)
    config = checkpoints.read_config(FLAGS.model_dir) if FLAGS.model_dir else {}
    spec, data_dir, manual_dir = _data_source(config)
    strategy = distribute.get_strategy(FLAGS.strategy, tpu=FLAGS.tpu, num_gpus=FLAGS.num_gpus)
    info = data.dataset_info(spec, data_dir=data_dir, manual_dir=manual_dir)  # a bad --dataset fails here, early
    output = _output_path(crops) if distribute.is_chief(strategy) else None  # only the chief writes
    figure_path = _confusion_path(output) if distribute.is_chief(strategy) else None
    _check_strategy(strategy, output, figure_path)
    with strategy.scope():
        probabilities, class_names, image_size, num_classes, config = _load_model(config)
    label_map = _label_map(info, spec, num_classes, class_names)

    def dataset_fn(input_context):
        return evaluation.relabel(data.make_dataset(
            spec, FLAGS.split, image_size=image_size,
            batch_size=input_context.get_per_replica_batch_size(FLAGS.batch_size),
            training=False, input_context=input_context, data_dir=data_dir, manual_dir=manual_dir, crops=crops,
        ), label_map)

    expected = info.num_examples.get(FLAGS.split)
    log_every = FLAGS.log_every
    if log_every is None:  # about ten lines: an ImageNet ten-crop evaluation on a CPU takes half an hour
        log_every = max(1, -(-expected // FLAGS.batch_size) // 10) if expected else 0
    result = evaluation.evaluate(probabilities, dataset_fn, strategy=strategy, log_every=log_every,
                                 expected_examples=expected)
    if expected is not None and expected != result["num_examples"]:
        # Undecodable images are skipped by the input pipeline: say so rather than hide it.
        skipped = data.BAD_IMAGES.summary()
        reason = f": {skipped}: {data.BAD_IMAGES.fix()}" if skipped else "."
        print(f"warning: evaluated {result['num_examples']} of the split's {expected} examples{reason}", file=sys.stderr)
    result = {
        **result,
        "crops": crops,
        "dataset": spec,
        "split": FLAGS.split,
        "model": os.path.abspath(FLAGS.model_dir or FLAGS.saved_model),
        "checkpoint": config.get("restored_checkpoint"),  # the one loaded: a damaged newest one is skipped
        "image_size": image_size,
        "replicas": strategy.num_replicas_in_sync,
    }
    result.update(_per_class(result, class_names, num_classes, figure_path))
    _report(result, output)
    return result


def main(argv):
    # Checked before TensorFlow is imported, so a wrong command line answers at once.
    if bool(FLAGS.model_dir) == bool(FLAGS.saved_model):
        cli.fail("pass exactly one of --model_dir (a training run) or --saved_model (an export).")
    if FLAGS.log_every is not None and FLAGS.log_every < 0:
        cli.fail(f"--log_every={FLAGS.log_every}: use 0 (never) or a positive number of steps.")
    if FLAGS.batch_size < 1:
        cli.fail(f"--batch_size={FLAGS.batch_size}: use a positive number.")
    run()


if __name__ == "__main__":
    cli.run(main)
