"""A training run's settings: TrainConfig, their checks, and how unset ones are chosen.

scripts/train.py fills a TrainConfig from its flags; `check_config` refuses bad values before any
work, `start_from` fixes the network (the paper's, or a --weights file's) and applies the recipe
(keras_alexnet.recipes), `resolve` lets the machine choose what is left (precision, XLA, the
learning rate's scaling, steps per epoch), and `check_resume` refuses a --model_dir that holds
another model. keras_alexnet.training runs the result.
"""

import dataclasses
import os

import tensorflow as tf

from keras_alexnet import checkpoints, distribute, finetune, image_folder, optimization, recipes, run_lease, sources
from keras_alexnet.errors import UsageError, few, first_line
from keras_alexnet.model import INITS, VARIANTS, min_input_size, parameter_count

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; scripts/train.py fills it from flags. None means "choose for me":
    the recipe (keras_alexnet.recipes) fills image_size ... dropout, the machine the rest."""

    dataset: str = "shapes"
    data_dir: str = None
    manual_dir: str = None
    data_service: str = None
    augmentation: str = "paper"
    model_dir: str = "runs/alexnet"
    export_dir: str = "saved_models/alexnet"
    variant: str = None  # "paper", or the --weights file's
    groups: int = None  # 2, or the --weights file's
    init: str = "caffe"
    dropout: float = None  # the recipe's: 0.5 (§4.2), demo 0
    weights: str = None  # start from this weight file (keras_alexnet.finetune)
    trainable: str = "all"  # the first layer that trains (finetune.TRAINABLE); the ones below stay the file's
    classifier_lr_multiplier: float = None  # fc8's rate / the base rate: 10 for a new fc8 under SGD, else 1
    convention: str = None  # set from --weights (finetune.configure); "paper" otherwise
    weights_sha256: str = None  # set from --weights
    recipe: str = "auto"
    recipe_reason: str = None  # set by recipes.apply
    image_size: int = None
    batch_size: int = None
    epochs: int = None
    steps_per_epoch: int = None
    strategy: str = "auto"
    tpu: str = None
    num_gpus: int = None
    precision: str = None
    xla: bool = None
    steps_per_loop: int = 1
    learning_rate: float = None
    lr_schedule: str = None
    warmup_epochs: float = None
    lr_decay_epochs: float = 30.0
    plateau_patience: int = 2
    optimizer: str = None
    momentum: float = 0.9
    weight_decay: float = None
    seed: int = 0
    deterministic: bool = False
    checkpoint_steps: int = 500
    keep_checkpoints: int = 3
    log_steps: int = 100
    export_at_chance: bool = False  # export even when held-out top-1 ended within noise of chance
    profile_steps: str = None  # "FIRST,LAST": profile these training steps for TensorBoard (logs.ProfileWindow)

    def to_json(self):
        return dataclasses.asdict(self)


def check_config(config):
    """Checks that need no TensorFlow work: each failure names the flag and the fix. Settings
    left as None (the recipe's to fill) are not checked."""
    if config.recipe not in recipes.RECIPES:
        raise UsageError(f"--recipe={config.recipe!r} is unknown: use one of {', '.join(recipes.RECIPES)}.")
    if config.variant is not None and config.variant not in VARIANTS:
        raise UsageError(f"--variant={config.variant!r} is unknown: use one of {', '.join(VARIANTS)}.")
    if config.init not in INITS:
        raise UsageError(f"--init={config.init!r} is unknown: use one of {', '.join(INITS)}.")
    if config.groups is not None and config.groups not in (1, 2):
        raise UsageError(f"--groups={config.groups} is not supported: use 1 or 2.")
    smallest = min_input_size(config.variant or "paper")
    if config.image_size is not None and config.image_size < smallest and not config.weights:
        raise UsageError(f"--image_size={config.image_size} is below the minimum for --variant={config.variant or 'paper'}: use at least {smallest}.")
    for name in ("batch_size", "epochs", "steps_per_loop", "checkpoint_steps", "keep_checkpoints", "log_steps"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise UsageError(f"--{name}={getattr(config, name)} must be at least 1.")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        raise UsageError(f"--steps_per_epoch={config.steps_per_epoch} must be at least 1.")
    if config.trainable not in finetune.TRAINABLE:
        raise UsageError(f"--trainable={config.trainable!r} is unknown: use one of {', '.join(finetune.TRAINABLE)}.")
    if config.trainable != "all" and not config.weights:
        raise UsageError(f"--trainable={config.trainable} freezes layers of a pretrained network: give --weights FILE too.")
    if config.classifier_lr_multiplier is not None and (not config.weights or config.classifier_lr_multiplier <= 0):
        raise UsageError(f"--classifier_lr_multiplier={config.classifier_lr_multiplier:g} applies to a run started from "
                         "--weights FILE, and must be positive.")
    if config.precision is not None and config.precision not in PRECISIONS:
        raise UsageError(f"--precision={config.precision!r} is unknown: use one of {', '.join(PRECISIONS)}.")
    if config.lr_schedule is not None and config.lr_schedule not in optimization.SCHEDULES:
        raise UsageError(f"--lr_schedule={config.lr_schedule!r} is unknown: use one of {', '.join(optimization.SCHEDULES)}.")
    if config.optimizer is not None and config.optimizer not in optimization.OPTIMIZERS:
        raise UsageError(f"--optimizer={config.optimizer!r} is unknown: use one of {', '.join(optimization.OPTIMIZERS)}.")
    if config.learning_rate is not None and not config.learning_rate > 0:
        raise UsageError(f"--learning_rate={config.learning_rate} must be positive.")
    if config.dropout is not None and not 0.0 <= config.dropout < 1.0:
        raise UsageError(f"--dropout={config.dropout} must be in [0, 1).")
    if config.warmup_epochs is not None and config.warmup_epochs < 0:
        raise UsageError(f"--warmup_epochs={config.warmup_epochs:g} must not be negative.")
    if config.epochs is not None:
        check_warmup(config.warmup_epochs, config.epochs)
    if (config.weight_decay or 0.0) < 0:
        raise UsageError(f"--weight_decay={config.weight_decay:g} must not be negative.")
    if not 0.0 <= config.momentum < 1.0:  # SGD's momentum, Adam's beta_1: 1 or more never forgets, or grows
        raise UsageError(f"--momentum={config.momentum:g} must be in [0, 1): the paper's is 0.9.")
    profile_window(config.profile_steps)
    if not 0 <= config.seed < 2**32:  # what keras.utils.set_random_seed (NumPy's legacy seeding) takes
        raise UsageError(f"--seed={config.seed} must be in 0..{2**32 - 1}.")


def profile_window(text):
    """--profile_steps "FIRST,LAST" as (first, last), step numbers counted from 1; None for none."""
    if not text:
        return None
    parts = str(text).split(",")
    if len(parts) == 2 and all(part.strip().isdigit() for part in parts):
        first, last = (int(part) for part in parts)
        if 1 <= first <= last:
            return first, last
    raise UsageError(f"--profile_steps={text} must be two step numbers FIRST,LAST with 1 <= FIRST <= LAST, "
                     "e.g. --profile_steps=11,20 (after the first steps, which compile).")


def check_output_folders(config):
    """The folders a run writes, checked after its flags and its data (training.train), so that a
    refused run leaves no empty --model_dir behind."""
    for path, flag in ((config.model_dir, "--model_dir"), (config.export_dir, "--export_dir")):
        if path:
            check_outside_data(path, flag, config.dataset)
    check_holds_no_other_files(config.model_dir)
    if config.export_dir:  # first: it creates nothing
        check_creatable(config.export_dir, "--export_dir")
    check_writable(config.model_dir, "--model_dir")


# What a run writes into --model_dir first: a folder holding none of them is not a run's.
RUN_MARKERS = (checkpoints.CONFIG_FILE, checkpoints.CHECKPOINT_DIR, checkpoints.HISTORY_FILE, run_lease.LEASE_FILE)


def check_holds_no_other_files(model_dir):
    """A --model_dir that exists, is not empty and holds no run (a home folder, a dataset, a
    project) is refused: a run's checkpoints and logs would mix with what is there."""
    if "://" in model_dir or not os.path.isdir(model_dir):
        return
    entries = sorted(name for name in os.listdir(model_dir) if not name.startswith("."))
    if entries and not any(marker in entries for marker in RUN_MARKERS):
        raise UsageError(f"--model_dir={model_dir} holds other files ({few(entries, 3)}) and no training run: choose a new or "
                         "empty folder, so that the run's checkpoints and logs do not mix with them.")


def check_outside_data(path, flag, dataset):
    """An output folder where a `folder:` dataset's images are read (the dataset folder itself
    when it holds its class folders directly, else its train/ and val/) would be read back by the
    next run as a class, or its files as images."""
    if not dataset.startswith("folder:") or "://" in path:
        return
    root = os.path.realpath(os.path.expanduser(dataset[len("folder:"):]))
    target = os.path.realpath(os.path.expanduser(path))
    read = [root] if image_folder.is_flat(root) else [os.path.join(root, name) for name in ("train", "val", "validation")]
    if any(os.path.commonpath([folder, target]) == folder for folder in read):
        raise UsageError(f"{flag}={path} is inside the dataset folder {root}: the next run would read its files as "
                         f"images of a class; put it outside, e.g. {os.path.join(os.path.dirname(root), flag.lstrip('-'))}.")


def check_creatable(path, flag):
    """A folder written only when the run ends (the export base) is checked at its start without
    being created (a run that learns nothing exports nothing): a file in its way, or a nearest
    existing folder that is not writable, is refused. On other filesystems (gs://...) the path is
    only read, so that storage that cannot be reached fails now rather than after the training
    (scripts/_cli.py says it in one line)."""
    if "://" in path:
        import tensorflow as tf

        tf.io.gfile.exists(path)
        return
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag}={path} cannot be created: {existing} is a file; choose a folder path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}={path} is not writable ({existing} does not let you write): choose a folder you can write to.")


def host_memory_bytes():
    """This machine's physical memory (what a CPU run's weights must fit in)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits_in_memory(config, num_classes, memory_bytes):
    """A run on the CPU whose weights, gradients and optimizer slots alone (float32) exceed the
    machine's memory is refused: at --image_size 2000, fc6 alone holds 3.9 G weights, and the
    run was killed by the kernel after a minute, without a word."""
    slots = 2 if config.optimizer == "adam" else 1

    def state_bytes(size):
        return 4 * (2 + slots) * parameter_count(size, config.variant, num_classes, config.groups)

    if state_bytes(config.image_size) <= memory_bytes:
        return
    weights = parameter_count(config.image_size, config.variant, num_classes, config.groups)
    fits = next((size for size in range(config.image_size, min_input_size(config.variant) - 1, -1)
                 if state_bytes(size) <= 0.8 * memory_bytes), None)
    raise UsageError(
        f"--image_size={config.image_size} makes a network of {weights:,} weights (fc6 grows with the input's area): "
        f"with their gradients and {config.optimizer}'s state they need {state_bytes(config.image_size) / 2**30:.0f} GiB, "
        f"more than this machine's {memory_bytes / 2**30:.0f} GiB; "
        + (f"the weights fit here up to --image_size {fits} (the paper's is 227)." if fits else "use a machine with more memory.")
    )


def check_warmup(warmup_epochs, epochs):
    """A warm-up given as a flag must end before the run does (the recipe's own need not: a
    smoke run of one epoch warms up throughout)."""
    if warmup_epochs and warmup_epochs >= epochs:
        raise UsageError(f"--warmup_epochs={warmup_epochs:g} is not below --epochs={epochs}: the rate would never reach "
                         "--learning_rate nor start its schedule; lower --warmup_epochs or raise --epochs.")


def check_writable(path, flag):
    """Create `path` and a probe file in it (a local folder or a TensorFlow filesystem URL)."""
    probe = os.path.join(path, f".write_test_{os.getpid()}")
    try:
        tf.io.gfile.makedirs(path)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except (OSError, tf.errors.OpError) as error:
        reason = getattr(error, "strerror", None) or error
        raise UsageError(f"{flag}={path} is not writable ({first_line(reason)}): "
                         "choose a directory you can write to.") from None


# The settings a resumed run may change (the model's shape and its optimizer may not:
# check_resume). A change applies only from the step where the run resumes, so it is said and
# recorded (training._Run.write_config).
RESUMABLE_SETTINGS = ("dataset", "epochs", "steps_per_epoch", "batch_size", "learning_rate", "lr_schedule",
                      "warmup_epochs", "lr_decay_epochs", "plateau_patience", "momentum", "weight_decay", "dropout",
                      "augmentation", "precision", "seed", "classifier_lr_multiplier")


# What a resumed run takes from its config.json for the flags not given: rerunning with only
# --model_dir (and, say, more --epochs) continues the run as it was. Not the machine's choices
# (precision, XLA, strategy), which `resolve` makes again where the run resumes.
INHERITED_SETTINGS = ("dataset", "data_dir", "manual_dir", "augmentation", "export_dir", "variant", "groups", "init",
                      "dropout", "weights", "trainable", "classifier_lr_multiplier", "recipe", "image_size", "batch_size",
                      "epochs", "steps_per_epoch", "learning_rate", "lr_schedule", "warmup_epochs", "lr_decay_epochs",
                      "plateau_patience", "optimizer", "momentum", "weight_decay", "seed", "checkpoint_steps",
                      "keep_checkpoints", "log_steps")


def inherited_settings(model_dir, given):
    """The INHERITED_SETTINGS of the run whose checkpoints `model_dir` holds that are not in
    `given` ({flag: value} of the command line); {} when it holds none (a new run). A damaged
    config.json is one UsageError line (checkpoints.read_config)."""
    if not model_dir or checkpoints.latest_checkpoint(model_dir) is None:
        return {}
    try:
        previous = checkpoints.read_config(model_dir)
    except FileNotFoundError:
        return {}
    settings = {key: previous[key] for key in INHERITED_SETTINGS if key in previous and key not in given}
    if not str(previous.get("recipe_reason", "")).startswith("--recipe="):
        settings.pop("recipe", None)  # auto's pick: auto picks it again, with its reason
    if "recipe" in given:  # a recipe named on the rerun decides what it decides, as on a new run
        settings = {key: value for key, value in settings.items() if key not in recipes.FIELDS}
    if {"dataset", "batch_size"} & set(given):
        settings.pop("steps_per_epoch", None)  # follows from them: an epoch stays one pass over the data
    if (settings.get("warmup_epochs") or 0) >= given.get("epochs", previous.get("epochs") or 0):
        settings.pop("warmup_epochs", None)  # a recipe's warm-up of a short run: the recipe gives it again, unchecked
    return settings


def setting_changes(previous, current):
    """{setting: (previous value, current value)} of the RESUMABLE_SETTINGS that differ."""
    return {key: (previous[key], current.get(key)) for key in RESUMABLE_SETTINGS
            if key in previous and previous[key] != current.get(key)}


def check_resume(config, num_classes, class_names=None):
    """A model_dir that holds checkpoints of another model shape, or of other classes, is refused,
    not overwritten."""
    if checkpoints.latest_checkpoint(config.model_dir) is None:
        return
    try:
        previous = checkpoints.read_config(config.model_dir)
    except FileNotFoundError:
        return
    current = {**config.to_json(), "num_classes": num_classes}
    if previous.get("weights_sha256", config.weights_sha256) != config.weights_sha256:
        raise UsageError(_other_start_message(config, previous))
    # The optimizer too: its slots (momentum, Adam's moments) are in the checkpoint, and another
    # optimizer's would not restore.
    for key in checkpoints.MODEL_KEYS + ("trainable", "optimizer"):
        if key in previous and previous[key] != current.get(key):
            # Two of them are no flag: the class count follows from --dataset, the convention from --weights.
            flag = {"num_classes": "dataset", "convention": "weights"}.get(key, key)
            raise UsageError(
                f"--model_dir={config.model_dir} holds checkpoints of a run with {key}={previous[key]}, "
                f"but this run has {key}={current.get(key)}: use a new --model_dir or the run's own "
                f"--{flag}{f' ({previous[flag]})' if previous.get(flag) else ''}."
            )
    # As many classes under other names is another task: its labels would train the run's fc8
    # units of other classes. (The same names at another --dataset path, data that moved, resume.)
    if class_names and previous.get("class_names") and list(previous["class_names"]) != list(class_names):
        raise UsageError(
            f"--model_dir={config.model_dir} holds checkpoints of a run on other classes ({few(previous['class_names'], 3)}) "
            f"than --dataset={config.dataset} ({few(class_names, 3)}): use a new --model_dir or the run's own --dataset "
            f"({previous.get('dataset')})."
        )


def _other_start_message(config, previous):
    """Why a resume that starts from other weights than the model_dir's run is refused."""
    where = f"--model_dir={config.model_dir}"
    if previous["weights_sha256"] is None:
        return f"{where} holds a run trained from scratch; --weights={config.weights} would start another: use a new --model_dir."
    started = f"{where} was started from --weights={previous.get('weights')} (sha256 {previous['weights_sha256'][:12]}...)"
    if config.weights is None:
        return f"{started}: to resume it, give the same --weights; or use a new --model_dir."
    return (f"{started}, not --weights={config.weights} (sha256 {str(config.weights_sha256)[:12]}...): resume with the "
            "original file, or use a new --model_dir.")


def start_from(config, pretrained, info):
    """`config` with the network fixed (the --weights file's, finetune.configure, or the paper's)
    and the recipe applied; fc8's rate multiplier follows from both."""
    if pretrained is None:
        network = dataclasses.replace(config, variant=config.variant or "paper", groups=config.groups or 2, convention="paper")
        started = recipes.apply(network, info.num_examples["train"])
    else:
        started = recipes.apply(finetune.configure(config, pretrained), info.num_examples["train"])
        started = dataclasses.replace(
            started, classifier_lr_multiplier=finetune.classifier_lr_multiplier(started, pretrained, info.num_classes))
    check_warmup(config.warmup_epochs, started.epochs)  # the flag's warm-up against the recipe's epochs
    return started


def absolute_paths(config):
    """The run's data, export and weight paths made absolute, so that config.json names the same
    files whatever the working directory of the rerun, evaluate.py or export.py that reads it
    (relative ones broke those from any other folder). model_dir stays as given."""
    absolute = sources.absolute_path
    return dataclasses.replace(
        config, dataset=sources.absolute_spec(config.dataset), export_dir=absolute(config.export_dir),
        weights=absolute(config.weights), data_dir=absolute(config.data_dir), manual_dir=absolute(config.manual_dir))


def resolve(config, strategy, info):
    """Fill in the choices left to the machine: precision, XLA, learning rate, steps per epoch."""
    kind = distribute.device_kind()
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise UsageError(
            f"--batch_size={config.batch_size} (global) is not divisible by the {replicas} replicas: "
            f"use a multiple of {replicas}."
        )
    steps_per_epoch = config.steps_per_epoch or info.num_examples["train"] // config.batch_size
    if steps_per_epoch < 1:
        raise UsageError(
            f"--batch_size={config.batch_size} is larger than the {info.num_examples['train']} training examples: lower it."
        )
    precision = config.precision or distribute.default_precision(kind, strategy)
    return dataclasses.replace(
        config,
        precision=precision,
        # XLA: by device, CPU features, input size and precision, as measured (distribute.default_xla).
        xla=distribute.default_xla(kind, config.image_size, precision=precision) if config.xla is None else config.xla,
        learning_rate=config.learning_rate or optimization.scaled_learning_rate(config.batch_size),
        steps_per_epoch=steps_per_epoch,
    )
