"""Starting a training run from pretrained weights: fine-tuning and training a new classifier.

`scripts/train.py --weights FILE` reads FILE once (`read`), lets it decide the network
(`configure`: variant, columns, convention, input size; a flag that contradicts it is a one-line
error), builds that network, loads the file into it unless the run resumes from its own
checkpoint (`load`), and trains only the layers `--trainable` names (`freeze`). fc8 comes from
the file when its classes are the dataset's; otherwise it is a new layer, initialized as usual,
whose rate is `--classifier_lr_multiplier` x the base rate (Caffe's fine-tuning recipe gives new
layers 10x). The files are those of keras_alexnet.weights: Caffe (.caffemodel, .npz, .npy),
torchvision (.pth, .pt) and .keras (converted, or written from a training run by
scripts/convert_weights.py --input RUN_DIR). docs/finetune.md has the recipe and its measurements.
"""

import dataclasses
import hashlib
import os

from keras_alexnet import checkpoints
from keras_alexnet import model as model_lib
from keras_alexnet import weights as weight_files
from keras_alexnet.errors import UsageError

# --trainable: the first layer that trains; every layer from it up trains, the ones below are frozen.
TRAINABLE = {"all": "conv1", "fc": "fc6", **{name: name for name in weight_files.LAYERS}}
# Caffe's fine-tuning examples (finetune_flickr_style) give the new classifier 10x the base rate.
NEW_CLASSIFIER_LR_MULTIPLIER = 10.0


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A weight file read once: its layers in Keras layout and what they fix about the network."""

    path: str
    sha256: str
    source: weight_files.SourceWeights


def read(path, allow_pickle=False):
    """Read a weight file for a training run; UsageError (one line) when it cannot be used."""
    source = weight_files.read_weights(path, allow_pickle=allow_pickle)
    if "fc8" not in source.layers or "fc6" not in source.layers:
        raise UsageError(f"--weights={path} has no classifier (fc6-fc8): fine-tuning needs the whole network's weights.")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return Pretrained(path=str(path), sha256=digest.hexdigest(), source=source)


class RecordedWeights:
    """What a run's config.json says about the --weights file it started from: a stand-in for the
    file when the run resumes from its own checkpoint, which holds the weights, and the file has
    been moved or deleted since (a 240 MB caffemodel cleaned up, a job moved to another machine)."""

    def __init__(self, previous):
        self.variant, self.groups, self.convention = previous["variant"], previous["groups"], previous["convention"]
        self.size = previous["image_size"]
        self.pool5_size = model_lib.pool5_size(self.size, self.variant)
        self.num_classes = None  # unknown without the file; for_run takes the run's fc8 rate instead

    def input_sizes(self):
        return [self.size]

    def default_input_size(self):
        return self.size


def for_run(config):
    """(config, Pretrained or None) for a training run: its --weights file read, or, when the file
    is gone and the run has a checkpoint to resume from, what config.json recorded of it (with the
    run's fc8 rate multiplier, which depends on the file's classes)."""
    if not config.weights:
        return config, None
    if os.path.exists(config.weights) or "://" in config.weights:
        return config, read(config.weights)
    previous = _recorded_run(config.model_dir)
    if previous is None or previous.get("weights_sha256") is None:
        return config, read(config.weights)  # its one-line error: no such weight file
    multiplier = config.classifier_lr_multiplier
    config = dataclasses.replace(config, classifier_lr_multiplier=previous.get("classifier_lr_multiplier")
                                 if multiplier is None else multiplier)
    return config, Pretrained(path=config.weights, sha256=previous["weights_sha256"], source=RecordedWeights(previous))


def _recorded_run(model_dir):
    """The config.json of a run in model_dir that has a checkpoint, or None."""
    if checkpoints.latest_checkpoint(model_dir) is None:
        return None
    try:
        return checkpoints.read_config(model_dir)
    except (FileNotFoundError, UsageError):
        return None


def configure(config, pretrained):
    """`config` (a TrainConfig) with the network the file fixes: variant, groups, convention and
    image size. A flag that contradicts the file is a UsageError naming it and the fix."""
    source, path = pretrained.source, pretrained.path
    if config.variant not in (None, source.variant):
        raise UsageError(f"--variant={config.variant} contradicts --weights={path}, which holds the {source.variant} "
                         "network: leave --variant out.")
    if config.groups not in (None, source.groups):
        raise UsageError(f"--groups={config.groups} contradicts --weights={path}, whose conv2/4/5 have {source.groups} "
                         "column(s): leave --groups out.")
    sizes = source.input_sizes()
    if config.image_size is not None and config.image_size not in sizes:
        raise UsageError(f"--image_size={config.image_size} does not fit --weights={path}: its fc6 was trained on a "
                         f"{source.pool5_size}x{source.pool5_size} pool5 map, which input sizes {sizes[0]}-{sizes[-1]} give: "
                         "use one of those or leave --image_size out.")
    return dataclasses.replace(
        config, variant=source.variant, groups=source.groups, convention=source.convention,
        weights_sha256=pretrained.sha256, image_size=config.image_size or source.default_input_size())


def classifier_is_new(pretrained, num_classes):
    """True when the file's fc8 has other classes than the dataset's (fc8 is then initialized afresh)."""
    return pretrained.source.num_classes != num_classes


def classifier_lr_multiplier(config, pretrained, num_classes):
    """fc8's rate / the base rate for a run whose recipe is applied: --classifier_lr_multiplier, or
    NEW_CLASSIFIER_LR_MULTIPLIER for a new fc8 under SGD, else 1. Scaling a gradient scales SGD's
    step but not Adam's, so a factor other than 1 with Adam is a UsageError."""
    multiplier = config.classifier_lr_multiplier
    if multiplier is None:
        new = classifier_is_new(pretrained, num_classes)
        return NEW_CLASSIFIER_LR_MULTIPLIER if new and config.optimizer == "sgd" else 1.0
    if multiplier != 1.0 and config.optimizer != "sgd":
        raise UsageError(f"--classifier_lr_multiplier={multiplier:g} needs --optimizer sgd: Adam's step does not grow "
                         "with the gradient. Leave it out, or use sgd.")
    return multiplier


def load(model, pretrained, say):
    """Load the file's layers into the freshly built `model` and say what came from it."""
    if isinstance(pretrained.source, RecordedWeights):  # the run's checkpoints proved unreadable
        raise UsageError(f"--weights={pretrained.path} no longer exists and no checkpoint of this run could be read: "
                         f"put the file back (sha256 {pretrained.sha256[:12]}...) to start from it again.")
    new = classifier_is_new(pretrained, model.output_shape[-1])
    weight_files.load_weights(model, pretrained.source, warn_new_classifier=False)
    kept = "conv1-fc7" if new else "conv1-fc8"
    classifier = (f"fc8 new ({model.output_shape[-1]} classes; the file's has {pretrained.source.num_classes})" if new
                  else f"fc8 kept (the file's {pretrained.source.num_classes} classes are the dataset's)")
    say(f"weights {kept} from {pretrained.path} ({pretrained.source.convention} convention, sha256 {pretrained.sha256[:12]}); "
        f"{classifier}")


def freeze(model, trainable):
    """Freeze the layers below the first one that `trainable` names."""
    order = weight_files.LAYERS
    frozen = order[:order.index(TRAINABLE[trainable])]
    for layer in model.layers:
        if layer.name in frozen:
            layer.trainable = False


def gradient_multipliers(model, multiplier):
    """One factor per trainable variable: `multiplier` for fc8's kernel and bias, 1 elsewhere.
    Scaling a gradient scales SGD's step (momentum included) by the same factor, which is Caffe's
    lr_mult; Adam's step does not scale with the gradient (classifier_lr_multiplier refuses it there)."""
    fc8 = {id(variable) for variable in model.get_layer("fc8").trainable_variables}
    return [multiplier if id(variable) in fc8 else 1.0 for variable in model.trainable_variables]
