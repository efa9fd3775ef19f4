"""Convert Caffe's bvlc_alexnet or torchvision's alexnet weights into a Keras model file.

    python scripts/convert_weights.py --input bvlc_alexnet.caffemodel --output bvlc_alexnet.keras
    python scripts/convert_weights.py --input bvlc_alexnet.npy --allow_pickle --output bvlc_alexnet.keras
    python scripts/convert_weights.py --input alexnet-owt-7be5be79.pth --output torchvision_alexnet.keras
    python scripts/convert_weights.py --input runs/alexnet --output mine.keras     # a training run's newest checkpoint

The output is a complete .keras model (architecture, the source's conventions, weights): load it
with `keras_alexnet.build(weights="bvlc_alexnet.keras", ...)` or, after `import keras_alexnet`,
`keras.saving.load_model(...)`. Its input is the package's: RGB, 0..255, minus the ImageNet mean.
--output_npz also writes the weights as an unpickled .npz in Caffe's layout (Caffe only).
See docs/weights.md.
"""

import os

from absl import flags

import _cli as cli

flags.DEFINE_string("input", None, "Caffe .caffemodel / .npz / .npy, torchvision .pth / .pt, or a training run's --model_dir.")
flags.DEFINE_string("output", None, "The .keras file to write.")
flags.DEFINE_string("output_npz", None, "Also write Caffe weights as a pickle-free .npz here.")
flags.DEFINE_bool("allow_pickle", False, "Read a pickled .npy: unpickling can run code, so only for files you trust "
                  "(and even then only NumPy arrays, lists and dicts are accepted from it).")
flags.DEFINE_integer("image_size", None, "Input size of the model (default: 227 for Caffe, 224 for torchvision).")

FLAGS = flags.FLAGS


def save_atomically(model, path):
    """model.save(path) through a temporary file beside it, renamed into place once complete: a
    write that fails (a full disk) leaves an earlier file of that name as it was, and no half file."""
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.tmp-{os.getpid()}.keras")  # Keras wants the .keras suffix
    try:
        model.save(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def main(argv):
    if not FLAGS.input or not FLAGS.output:
        cli.fail("--input and --output are required.")
    if not FLAGS.output.endswith(".keras"):
        cli.fail(f"--output={FLAGS.output}: the output is a Keras model file; name it *.keras.")
    from keras_alexnet import weights
    from keras_alexnet.run_config import check_writable

    # Checked before the work: a folder that is not there was named by the temporary file's path.
    for flag in ("output", "output_npz"):
        if getattr(FLAGS, flag):
            check_writable(os.path.dirname(os.path.abspath(getattr(FLAGS, flag))), f"the folder of --{flag}")
    if os.path.isdir(FLAGS.input):  # a training run: its newest readable checkpoint, with its conventions
        from keras_alexnet import checkpoints

        if not os.path.isfile(os.path.join(FLAGS.input, "config.json")):
            cli.fail(f"--input={FLAGS.input} is a folder but not a training run (no config.json): pass a run's "
                     "--model_dir, or a weight file (.caffemodel, .npz, .npy, .pth, .pt).")
        model, config = checkpoints.restore_model(FLAGS.input)
        save_atomically(model, FLAGS.output)
        print(f"wrote {FLAGS.output}: {config['restored_checkpoint']}, variant {config['variant']}, "
              f"{config['num_classes']} classes, input {config['image_size']}x{config['image_size']}x3")
        return
    source = weights.read_weights(FLAGS.input, allow_pickle=FLAGS.allow_pickle)
    if FLAGS.output_npz and source.convention != "caffe":
        cli.fail("--output_npz writes Caffe's layout: only for Caffe weights.")
    model = weights.build_from_weights(source, image_size=FLAGS.image_size)
    save_atomically(model, FLAGS.output)
    if FLAGS.output_npz:
        weights.save_npz(FLAGS.output_npz, source)
    size = model.input_shape[1]
    print(f"wrote {FLAGS.output}: {source.convention} weights, variant {source.variant}, {model.count_params():,} parameters, "
          f"{source.num_classes} classes, input {size}x{size}x3 (RGB, 0..255, minus the ImageNet mean)")


if __name__ == "__main__":
    cli.run(main)
