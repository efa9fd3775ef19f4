"""Print the top-5 classes of images, with a SavedModel export or a training run's checkpoint.

    python scripts/predict.py cat.jpg dog.png --saved_model saved_models/alexnet/1
    python scripts/predict.py photos/*.jpg --model_dir runs/alexnet
    python scripts/predict.py photos/ --model_dir runs/alexnet      # every image file in the folder

Both paths run the same function (`export.ServingModule.serve_image_bytes`: decode, centre view,
softmax), so they print the same numbers. A file that cannot be read or is not an image gets a
one-line error on stderr and the other images are still answered; the exit code is then 1.
"""

import os
import sys

from absl import flags

# A file that is not an image fails an assertion inside the serving function, and TensorFlow's
# runtime logs that failure as a two-line C++ warning before the script's own one-line error:
# warnings hidden too (the scripts' default hides INFO only). The environment wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _cli as cli  # noqa: E402 (after the log level: _cli sets its own default)

flags.DEFINE_string("saved_model", None, "A SavedModel version folder written by scripts/export.py.")
flags.DEFINE_string("model_dir", None, "A training run's directory (config.json and checkpoints/).")
flags.DEFINE_string("checkpoint", None, "A checkpoint path prefix in --model_dir (default: the newest).")

FLAGS = flags.FLAGS
# What a folder argument expands to: the formats the serving signature decodes, the same list as
# keras_alexnet.image_folder.IMAGE_EXTENSIONS (a test checks); importing it would load
# TensorFlow before the usage errors are answered.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
# Image formats a folder argument may hold that the serving signature cannot decode: said, not skipped silently.
UNREAD_IMAGE_EXTENSIONS = (".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl")


def load_predictor():
    """image bytes -> dict of top_k_labels and top_k_scores, from --saved_model or --model_dir."""
    import tensorflow as tf

    from keras_alexnet import checkpoints, export

    if FLAGS.saved_model:
        export.check_saved_model(FLAGS.saved_model)
        signature = tf.saved_model.load(FLAGS.saved_model).signatures[export.SERVING_SIGNATURE]
        return lambda image_bytes: signature(**{export.IMAGE_BYTES_INPUT: image_bytes})
    model, config = checkpoints.restore_model(FLAGS.model_dir, FLAGS.checkpoint)
    class_names = checkpoints.class_names(config)
    return export.ServingModule(model, class_names, int(config["image_size"]), config.get("mean_rgb")).serve_image_bytes


def error_line(error):
    """The op's own message in a TensorFlow error: the line before the "[[{{node ...}}]]" line
    (the lines above it are Python's "Graph execution error" preamble and a stack)."""
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    node = next((i for i, line in enumerate(lines) if line.startswith("[[")), len(lines))
    message = lines[node - 1] if node > 0 else type(error).__name__
    return message.removeprefix("assertion failed: [").removesuffix("]").replace("image_bytes[0] is ", "")


def expand_folders(paths):
    """The arguments with each folder replaced by its image files (sorted, not recursive); a
    folder without any is kept, and answered with an error line."""
    expanded = []
    for path in paths:
        if not os.path.isdir(path):
            expanded.append(path)
            continue
        names = os.listdir(path)
        images = sorted(os.path.join(path, name) for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
        unread = [name for name in names if name.lower().endswith(UNREAD_IMAGE_EXTENSIONS)]
        if unread:
            print(f"warning: {path}: {len(unread)} image file(s) left out ({', '.join(sorted(unread)[:3])}"
                  f"{', ...' if len(unread) > 3 else ''}): only {' '.join(IMAGE_EXTENSIONS)} are read; convert them to JPEG "
                  "or PNG", file=sys.stderr)
        expanded.extend(images or [path])
    return expanded


def main(argv):
    paths = expand_folders(argv[1:])
    if not paths:
        cli.fail("name one or more image files: predict.py IMAGE ... --saved_model PATH")
    if bool(FLAGS.saved_model) == bool(FLAGS.model_dir):
        cli.fail("pass exactly one of --saved_model (an export) or --model_dir (a training run).")
    predict = load_predictor()

    import tensorflow as tf

    failed = 0
    for path in paths:
        if os.path.isdir(path):
            print(f"error: {path}: a folder with no image files ({' '.join(IMAGE_EXTENSIONS)}) directly in it; "
                  f"for class subfolders pass {os.path.join(path, '*')}", file=sys.stderr)
            failed += 1
            continue
        try:
            with open(path, "rb") as f:
                image_bytes = f.read()
            outputs = predict(tf.constant([image_bytes]))
        except OSError as error:
            print(f"error: {path}: {error.strerror or error}", file=sys.stderr)
            failed += 1
            continue
        except tf.errors.InvalidArgumentError as error:
            print(f"error: {path}: {error_line(error)}", file=sys.stderr)
            failed += 1
            continue
        print(path)
        labels = outputs["top_k_labels"].numpy()[0]
        scores = outputs["top_k_scores"].numpy()[0]
        for rank, (label, score) in enumerate(zip(labels, scores), start=1):
            print(f"  {rank}. {score:.4f}  {label.decode()}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    cli.run(main, positional=True)
