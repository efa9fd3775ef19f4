"""Convert Caffe's bvlc_alexnet or torchvision's alexnet weights into a Keras model file.

    python scripts/convert_weights.py --input bvlc_alexnet.caffemodel --output bvlc_alexnet.keras
    python scripts/convert_weights.py --input bvlc_alexnet.npy --allow_pickle --output bvlc_alexnet.keras
    python scripts/convert_weights.py --input alexnet-owt-7be5be79.pth --output torchvision_alexnet.keras

The output is a complete .keras model (architecture, the source's conventions, weights): load it
with `keras_alexnet.build(weights="bvlc_alexnet.keras", ...)` or, after `import keras_alexnet`,
`keras.saving.load_model(...)`. Its input is the package's: RGB, 0..255, minus the ImageNet mean.
--output_npz also writes the weights as an unpickled .npz in Caffe's layout (Caffe only).
See docs/weights.md.
"""

import sys

from absl import app, flags

flags.DEFINE_string("input", None, "Caffe .caffemodel / .npz / .npy, or torchvision .pth / .pt.")
flags.DEFINE_string("output", None, "The .keras file to write.")
flags.DEFINE_string("output_npz", None, "Also write Caffe weights as a pickle-free .npz here.")
flags.DEFINE_bool("allow_pickle", False, "Read a pickled .npy: unpickling can run code, so only for files you trust "
                  "(and even then only NumPy arrays, lists and dicts are accepted from it).")
flags.DEFINE_integer("image_size", None, "Input size of the model (default: 227 for Caffe, 224 for torchvision).")

FLAGS = flags.FLAGS


def parse_flags(argv):
    """absl's parser, but a bad flag is one line on stderr and exit code 2."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error}. See --helpfull.", file=sys.stderr)
        sys.exit(2)


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}: flags are --name=value.", file=sys.stderr)
        sys.exit(2)
    if not FLAGS.input or not FLAGS.output:
        print("error: --input and --output are required.", file=sys.stderr)
        sys.exit(2)
    if not FLAGS.output.endswith(".keras"):
        print(f"error: --output={FLAGS.output}: the output is a Keras model file; name it *.keras.", file=sys.stderr)
        sys.exit(2)
    from keras_alexnet import weights
    from keras_alexnet.errors import UsageError

    try:
        source = weights.read_weights(FLAGS.input, allow_pickle=FLAGS.allow_pickle)
        if FLAGS.output_npz and source.convention != "caffe":
            raise UsageError("--output_npz writes Caffe's layout: only for Caffe weights.")
        model = weights.build_from_weights(source, image_size=FLAGS.image_size)
        model.save(FLAGS.output)
        if FLAGS.output_npz:
            weights.save_npz(FLAGS.output_npz, source)
    except (UsageError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    size = model.input_shape[1]
    print(f"wrote {FLAGS.output}: {source.convention} weights, variant {source.variant}, {model.count_params():,} parameters, "
          f"{source.num_classes} classes, input {size}x{size}x3 (RGB, 0..255, minus the ImageNet mean)")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
