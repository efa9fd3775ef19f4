"""Train AlexNet (the paper's §5 recipe) under any tf.distribute strategy, then export it.

    python scripts/train.py                                   # demo: the built-in shapes data
    python scripts/train.py --dataset tfds:imagenet2012 --data_dir ~/tensorflow_datasets \\
        --image_size 227 --batch_size 128 --epochs 90 --model_dir runs/imagenet

    python scripts/train.py --dataset folder:photos --weights bvlc_alexnet.caffemodel   # fine-tune

Flags left unset take a recipe (--recipe, keras_alexnet/recipes.py): finetune with --weights, the
demo's on the built-in shapes data, small_data under 100,000 training images, the paper's §5
recipe from there on.
Rerunning the same command resumes from the newest readable checkpoint in --model_dir (damaged
ones are skipped with a warning and moved to checkpoints/damaged/); flags left out of the rerun
take the run's own values, so `--model_dir DIR --epochs N` continues a run to N epochs.
SIGTERM (a preemption notice) or Ctrl-C saves a checkpoint and stops (exit 143 or 130); Ctrl-C
twice stops at once. One run at a time per --model_dir: a second one while the first lives is
refused (exit 2); the lease of a run that died is taken over. A run whose held-out top-1 ends
within noise of chance exports nothing and exits 3.
"""

import sys

from absl import flags

import _cli as cli
import _flags

flags.DEFINE_enum("recipe", "auto", ["auto", "paper", "small_data", "demo", "finetune"],
                  "What unset flags mean. auto: finetune with --weights (SGD 0.001, new fc8 x10, no warm-up, cosine, "
                  "decay 5e-4, batch 32, 10 epochs, the file's input size), demo on shapes (Adam 5e-4, 3 warm-up epochs, cosine, no dropout, 67 px, batch 32, 10 epochs), paper (§5: SGD 0.01 x batch/128, plateau /10, decay 5e-4, "
                  "227 px, batch 128, 90 epochs) for 100,000+ training images, small_data (SGD 0.01 unscaled, 1 warm-up epoch, "
                  "cosine, decay 5e-4, 227 px, batch 32, 30 epochs) under that. docs/recipes.md.")
_flags.define_strategy_flags()
flags.DEFINE_string("dataset", "shapes", f"{_flags.DATASET_FORMS}; shapes is the built-in demo.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir for tfds: datasets.")
flags.DEFINE_string("manual_dir", None, "TFDS manual_dir holding the ILSVRC2012 tars for tfds:imagenet2012.")
flags.DEFINE_string("data_service", None, "tf.data service dispatcher (grpc://host:port) to run preprocessing on.")
flags.DEFINE_enum("augmentation", "paper", ["paper", "inception", "none"],
                  "Training augmentation: paper (§4.1 crops, flips, PCA lighting), inception (random-resized-crop), none.")
flags.DEFINE_string("model_dir", "runs/alexnet", "Checkpoints, config.json, history.jsonl and TensorBoard logs.")
flags.DEFINE_string("export_dir", "saved_models/alexnet", "Export base: the SavedModel goes to <export_dir>/<next integer>/. Empty: no export.")
flags.DEFINE_enum("variant", None, ["paper", "one_column"],
                  "paper (default): the two-column net of §3; one_column: torchvision's layout. With --weights: the file's.")
flags.DEFINE_integer("groups", None, "Columns of conv2/4/5 in the paper variant (default 2 as in the paper; 1 for one "
                     "column). With --weights: the file's.")
flags.DEFINE_string("weights", None, "Start from this weight file (fine-tuning): Caffe .caffemodel/.npz, torchvision "
                    ".pth, or .keras (scripts/convert_weights.py writes one from a training run). Variant, columns, "
                    "conventions and input size come from it; fc8 is new unless its classes are the dataset's. docs/finetune.md.")
flags.DEFINE_enum("trainable", "all", ["all", "fc", "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"],
                  "With --weights: the layers that train, from this one up (all = conv1, fc = fc6; fc8 trains the "
                  "classifier alone); the ones below keep the file's weights.")
flags.DEFINE_float("classifier_lr_multiplier", None, "With --weights: fc8's learning rate / the base rate (default 10 "
                   "for a new fc8 under SGD, as in Caffe's fine-tuning; else 1).")
flags.DEFINE_enum("init", "caffe", ["caffe", "paper"], "Initialization: caffe (learns at once) or paper (§5, biases 1).")
flags.DEFINE_float("dropout", None, "Dropout rate after fc6 and fc7 (default: the recipe's: 0.5 as in §4.2; demo 0).")
flags.DEFINE_integer("image_size", None, "Square input size, at least 67 (default: the recipe's, 227; demo 67).")
flags.DEFINE_integer("batch_size", None, "Global batch size, split evenly over the replicas (default: the recipe's: paper 128, small_data and demo 32).")
flags.DEFINE_integer("epochs", None, "Epochs to train (default: the recipe's: paper 90, small_data 30, demo 10).")
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: training examples // batch size).")
flags.DEFINE_enum("precision", None, ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Default by device: mixed_bfloat16 on TPU and Ampere+ GPUs, mixed_float16 (loss-scaled) on older GPUs, float32 on CPU "
                  "(where mixed_float16 is slower than float32).")
flags.DEFINE_bool("xla", None, "Compile each replica's forward and backward with XLA, and on one device the optimizer's update (default: on GPUs, TPUs and AVX2-only CPUs; "
                  "on AVX-512 CPUs on below 96 px and off from 96 px; off with mixed_bfloat16 and on with mixed_float16 on any CPU; as measured: "
                  "docs/performance.md).")
flags.DEFINE_integer("steps_per_loop", 1, "Training steps per call into the compiled loop (raise on accelerators to cut host overhead).")
flags.DEFINE_float("learning_rate", None, "Base learning rate (default: the recipe's: paper 0.01 x global batch / 128, small_data 0.01, demo 5e-4).")
flags.DEFINE_enum("lr_schedule", None, ["plateau", "step", "cosine"],
                  "plateau (the paper's): /10 when held-out error stops improving, 3 times at most, never while "
                  "top-1 is still at chance (§5); step: /10 every --lr_decay_epochs; cosine (small_data, demo).")
flags.DEFINE_float("warmup_epochs", None, "Linear learning-rate warm-up, in epochs (default: the recipe's: paper 0, small_data 1, demo 3).")
flags.DEFINE_float("lr_decay_epochs", 30.0, "Epochs between /10 steps with --lr_schedule step.")
flags.DEFINE_integer("plateau_patience", 2, "Epochs without held-out improvement before /10 with --lr_schedule plateau.")
flags.DEFINE_enum("optimizer", None, ["sgd", "adam"], "sgd (paper, small_data): the paper's SGD with momentum (§5); adam (demo): Adam, beta_1 = --momentum.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum (§5); Adam's beta_1.")
flags.DEFINE_float("weight_decay", None, "Coupled weight decay on kernels, not biases (default: the recipe's: paper and small_data 5e-4 (§5), demo 0).")
flags.DEFINE_integer("seed", 0, "Seed for initialization, dropout and the input pipeline.")
flags.DEFINE_bool("deterministic", False, "Deterministic ops and input order (slower).")
flags.DEFINE_integer("checkpoint_steps", 500, "Save a checkpoint every N steps (and at every epoch end).")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints to keep.")
flags.DEFINE_bool("export_at_chance", False,
                  "Export even when held-out top-1 ended within noise of chance (by default such a run exports nothing "
                  "and exits 3).")
flags.DEFINE_integer("log_steps", 100, "Write the train/ TensorBoard scalars every N steps (and at every epoch end).")
flags.DEFINE_string("profile_steps", None, "FIRST,LAST: profile training steps FIRST to LAST (from 1, over the whole run; e.g. 11,20, "
                    "after the steps that compile) into --model_dir/logs for TensorBoard's Profile tab (tensorboard-plugin-profile).")

FLAGS = flags.FLAGS


def config_values(flag_values):
    """TrainConfig fields from the flags; unset flags stay None for the recipe to fill. Resuming a
    run, the flags not given take the run's own values (run_config.INHERITED_SETTINGS)."""
    from keras_alexnet import run_config

    fields = [field for field in run_config.TrainConfig.__dataclass_fields__ if field in flag_values]
    values = {field: flag_values[field].value for field in fields}
    given = {field: values[field] for field in fields if flag_values[field].present}
    earlier = run_config.inherited_settings(values["model_dir"], given)
    inherited = {key: value for key, value in earlier.items() if value != values[key]}
    if inherited:
        # Not "resuming": the run may still be refused (another set of classes, another network).
        print(f"--model_dir={values['model_dir']} holds a run: the flags not given take its settings: "
              + " ".join(f"--{key}={'' if value is None else value}" for key, value in inherited.items()), flush=True)
    values.update(inherited)
    # An inherited None stays None (a run without export keeps none); other Nones are for the recipe.
    return {name: value for name, value in values.items() if value is not None or name in inherited}


def main(argv):
    from keras_alexnet import evaluation
    from keras_alexnet.training import NOT_LEARNED_EXIT_CODE, Preempted, TrainConfig, TrainingDiverged, top5_text, train

    config = TrainConfig(**config_values(FLAGS))
    try:
        result = train(config)
    except TrainingDiverged as error:
        cli.fail(error, code=1)
    except Preempted as error:  # SIGTERM, SIGHUP or Ctrl-C: checkpoint saved
        try:
            print(str(error), file=sys.stderr)
        except OSError:  # SIGHUP: the terminal is gone
            pass
        sys.exit(error.exit_code)
    except KeyboardInterrupt:  # Ctrl-C twice, or before training started
        cli.fail(f"interrupted; the newest checkpoint in {config.model_dir} (if any) is kept: rerun the same command to resume.",
                 code=130)
    exported = f"; SavedModel {result['export_path']}" if result.get("export_path") else ""
    if not result["learned"]:
        print(f"did not learn: step {result['step']}, held-out top-1 {result['val_top1']:.4f} is within noise of chance "
              f"({evaluation.describe_chance(result['num_classes'], result['val_majority_share'])}; up to {result['chance_ceiling']:.3f} on "
              f"{result['val_examples']} held-out images){exported or '; nothing exported'}. Exit code {NOT_LEARNED_EXIT_CODE}.")
        sys.exit(NOT_LEARNED_EXIT_CODE)
    top5 = top5_text(result["val_top5"], result["num_classes"], digits=4)
    print(f"done: step {result['step']}, held-out top-1 {result['val_top1']:.4f} (error {1 - result['val_top1']:.4f})"
          f"{',' if top5 else ''}{top5}{exported}")


if __name__ == "__main__":
    cli.run(main)
