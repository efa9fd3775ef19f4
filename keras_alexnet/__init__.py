"""keras_alexnet: the reference AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) for TensorFlow and Keras.

    >>> import keras_alexnet
    >>> model = keras_alexnet.build(num_classes=1000)   # the paper's two-column net, 227x227 input
    >>> model.summary()
"""

from keras_alexnet import model as _model
from keras_alexnet import weights as _weights
from keras_alexnet.layers import InputAdapter, LocalResponseNormalization, TwoColumnConv2D
from keras_alexnet.model import feature_extractor, min_input_size
from keras_alexnet.weights import build_from_weights, load_weights

__version__ = "0.1.0"


def build(*args, weights=None, **kwargs):
    """`keras_alexnet.model.build(*args, **kwargs)` (every argument documented there); with
    `weights=FILE`, that file loaded into it by `keras_alexnet.weights.load_weights`.

    weights: None (initialize with `init`) or a weight file: Caffe's bvlc_alexnet (.caffemodel,
        .npz; variant="paper"), torchvision's alexnet state_dict (.pth; variant="one_column") or
        a .keras model (docs/weights.md). The model takes the file's convention unless
        `convention` is given. fc8 is loaded only if num_classes matches the file's (else it
        keeps `init`). `build_from_weights(FILE)` instead takes variant, columns and classes
        from the file.
    """
    if weights is None:
        return _model.build(*args, **kwargs)
    kwargs.setdefault("convention", _weights.convention_of(weights))
    return _weights.load_weights(_model.build(*args, **kwargs), weights)


def __getattr__(name):
    # export.py needs TensorFlow; importing it on first use keeps `import keras_alexnet` and
    # build() free of TensorFlow, so the model also builds under KERAS_BACKEND=jax or torch.
    if name == "export_saved_model":
        from keras_alexnet.export import export_saved_model

        return export_saved_model
    raise AttributeError(f"module 'keras_alexnet' has no attribute {name!r}")


__all__ = ["build", "feature_extractor", "min_input_size", "LocalResponseNormalization", "TwoColumnConv2D"]
__all__ += ["export_saved_model"]
__all__ += ["InputAdapter", "build_from_weights", "load_weights"]
