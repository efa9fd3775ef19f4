"""keras_alexnet: the reference AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) for TensorFlow and Keras.

    >>> import keras_alexnet
    >>> model = keras_alexnet.build(num_classes=1000)   # the paper's two-column net, 227x227 input
    >>> model.summary()
"""

from keras_alexnet.layers import LocalResponseNormalization, TwoColumnConv2D
from keras_alexnet.model import build, feature_extractor, min_input_size
from keras_alexnet.export import export_saved_model
# Imported here so that InputAdapter is registered before keras.saving.load_model reads a converted model.
from keras_alexnet.weights import InputAdapter, build_from_weights, load_weights

__version__ = "0.1.0"

__all__ = ["build", "feature_extractor", "min_input_size", "LocalResponseNormalization", "TwoColumnConv2D"]
__all__ += ["export_saved_model"]
__all__ += ["InputAdapter", "build_from_weights", "load_weights"]
