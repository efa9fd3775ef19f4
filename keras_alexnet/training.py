"""The training engine: one custom loop for every tf.distribute strategy (§5's recipe).

Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy and with steps_per_execution > 1 on
several replicas (docs/platform.md), so this is the loop of TensorFlow's official models:
datasets built per input pipeline with `distribute_datasets_from_function`, an outer
`tf.function` that runs `steps_per_loop` steps of `strategy.run(replica_step)`, the loss averaged
over the *global* batch, and (with XLA) the per-replica forward and backward compiled while the
optimizer update stays outside the compiled function (compiling the update too fails on logical
devices). Progress, checkpoints, evaluation and the schedule run in Python between loops.
"""

import dataclasses
import math
import os
import shutil
import signal
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_alexnet import augment, checkpoints, data, distribute, evaluation, export, finetune, optimization, recipes, run_lease
from keras_alexnet.errors import UsageError, first_line
from keras_alexnet.logs import Progress, RunLog
from keras_alexnet.model import VARIANTS, INITS, min_input_size

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Preempted(RuntimeError):
    """SIGTERM or Ctrl-C (SIGINT) arrived; a checkpoint was saved and the same command resumes
    from it. `exit_code` is the shell's for that signal: 143 for SIGTERM, 130 for SIGINT."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


# The exit code of scripts/train.py for a run whose held-out top-1 ended within noise of chance.
NOT_LEARNED_EXIT_CODE = 3
# From this epoch on, a held-out top-1 still within noise of chance is warned about (once): every
# recipe here has left its flat start by then on the data measured (docs/recipes.md).
CHANCE_WARNING_EPOCH = 3


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; scripts/train.py fills it from flags. None means "choose for me":
    the recipe (keras_alexnet.recipes) fills image_size ... weight_decay, the machine the rest."""

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
    dropout: float = 0.5
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
    if not 0.0 <= config.dropout < 1.0:
        raise UsageError(f"--dropout={config.dropout} must be in [0, 1).")
    if (config.weight_decay or 0.0) < 0 or config.momentum < 0:
        raise UsageError("--weight_decay and --momentum must not be negative.")
    _check_writable(config.model_dir, "--model_dir")


def _check_writable(path, flag):
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


def check_resume(config, num_classes):
    """A model_dir that holds checkpoints of another model shape is refused, not overwritten."""
    if checkpoints.latest_checkpoint(config.model_dir) is None:
        return
    try:
        previous = checkpoints.read_config(config.model_dir)
    except FileNotFoundError:
        return
    current = {**config.to_json(), "num_classes": num_classes}
    if previous.get("weights_sha256", config.weights_sha256) != config.weights_sha256:
        raise UsageError(f"--model_dir={config.model_dir} was started from a weight file with sha256 "
                         f"{str(previous['weights_sha256'])[:12]}..., not --weights={config.weights} "
                         f"({str(config.weights_sha256)[:12]}...): use a new --model_dir or the original file.")
    for key in checkpoints.MODEL_KEYS + ("trainable",):
        if key in previous and previous[key] != current.get(key):
            raise UsageError(
                f"--model_dir={config.model_dir} holds checkpoints of a model with {key}={previous[key]}, "
                f"but this run has {key}={current.get(key)}: use a new --model_dir or the same --{key}."
            )


def start_from(config, pretrained, info):
    """`config` with the network fixed (the --weights file's, finetune.configure, or the paper's)
    and the recipe applied; fc8's rate multiplier follows from both."""
    if pretrained is None:
        config = dataclasses.replace(config, variant=config.variant or "paper", groups=config.groups or 2, convention="paper")
        return recipes.apply(config, info.num_examples["train"])
    config = recipes.apply(finetune.configure(config, pretrained), info.num_examples["train"])
    return dataclasses.replace(
        config, classifier_lr_multiplier=finetune.classifier_lr_multiplier(config, pretrained, info.num_classes))


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
    return dataclasses.replace(
        config,
        precision=config.precision or distribute.default_precision(kind, strategy),
        # XLA: by device, CPU features and input size, as measured (distribute.default_xla).
        xla=distribute.default_xla(kind, config.image_size) if config.xla is None else config.xla,
        learning_rate=config.learning_rate or optimization.scaled_learning_rate(config.batch_size),
        steps_per_epoch=steps_per_epoch,
    )


class Trainer:
    """Holds the model, optimizer and compiled steps of one run under one strategy."""

    def __init__(self, config, strategy, num_classes):
        self.config = config
        self.strategy = strategy
        self.num_classes = num_classes
        total_steps = config.epochs * config.steps_per_epoch
        with strategy.scope():
            self.model = checkpoints.build_from_config(
                {**config.to_json(), "num_classes": num_classes},
                init=config.init, dropout=config.dropout, weight_decay=config.weight_decay, seed=config.seed,
            )
            finetune.freeze(self.model, config.trainable)  # before the optimizer sees the trainable variables
            self.plateau = optimization.PlateauTracker(patience=config.plateau_patience)
            self.schedule = optimization.AlexNetSchedule(
                config.learning_rate, config.lr_schedule, total_steps,
                warmup_steps=int(config.warmup_epochs * config.steps_per_epoch),
                decay_steps=int(config.lr_decay_epochs * config.steps_per_epoch),
                scale=self.plateau.scale,
            )
            self.optimizer = optimization.make_optimizer(self.schedule, config.momentum, config.precision, config.optimizer)
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step, epoch=self.epoch,
            **self.plateau.checkpoint_items(),
        )
        self._train_loop = self._make_train_loop()

    def learning_rate(self):
        return float(self.schedule(self.step))

    # -- compiled steps -----------------------------------------------------------------------

    def _statistics(self, logits, labels, per_example_loss):
        top1, top5 = (tf.cast(hits, tf.float32) for hits in evaluation.top_k_hits(logits, labels))
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.stack([tf.reduce_sum(per_example_loss), top1, top5, count])

    def _make_train_loop(self):
        model, optimizer, config = self.model, self.optimizer, self.config
        scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        multiplier = config.classifier_lr_multiplier or 1.0
        multipliers = finetune.gradient_multipliers(model, multiplier) if multiplier != 1.0 else None

        def forward_backward(images, labels):
            if isinstance(images, tuple):  # uint8 crops and lighting shifts (data.make_dataset)
                images = augment.finish_views(*images)  # on the device; under XLA fused into conv1's input
            with tf.GradientTape() as tape:
                logits = tf.cast(model(images, training=True), tf.float32)
                per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(labels, tf.int32), logits)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
                if model.losses:  # the coupled weight decay (§5), once per global step
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                scaled_loss = optimizer.scale_loss(loss) if scales_loss else loss
            gradients = tape.gradient(scaled_loss, model.trainable_variables)
            return gradients, self._statistics(logits, labels, per_example)

        if config.xla and not isinstance(self.strategy, tf.distribute.TPUStrategy):
            forward_backward = tf.function(forward_backward, jit_compile=True)

        def replica_step(images, labels):
            gradients, statistics = forward_backward(images, labels)
            if multipliers:  # Caffe's lr_mult for a new fc8 (finetune.gradient_multipliers)
                gradients = [g if m == 1.0 else g * m for g, m in zip(gradients, multipliers)]
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return statistics

        @tf.function
        def train_loop(iterator, steps):
            totals = tf.zeros([4])
            for _ in tf.range(steps):
                images, labels = next(iterator)
                statistics = self.strategy.run(replica_step, args=(images, labels))
                totals += self.strategy.reduce(tf.distribute.ReduceOp.SUM, statistics, axis=None)
                self.step.assign_add(1)
            return totals

        return train_loop

    # -- public steps ---------------------------------------------------------------------------

    def train_steps(self, iterator, steps):
        """Run `steps` training steps; returns summed [loss, top1, top5, count] over them."""
        return self._train_loop(iterator, tf.constant(steps, tf.int64)).numpy()


def _dataset_fn(config, split, training, seed, image_dtype="float32"):
    def dataset_fn(input_context):
        return data.make_dataset(
            config.dataset, split,
            image_size=config.image_size,
            batch_size=input_context.get_per_replica_batch_size(config.batch_size),
            training=training,
            input_context=input_context,
            data_dir=config.data_dir,
            manual_dir=config.manual_dir,
            seed=seed,
            deterministic=config.deterministic,
            augmentation=config.augmentation if training else "none",
            data_service=config.data_service if training else None,
            image_dtype=image_dtype,
        )

    return dataset_fn


def train(config, strategy=None, stream=None):
    """Train, evaluate after every epoch, checkpoint, and export at the end.

    Returns a dict with the final held-out metrics (val_top1, val_top5, val_loss, val_examples),
    the step reached, the export path (chief only) and the trained Keras model ("model"), and
    whether the run learned: "learned" (False when val_top1 is within noise of chance, when nothing
    is exported unless export_at_chance), "num_classes" and "chance_ceiling".
    Raises UsageError for bad input (before any work), TrainingDiverged on a NaN loss and
    Preempted after SIGTERM or Ctrl-C (both after keeping the last good checkpoint).
    The chief holds model_dir's lease (keras_alexnet.run_lease) while it trains: UsageError when
    another live run holds it. Resuming skips unreadable checkpoints (checkpoints.restore_newest_readable).

    TensorBoard (model_dir/logs): train/ loss, top1, top5, learning_rate and images_per_sec,
    each the mean over the steps since the previous point, every `log_steps` steps and at each
    epoch end; val/ loss, top1 and top5 at each epoch end.
    """
    check_config(config)
    if strategy is None:
        strategy = distribute.get_strategy(config.strategy, tpu=config.tpu, num_gpus=config.num_gpus)
    info = data.dataset_info(config.dataset, data_dir=config.data_dir, manual_dir=config.manual_dir)
    pretrained = finetune.read(config.weights) if config.weights else None
    config = resolve(start_from(config, pretrained, info), strategy, info)
    check_resume(config, info.num_classes)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.precision)
    chief = distribute.is_chief(strategy)
    say = (lambda message: print(message, file=stream, flush=True)) if chief else (lambda message: None)
    lease = run_lease.acquire(config.model_dir, stream=stream) if chief else None  # one run per model_dir

    trainer = Trainer(config, strategy, info.num_classes)
    checkpoint_dir = checkpoints.checkpoint_dir(config.model_dir)
    restored = checkpoints.restore_newest_readable(trainer.checkpoint, config.model_dir, move_aside=chief, say=say)
    if restored:
        say(f"resumed from {restored} at step {int(trainer.step.numpy())}")
    elif pretrained:
        finetune.load(trainer.model, pretrained, say)
    write_dir = checkpoint_dir if chief else tempfile.mkdtemp(prefix=f"alexnet_{distribute.worker_id(strategy)}_")
    manager = tf.train.CheckpointManager(trainer.checkpoint, write_dir, max_to_keep=config.keep_checkpoints)
    if chief:
        checkpoints.write_config(config.model_dir, {
            **config.to_json(), "num_classes": info.num_classes, "class_names": list(info.class_names),
            "mean_rgb": info.mean_rgb,  # None: the ImageNet mean; else the dataset's (tfrecord:DIR?mean=channel)
            "num_replicas": strategy.num_replicas_in_sync, "strategy_class": type(strategy).__name__,
        })
    run_log = RunLog(os.path.join(config.model_dir, checkpoints.HISTORY_FILE),
                     os.path.join(config.model_dir, checkpoints.LOG_DIR), enabled=chief)

    start_step = int(trainer.step.numpy())
    total_steps = config.epochs * config.steps_per_epoch
    # Training batches come as uint8 crops that forward_backward finishes on the device; on TPUs,
    # whose infeed of uint8 is not tested here, as float32 views made on the host.
    image_dtype = "float32" if isinstance(strategy, tf.distribute.TPUStrategy) else "uint8"
    train_data = strategy.distribute_datasets_from_function(
        _dataset_fn(config, "train", True, config.seed + start_step, image_dtype))
    eval_fn = _dataset_fn(config, "validation", False, config.seed)

    def evaluate_held_out():
        metrics = evaluation.evaluate(evaluation.model_probabilities(trainer.model), eval_fn, strategy)
        return {"loss": metrics["loss"], "top1": metrics["top1_accuracy"], "top5": metrics["top5_accuracy"],
                "examples": metrics["num_examples"]}
    iterator = iter(train_data)
    say(f"training {config.variant} AlexNet ({trainer.model.count_params():,} parameters) on {config.dataset} "
        f"({info.num_examples['train']} train / {info.num_examples.get('validation', 0)} held-out, {info.num_classes} classes), "
        f"{distribute.strategy_name(strategy)} x{strategy.num_replicas_in_sync}, {config.precision}, XLA {'on' if config.xla else 'off'}, "
        f"image {config.image_size}, batch {config.batch_size}, lr {config.learning_rate:g} ({config.lr_schedule}), "
        f"{config.epochs} epoch{'s' if config.epochs > 1 else ''} x {config.steps_per_epoch} steps")
    say(f"recipe {config.recipe} ({config.recipe_reason}): {config.optimizer}, warm-up {config.warmup_epochs:g} "
        f"epoch{'s' if config.warmup_epochs != 1 else ''}, weight decay {config.weight_decay:g}; flags given win")
    chance = ChanceWatch(info.num_classes, config, say)

    stop = StopRequest(stream)
    progress = Progress(config.steps_per_epoch, config.epochs, config.batch_size, stream=stream)
    result = {}
    step = start_step
    window = _RunningTotals()  # the train/ scalars: means over the steps since the last point

    def write_train_scalars():
        if window.examples:
            run_log.scalars(step, {**window.means(), "learning_rate": trainer.learning_rate()}, "train/")
        window.restart()

    def preempted():
        return Preempted(f"{stop.signal_name}: saved a checkpoint at step {step} in {checkpoint_dir}; "
                         "rerun the same command to resume.", stop.exit_code)

    try:
        stop.install()
        while step < total_steps:
            epoch = step // config.steps_per_epoch
            epoch_start, epoch_totals = time.perf_counter(), _RunningTotals()
            while step < (epoch + 1) * config.steps_per_epoch:
                boundary = min((epoch + 1) * config.steps_per_epoch, (step // config.checkpoint_steps + 1) * config.checkpoint_steps)
                steps = min(config.steps_per_loop, boundary - step)
                loop_start = time.perf_counter()
                loop_totals = trainer.train_steps(iterator, steps)
                seconds = time.perf_counter() - loop_start
                step += steps
                if not np.isfinite(loop_totals[0]):
                    raise TrainingDiverged(
                        f"loss became {loop_totals[0] / loop_totals[3]} at step {step}; stopped. The last good checkpoint "
                        f"({manager.latest_checkpoint or 'none'}) is kept: lower --learning_rate and rerun."
                    )
                compiled = step - steps > start_step  # the first loop of a run includes tracing and compiling
                for running in (epoch_totals, window):
                    running.add(loop_totals, seconds, compiled)
                means = epoch_totals.means()
                if chief:
                    progress.update(epoch, step - epoch * config.steps_per_epoch, means["loss"], means["top1"],
                                    means["images_per_sec"])
                epoch_done = step == (epoch + 1) * config.steps_per_epoch
                if step // config.log_steps > (step - steps) // config.log_steps and not epoch_done:
                    write_train_scalars()
                if (step % config.checkpoint_steps == 0 and not epoch_done) or stop.requested:
                    _save(manager, step)
                if stop.requested:
                    raise preempted()

            trainer.epoch.assign(epoch + 1)
            held_out = evaluate_held_out()
            dropped = config.lr_schedule == "plateau" and trainer.plateau.update(
                1.0 - held_out["top1"], chance_error=1.0 - chance.ceiling(held_out["examples"]))
            _save(manager, step)
            record = {
                "epoch": epoch + 1, "step": step, "learning_rate": trainer.learning_rate(),
                "train_loss": means["loss"], "train_top1": means["top1"], "train_top5": means["top5"],
                "val_loss": held_out["loss"], "val_top1": held_out["top1"], "val_top5": held_out["top5"],
                "val_examples": held_out["examples"], "images_per_sec": means["images_per_sec"],
                "seconds": time.perf_counter() - epoch_start,
            }
            run_log.epoch(record)
            write_train_scalars()
            run_log.scalars(step, {"loss": held_out["loss"], "top1": held_out["top1"], "top5": held_out["top5"]}, "val/")
            if chief:
                progress.end_epoch(
                    f"epoch {epoch + 1}/{config.epochs}: train loss {record['train_loss']:.4f} top-1 {record['train_top1']:.3f}; "
                    f"held-out loss {held_out['loss']:.4f} top-1 {held_out['top1']:.3f} top-5 {held_out['top5']:.3f} "
                    f"({held_out['examples']} images); {means['images_per_sec']:.1f} img/s"
                    + ("; learning rate divided by 10" if dropped else "")
                )
            chance.after_epoch(epoch + 1, held_out)
            result = {"step": step, "epoch": epoch + 1, **{f"val_{k}": v for k, v in held_out.items()}}
            if stop.requested and step < total_steps:  # arrived during the evaluation: the epoch's checkpoint is saved
                raise preempted()
        if not result:  # already trained to the end: evaluate what was restored
            held_out = evaluate_held_out()
            result = {"step": step, "epoch": config.epochs, **{f"val_{k}": v for k, v in held_out.items()}}
            say(f"already trained {step} steps; held-out top-1 {held_out['top1']:.3f}")
    finally:
        stop.uninstall()
        if lease:
            lease.release()
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)

    result["learned"] = not chance.at_chance(result["val_top1"], result["val_examples"])
    result["num_classes"], result["chance_ceiling"] = info.num_classes, chance.ceiling(result["val_examples"])
    if chief and config.export_dir and not (result["learned"] or config.export_at_chance):
        say(f"nothing exported: held-out top-1 {result['val_top1']:.3f} is within noise of chance, and a model that "
            "learned nothing must not replace a served one (--export_at_chance exports anyway)")
    elif chief and config.export_dir:
        result["export_path"] = export.export_saved_model(
            trainer.model, config.export_dir, class_names=list(info.class_names), image_size=config.image_size,
            mean_image=info.mean_rgb)
        say(f"exported SavedModel to {result['export_path']}")
    result["model"] = trainer.model
    return result


class ChanceWatch:
    """Tells a run that is not learning: held-out top-1 within noise of chance
    (`evaluation.chance_ceiling`). From CHANCE_WARNING_EPOCH on (or the warm-up's end, if later)
    such an epoch earns one warning line that names the flags to change."""

    def __init__(self, num_classes, config, say):
        self.num_classes = num_classes
        self.config = config
        self.say = say
        self.warned = False

    def ceiling(self, examples):
        return evaluation.chance_ceiling(self.num_classes, examples)

    def at_chance(self, top1, examples):
        return evaluation.at_chance(top1, self.num_classes, examples)

    def after_epoch(self, epoch, held_out):
        first = max(CHANCE_WARNING_EPOCH, math.ceil(self.config.warmup_epochs))
        if self.warned or epoch < first or not self.at_chance(held_out["top1"], held_out["examples"]):
            return
        self.warned = True
        self.say(f"warning: held-out top-1 {held_out['top1']:.3f} after {epoch} epochs is within noise of chance "
                 f"({evaluation.describe_chance(self.num_classes)}): the network is not learning. "
                 f"{self.fix()}")

    def fix(self):
        """The flags to change, for the recipe this run uses."""
        rate = self.config.learning_rate
        if self.config.optimizer == "sgd":
            return (f"Try --learning_rate={rate * 4:g} --warmup_epochs=1, or --optimizer=adam --learning_rate=5e-4 "
                    "--warmup_epochs=3; docs/recipes.md.")
        return f"Try --learning_rate={rate / 2:g} --warmup_epochs={self.config.warmup_epochs + 2:g}; docs/recipes.md."


class StopRequest:
    """SIGTERM (a preemption notice) or a first Ctrl-C asks the loop to checkpoint and stop after
    the current `steps_per_loop` steps; a second Ctrl-C stops at once, without a checkpoint
    (KeyboardInterrupt). Handlers are installed only in the main thread."""

    EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}

    def __init__(self, stream=None):
        self.stream = stream  # where the Ctrl-C notice goes (None: stderr)
        self.signum = None
        self._previous = {}

    @property
    def requested(self):
        return self.signum is not None

    @property
    def signal_name(self):
        return signal.Signals(self.signum).name

    @property
    def exit_code(self):
        return self.EXIT_CODES[self.signum]

    def _on_signal(self, signum, frame):
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum
        if signum == signal.SIGINT:
            print("Ctrl-C: saving a checkpoint after this step, then stopping (Ctrl-C again: stop without one).",
                  file=self.stream or sys.stderr, flush=True)

    def install(self):
        for signum in self.EXIT_CODES:
            try:
                self._previous[signum] = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def uninstall(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class _RunningTotals:
    """Training totals over an epoch or since the last TensorBoard point: mean loss, top-1, top-5
    and images/s (the first loop of a run, which traces and compiles, is left out of images/s
    when others follow)."""

    def __init__(self):
        self.restart()

    def restart(self):
        self.totals = np.zeros(4)  # summed [loss, top-1, top-5, examples] of train_steps
        self.timed = {True: [0.0, 0.0], False: [0.0, 0.0]}  # compiled or not: [examples, seconds]

    @property
    def examples(self):
        return self.totals[3]

    def add(self, loop_totals, seconds, compiled):
        self.totals += loop_totals
        self.timed[compiled][0] += float(loop_totals[3])
        self.timed[compiled][1] += seconds

    def means(self):
        loss, top1, top5, count = self.totals
        examples, seconds = self.timed[True] if self.timed[True][1] else self.timed[False]
        return {"loss": loss / count, "top1": top1 / count, "top5": top5 / count,
                "images_per_sec": examples / seconds if seconds else 0.0}


def _save(manager, step):
    try:
        manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as error:
        raise UsageError(
            f"could not write a checkpoint to {manager.directory} ({first_line(error)}): "
            "free disk space or choose another --model_dir; earlier checkpoints are intact."
        ) from None
