"""Build the paper's AlexNet, print its summary and run it on a batch of random images."""

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("image_size", 227, "Square input size in pixels (at least 67).")
flags.DEFINE_integer("batch_size", 4, "Images in the batch.")


def main(argv):
    del argv
    import numpy as np

    import keras_alexnet

    model = keras_alexnet.build(num_classes=1000, input_shape=(FLAGS.image_size, FLAGS.image_size, 3))
    model.summary()
    images = np.random.default_rng(0).normal(scale=50.0, size=(FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3))
    logits = model.predict(images.astype("float32"), verbose=0)
    print(f"logits {logits.shape}, top-1 classes {logits.argmax(axis=1).tolist()}")


if __name__ == "__main__":
    app.run(main)
