"""The training engine: one custom loop for every tf.distribute strategy (§5's recipe).

Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy and with steps_per_execution > 1 on
several replicas (docs/platform.md), so this is the loop of TensorFlow's official models:
datasets built per input pipeline with `distribute_datasets_from_function`, an outer
`tf.function` that runs `steps_per_loop` steps of `strategy.run(replica_step)`, the loss averaged
over the *global* batch, and (with XLA) the per-replica forward and backward compiled; the
optimizer update is compiled separately on a single device and stays uncompiled across devices
(where it all-reduces in a merge call; compiling it there fails on logical devices). Progress,
checkpoints, evaluation and the schedule run in Python between loops.
"""

import contextlib
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
# Private: the registry tf.custom_gradient adds to (see forgetting_traced_gradients).
from tensorflow.python.framework.ops import _gradient_registry as _GRADIENT_REGISTRY

from keras_alexnet import augment, checkpoints, data, distribute, evaluation, export, finetune, optimization, run_config, run_lease
from keras_alexnet.errors import UsageError, counted, first_line, require_tensorflow_backend
from keras_alexnet.logs import Progress, ProfileWindow, RunLog
from keras_alexnet.model import min_input_size
from keras_alexnet.run_config import TrainConfig, check_config, check_resume, resolve, start_from  # noqa: F401 (TrainConfig: importable from here too)

class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Preempted(RuntimeError):
    """SIGTERM, SIGHUP or Ctrl-C (SIGINT) arrived; a checkpoint was saved and the same command
    resumes from it. `exit_code` is the shell's for that signal: 143 for SIGTERM, 129 for SIGHUP,
    130 for SIGINT."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


# The exit code of scripts/train.py for a run whose held-out top-1 ended within noise of chance.
NOT_LEARNED_EXIT_CODE = 3
# From this epoch on, a held-out top-1 still within noise of chance is warned about (once): every
# recipe here has left its flat start by then on the data measured (docs/recipes.md).
CHANCE_WARNING_EPOCH = 3


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

    @property
    def scales_loss(self):
        """Whether the optimizer scales the loss (mixed_float16's dynamic loss scaling)."""
        return isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)

    def _make_forward_backward(self):
        """The replica's forward and backward: (gradients, statistics) of a batch, XLA-compiled
        with --xla (not on TPUs, whose whole step is compiled anyway)."""
        model, optimizer, config, scales_loss = self.model, self.optimizer, self.config, self.scales_loss

        def forward_backward(images, labels):
            if isinstance(images, tuple):  # uint8 crops and lighting shifts (data.make_dataset)
                images = augment.finish_views(*images)  # on the device; under XLA fused into conv1's input
            with tf.GradientTape() as tape:
                logits = tf.cast(model(images, training=True), tf.float32)
                per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(labels, tf.int32), logits)
                # The replica's share of the global batch's mean, as tf.nn.compute_average_loss computes
                # it, without the Assert ops on the batch size that it adds and XLA logs as ignored.
                loss = tf.reduce_sum(per_example) / config.batch_size
                if model.losses:  # the coupled weight decay (§5), once per global step
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                scaled_loss = optimizer.scale_loss(loss) if scales_loss else loss
            gradients = tape.gradient(scaled_loss, model.trainable_variables)
            return gradients, self._statistics(logits, labels, per_example)

        if config.xla and not isinstance(self.strategy, tf.distribute.TPUStrategy):
            return tf.function(forward_backward, jit_compile=True)
        return forward_backward

    def _make_apply(self):
        """The optimizer's update of the gradients, XLA-compiled with --xla on a single device."""
        model, optimizer = self.model, self.optimizer

        def apply(gradients):
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))

        # Keras runs SGD's momentum update as separate elementwise passes over every weight, which
        # XLA fuses (docs/performance.md). Not across devices, where the update first all-reduces
        # in a merge call, nor with loss scaling.
        if self.config.xla and distribute.is_single_device(self.strategy) and not self.scales_loss:
            return tf.function(apply, jit_compile=True)
        return apply

    def _make_train_loop(self):
        forward_backward, apply = self._make_forward_backward(), self._make_apply()
        multiplier = self.config.classifier_lr_multiplier or 1.0
        multipliers = finetune.gradient_multipliers(self.model, multiplier) if multiplier != 1.0 else None

        def replica_step(images, labels):
            gradients, statistics = forward_backward(images, labels)
            if multipliers:  # Caffe's lr_mult for a new fc8 (finetune.gradient_multipliers)
                gradients = [g if m == 1.0 else g * m for g, m in zip(gradients, multipliers)]
            apply(gradients)
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
    Preempted after SIGTERM, SIGHUP or Ctrl-C (after keeping the last good checkpoint).
    The chief holds model_dir's lease (keras_alexnet.run_lease) while it trains: UsageError when
    another live run holds it. Resuming skips unreadable checkpoints (checkpoints.restore_newest_readable).
    The global Keras dtype policy is set to the run's precision while it trains, and put back after.
    What the run traced is released when it returns (`forgetting_traced_gradients`): calling
    train() again and again in one process (a notebook, a sweep) keeps only the models returned.

    TensorBoard (model_dir/logs): train/ loss, top1, top5, learning_rate and images_per_sec,
    each the mean over the steps since the previous point, every `log_steps` steps and at each
    epoch end; val/ loss, top1 and top5 at each epoch end.
    """
    require_tensorflow_backend("keras_alexnet.training.train")
    check_config(config)
    if config.data_service:
        data.check_dispatcher(config.data_service)  # before any work: tf.data waits for it silently
    config = run_config.absolute_paths(config)
    if strategy is None:
        strategy = distribute.get_strategy(config.strategy, tpu=config.tpu, num_gpus=config.num_gpus, stream=stream)
    info = data.dataset_info(config.dataset, data_dir=config.data_dir, manual_dir=config.manual_dir)
    # Both splits must hold an image that decodes; any input size tells (the run's is not chosen yet).
    data.check_readable(config.dataset, min_input_size(), data_dir=config.data_dir, manual_dir=config.manual_dir)
    config, pretrained = finetune.for_run(config)
    config = resolve(start_from(config, pretrained, info), strategy, info)
    if distribute.device_kind() == "cpu":
        run_config.check_fits_in_memory(config, info.num_classes, run_config.host_memory_bytes())
    run_config.check_output_folders(config)
    check_resume(config, info.num_classes, info.class_names)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        with forgetting_traced_gradients():
            run = _Run(config, strategy, info, pretrained, stream)
            try:
                result = None
                while run.step < run.total_steps:
                    result = run.end_epoch(*run.train_one_epoch())
                if result is None:  # already trained to the end: evaluate what was restored
                    result = run.evaluate_restored()
            finally:
                run.close()  # the lease is released before the export, as the run has ended
            return run.finish(result)
    finally:
        keras.mixed_precision.set_global_policy(policy)


@contextlib.contextmanager
def forgetting_traced_gradients():
    """Drop, on leaving, the gradient functions that tf.custom_gradient registered inside.

    Tracing a training step registers one for every graph-mode tf.custom_gradient call
    (ReplicaContext.all_reduce, which Keras' optimizer calls, is one) in a global registry that
    is never pruned, and each holds the traced graph and through it the model's and optimizer's
    variables: every `train` call kept ~0.3 GB at 67 px for the life of the process (a notebook,
    a sweep, the test suite; tensorflow/tensorflow#27492). A traced step computes its gradients
    at trace time, so once it is done nothing looks them up. (Entries another thread added
    meanwhile would go too; like the dtype policy train() sets, this is process-wide state, and
    two runs do not share a process at once.)
    """
    before = _custom_gradient_names()
    try:
        yield
    finally:
        for name in _custom_gradient_names() - before:
            _GRADIENT_REGISTRY._registry.pop(name, None)


def _custom_gradient_names():
    """The names in TensorFlow's global gradient registry that tf.custom_gradient added."""
    return {name for name in _GRADIENT_REGISTRY.list() if name.startswith("CustomGradient-")}


class _Run:
    """One call of `train`: the Trainer, its checkpoints and logs, the data, and the steps of the
    loop (`train_one_epoch`, `end_epoch`, `finish`). Only the chief writes and prints."""

    def __init__(self, config, strategy, info, pretrained, stream):
        self.config, self.strategy, self.info, self.stream = config, strategy, info, stream
        self.chief = distribute.is_chief(strategy)
        self.lease = run_lease.acquire(config.model_dir, stream=stream) if self.chief else None  # one run per model_dir
        try:
            self._start(pretrained)
        except BaseException:
            if self.lease:
                self.lease.release()
            raise

    def _start(self, pretrained):
        config, strategy, info, stream = self.config, self.strategy, self.info, self.stream
        self.trainer = Trainer(config, strategy, info.num_classes)
        self.checkpoint_dir = checkpoints.checkpoint_dir(config.model_dir)
        restored = checkpoints.restore_newest_readable(self.trainer.checkpoint, config.model_dir, move_aside=self.chief, say=self.say)
        if restored:
            self.say(f"resumed from {restored} at step {int(self.trainer.step.numpy())}")
        elif pretrained:
            finetune.load(self.trainer.model, pretrained, self.say)
        self.write_dir = self.checkpoint_dir if self.chief else tempfile.mkdtemp(prefix=f"alexnet_{distribute.worker_id(strategy)}_")
        self.manager = tf.train.CheckpointManager(self.trainer.checkpoint, self.write_dir, max_to_keep=config.keep_checkpoints)
        self.start_step = self.step = int(self.trainer.step.numpy())
        self.total_steps = config.epochs * config.steps_per_epoch
        if self.chief:
            self.write_config(restored)
        self.run_log = RunLog(os.path.join(config.model_dir, checkpoints.HISTORY_FILE),
                              os.path.join(config.model_dir, checkpoints.LOG_DIR), enabled=self.chief)
        # Training batches come as uint8 crops that forward_backward finishes on the device; on TPUs,
        # whose infeed of uint8 is not tested here, as float32 views made on the host.
        image_dtype = "float32" if isinstance(strategy, tf.distribute.TPUStrategy) else "uint8"
        self.iterator = iter(strategy.distribute_datasets_from_function(
            _dataset_fn(config, "train", True, config.seed + self.start_step, image_dtype)))
        self.eval_fn = _dataset_fn(config, "validation", False, config.seed)
        self.evaluator = evaluation.Evaluator(evaluation.model_probabilities(self.trainer.model), strategy)
        self.label_predictions = None  # none evaluated yet (a finished run rerun evaluates nothing)
        self.say_header()
        self.chance = ChanceWatch(info.num_classes, config, self.say)
        data.BAD_IMAGES.reset()  # this run's skips, said at each epoch's end (say_skipped_images)
        self.skipped_said = 0
        self.drawing_failed = False
        self.stop = StopRequest(stream)
        self.stop.install()
        self.progress = Progress(config.steps_per_epoch, config.epochs, config.batch_size, stream=stream)
        self.window = _RunningTotals()  # the train/ scalars: means over the steps since the last point
        self.profile = ProfileWindow(run_config.profile_window(config.profile_steps) if self.chief else None,
                                     os.path.join(config.model_dir, checkpoints.LOG_DIR), self.say)

    def write_config(self, restored):
        """config.json: the run's settings. A resumed run whose settings differ says so in one
        line and keeps the earlier ones under "earlier_settings" with the step they ended at; a
        run that has already trained to its end keeps its config.json (the new settings would
        apply to no step)."""
        config, info, strategy = self.config, self.info, self.strategy
        current = {
            **config.to_json(), "num_classes": info.num_classes, "class_names": list(info.class_names),
            "mean_rgb": info.mean_rgb,  # None: the ImageNet mean; else the dataset's (tfrecord:DIR?mean=channel)
            "num_replicas": strategy.num_replicas_in_sync, "strategy_class": type(strategy).__name__,
        }
        try:
            previous = checkpoints.read_config(config.model_dir) if restored else {}
        except FileNotFoundError:
            previous = {}
        changes = run_config.setting_changes(previous, current)
        listed = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changes.items())
        if changes and self.step >= self.total_steps:
            self.say(f"warning: this run has already trained its {self.step} steps, so the changed settings ({listed}) "
                     "apply to no step; config.json keeps the run's own (train with them in a new --model_dir)")
            return
        current["earlier_settings"] = previous.get("earlier_settings", [])
        current["exports"] = previous.get("exports", [])
        if changes:
            self.say(f"warning: resuming at step {self.step} with settings that differ from the run so far: {listed}; "
                     "they apply from this step on (config.json keeps the earlier ones under earlier_settings)")
            current["earlier_settings"].append({"until_step": self.step, **{key: old for key, (old, _) in changes.items()}})
        checkpoints.write_config(config.model_dir, current)

    def say(self, message):
        if self.chief:
            print(message, file=self.stream, flush=True)

    def say_header(self):
        config, info, strategy = self.config, self.info, self.strategy
        self.say(f"training {config.variant} AlexNet ({self.trainer.model.count_params():,} parameters) on {config.dataset} "
                 f"({info.num_examples['train']} train / {info.num_examples.get('validation', 0)} held-out, {info.num_classes} classes), "
                 f"{distribute.strategy_name(strategy)} x{strategy.num_replicas_in_sync}, {config.precision}, XLA {'on' if config.xla else 'off'}, "
                 f"image {config.image_size}, batch {config.batch_size}, lr {config.learning_rate:g} ({config.lr_schedule}), "
                 f"{counted(config.epochs, 'epoch')} x {config.steps_per_epoch} steps")
        self.say(f"recipe {config.recipe} ({config.recipe_reason}): {config.optimizer}, warm-up "
                 f"{counted(float(config.warmup_epochs), 'epoch')}, weight decay {config.weight_decay:g}, dropout {config.dropout:g}; "
                 "flags given win")
        for note in info.notes:
            self.say(note)
        if config.data_service:  # with no worker registered, the first batch waits without a word
            self.say(f"input from the tf.data service at {config.data_service}: the first step waits until one of its "
                     "workers has registered with the dispatcher (docs/input.md)")
        if config.precision == "mixed_float16" and distribute.device_kind() == "cpu":
            self.say("warning: mixed_float16 on a CPU is slower than float32 (CPUs have no float16 arithmetic units; "
                     "docs/performance.md): leave --precision unset for float32, or use --precision mixed_bfloat16 on a "
                     "CPU with AVX512-BF16 or AMX")

    def train_one_epoch(self):
        """Train to the end of the current epoch in loops of `steps_per_loop` steps, with progress,
        train/ scalars and checkpoints every `checkpoint_steps`; returns (epoch, its means, its start time)."""
        config = self.config
        epoch = self.step // config.steps_per_epoch
        epoch_end = (epoch + 1) * config.steps_per_epoch
        epoch_start, epoch_totals = time.perf_counter(), _RunningTotals()
        while self.step < epoch_end:
            next_checkpoint = (self.step // config.checkpoint_steps + 1) * config.checkpoint_steps
            steps = min(config.steps_per_loop, epoch_end - self.step, next_checkpoint - self.step,
                        self.profile.steps_until_boundary(self.step) or config.steps_per_loop)
            self.profile.before_loop(self.step)
            loop_start = time.perf_counter()
            loop_totals = self.trainer.train_steps(self.iterator, steps)
            seconds = time.perf_counter() - loop_start
            self.step += steps
            self.profile.after_loop(self.step)
            if not np.isfinite(loop_totals[0]):
                raise TrainingDiverged(
                    f"loss became {loop_totals[0] / loop_totals[3]} at step {self.step}; stopped. The last good checkpoint "
                    f"({self.manager.latest_checkpoint or 'none'}) is kept: lower --learning_rate and rerun.")
            compiled = self.step - steps > self.start_step  # the first loop of a run includes tracing and compiling
            for running in (epoch_totals, self.window):
                running.add(loop_totals, seconds, compiled)
            means = epoch_totals.means()
            if self.chief:
                self.progress.update(epoch, self.step - epoch * config.steps_per_epoch, means["loss"], means["top1"],
                                     means["images_per_sec"] if compiled else None)
            epoch_done = self.step == epoch_end
            if self.step // config.log_steps > (self.step - steps) // config.log_steps and not epoch_done:
                self.write_train_scalars()
            if (self.step % config.checkpoint_steps == 0 and not epoch_done) or self.stop.requested:
                _save(self.manager, self.step)
            if self.stop.requested:
                raise self.preempted()
        return epoch, means, epoch_start

    def evaluate(self):
        metrics = self.evaluator(self.eval_fn)
        self.label_predictions = metrics["label_predictions"]  # the last evaluation's, for `finish`
        return {"loss": metrics["loss"], "top1": metrics["top1_accuracy"], "top5": metrics["top5_accuracy"],
                "examples": metrics["num_examples"], "majority_share": metrics["majority_share"]}

    def end_epoch(self, epoch, means, epoch_start):
        """Evaluate, let the plateau schedule see the error, checkpoint, log and print the epoch;
        returns the run's result so far."""
        self.trainer.epoch.assign(epoch + 1)
        held_out = self.evaluate()
        dropped = self.config.lr_schedule == "plateau" and self.trainer.plateau.update(
            1.0 - held_out["top1"], chance_error=1.0 - self.chance.ceiling(held_out["examples"], held_out["majority_share"]))
        _save(self.manager, self.step)
        record = {
            "epoch": epoch + 1, "step": self.step, "learning_rate": self.trainer.learning_rate(),
            "train_loss": means["loss"], "train_top1": means["top1"], "train_top5": means["top5"],
            "val_loss": held_out["loss"], "val_top1": held_out["top1"], "val_top5": held_out["top5"],
            "val_examples": held_out["examples"], "val_majority_share": held_out["majority_share"],
            "images_per_sec": means["images_per_sec"],
            "seconds": time.perf_counter() - epoch_start,
        }
        self.draw_curves(self.run_log.epoch(record))
        self.write_train_scalars()
        self.run_log.scalars(self.step, {"loss": held_out["loss"], "top1": held_out["top1"], "top5": held_out["top5"]}, "val/")
        if self.chief:
            top5 = top5_text(held_out["top5"], self.info.num_classes)
            self.progress.end_epoch(
                f"epoch {epoch + 1}/{self.config.epochs}: train loss {record['train_loss']:.4f} top-1 {record['train_top1']:.3f}; "
                f"held-out loss {held_out['loss']:.4f} top-1 {held_out['top1']:.3f}{top5} "
                f"({held_out['examples']} images); {means['images_per_sec']:.1f} img/s"
                + ("; learning rate divided by 10" if dropped else ""))
        self.chance.after_epoch(epoch + 1, held_out)
        self.say_skipped_images(held_out["examples"])
        if self.stop.requested and self.step < self.total_steps:  # arrived during the evaluation: the epoch's checkpoint is saved
            raise self.preempted()
        return self._result(epoch + 1, held_out)

    def draw_curves(self, history):
        """model_dir/history.png: the run's loss, errors and rate per epoch (figures.plot_history)
        from `history`, the records of history.jsonl, redrawn after every epoch (0.15 s here)."""
        from keras_alexnet import figures  # matplotlib: loaded only by a run that draws

        self._draw(checkpoints.CURVES_FILE, lambda path: figures.plot_history(
            figures.epoch_records(history), path, title=f"{self.config.model_dir}: {self.config.dataset}",
            num_classes=self.info.num_classes))

    def _draw(self, file_name, plot):
        """model_dir/file_name drawn by plot(local path) and swapped in whole (model_dir may be
        gs://). A drawing that fails says so once and never stops the run."""
        if not self.chief or self.drawing_failed:
            return
        path = os.path.join(self.config.model_dir, file_name)
        try:
            with tempfile.TemporaryDirectory() as scratch:
                drawn = plot(os.path.join(scratch, file_name))
                tf.io.gfile.copy(drawn, path + ".tmp", overwrite=True)
                tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
        except (UsageError, OSError, ValueError, tf.errors.OpError) as error:
            self.drawing_failed = True
            self.say(f"warning: could not draw {path} ({first_line(error)}); training goes on without it")

    def say_skipped_images(self, held_out_examples):
        """One line at an epoch's end when files that are not readable images were skipped since the
        last: they are out of training and of the held-out figures (data.BAD_IMAGES)."""
        skipped = len(data.BAD_IMAGES.names)
        if skipped <= self.skipped_said:
            return
        self.skipped_said = skipped
        expected = self.info.num_examples.get("validation")
        counted = ""
        if expected and held_out_examples < expected:
            counted = f"; the held-out figures count {held_out_examples} of {expected} images"
        self.say(f"warning: {data.BAD_IMAGES.summary()}{counted}: {data.BAD_IMAGES.fix()}")

    def evaluate_restored(self):
        held_out = self.evaluate()
        self.say(f"already trained {self.step} steps; held-out top-1 {held_out['top1']:.3f}")
        return self._result(self.config.epochs, held_out)

    def _result(self, epoch, held_out):
        return {"step": self.step, "epoch": epoch, **{f"val_{k}": v for k, v in held_out.items()}}

    def write_train_scalars(self):
        if self.window.examples:
            self.run_log.scalars(self.step, {**self.window.means(), "learning_rate": self.trainer.learning_rate()}, "train/")
        self.window.restart()

    def preempted(self):
        return Preempted(f"{self.stop.signal_name}: saved a checkpoint at step {self.step} in {self.checkpoint_dir}; "
                         "rerun the same command to resume.", self.stop.exit_code)

    def close(self):
        self.profile.stop(self.step)
        self.stop.uninstall()
        if self.lease:
            self.lease.release()
        if not self.chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)

    def finish(self, result):
        """Whether the run learned, and the export (none for a run at chance unless export_at_chance)."""
        config, info = self.config, self.info
        result["learned"] = not self.chance.at_chance(result["val_top1"], result["val_examples"], result["val_majority_share"])
        result["num_classes"] = info.num_classes
        result["chance_ceiling"] = self.chance.ceiling(result["val_examples"], result["val_majority_share"])
        if not result["learned"]:
            self.chance.at_end(config.epochs)
        elif self.chief and self.label_predictions:
            self.say_weakest_classes()
        if self.chief and config.export_dir and not (result["learned"] or config.export_at_chance):
            self.say(f"nothing exported: held-out top-1 {result['val_top1']:.3f} is within noise of chance, and a model that "
                     "learned nothing must not replace a served one (--export_at_chance exports anyway)")
        elif self.chief and config.export_dir:
            earlier = self._earlier_export()
            if earlier:
                result["export_path"] = earlier
                self.say(f"already exported at step {self.step}: {earlier} (scripts/export.py --model_dir "
                         f"{config.model_dir} writes another version)")
            else:
                result["export_path"] = self._export()
                self._record_export(result["export_path"])
                self.say(f"exported SavedModel to {result['export_path']}")
                note = export.leftover_note(config.export_dir)
                if note:
                    self.say(note)
        result["model"] = self.trainer.model
        return result

    def say_weakest_classes(self):
        """One line naming the weakest held-out classes of the last evaluation, and its confusion
        matrix drawn to model_dir/confusion.png (figures.plot_confusion)."""
        from keras_alexnet import figures

        names = list(self.info.class_names)
        matrix = evaluation.confusion_matrix(self.label_predictions, self.info.num_classes)
        # Each worker pairs the labels it read: across machines, the chief's share only.
        share = " (this worker's share)" if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy) else ""
        self.say(f"weakest held-out classes{share}: {evaluation.describe_weakest(evaluation.weakest_classes(matrix, names))} "
                 f"(all: {os.path.join(self.config.model_dir, checkpoints.CONFUSION_FILE)})")
        self._draw(checkpoints.CONFUSION_FILE, lambda path: figures.plot_confusion(
            matrix, names, path, title=f"{self.config.model_dir}: held-out, step {self.step}"))

    def _earlier_export(self):
        """The version this run already exported at this step into --export_dir, if it still
        exists: rerunning a finished command (a retried pipeline) wrote the same model again as a
        new version each time, 80-240 MB apiece."""
        if self.step != self.start_step:
            return None
        exports = checkpoints.read_config(self.config.model_dir).get("exports", [])
        base = os.path.normpath(self.config.export_dir)
        for entry in reversed(exports):
            path = entry.get("path", "")
            same_place = os.path.normpath(os.path.dirname(path)) == base
            if entry.get("step") == self.step and same_place and tf.io.gfile.exists(path):
                return path
        return None

    def _record_export(self, path):
        """config.json's "exports": each version this run wrote, with the step it holds."""
        config = checkpoints.read_config(self.config.model_dir)
        config["exports"] = config.get("exports", []) + [{"step": self.step, "path": path}]
        checkpoints.write_config(self.config.model_dir, config)


    def _export(self):
        config, info = self.config, self.info
        try:
            return export.export_saved_model(self.trainer.model, config.export_dir, class_names=list(info.class_names),
                                             image_size=config.image_size, mean_image=info.mean_rgb)
        except UsageError as error:  # a full disk, a folder made read-only during the run
            raise UsageError(f"{error}; the trained model is in the checkpoints of {config.model_dir}: export it with "
                             f"scripts/export.py --model_dir {config.model_dir} --export_dir FOLDER.") from None


def top5_text(top5, num_classes, digits=3):
    """' top-5 0.934' for the result lines; '' with 5 classes or fewer, where top-5 is always 1."""
    return f" top-5 {top5:.{digits}f}" if num_classes > 5 else ""


class ChanceWatch:
    """Tells a run that is not learning: held-out top-1 within noise of chance
    (`evaluation.chance_ceiling`). From CHANCE_WARNING_EPOCH on (or the warm-up's end, if later)
    such an epoch earns one warning line that names the flags to change."""

    def __init__(self, num_classes, config, say):
        self.num_classes = num_classes
        self.config = config
        self.say = say
        self.warned = False
        self.told_small = False  # the held-out set is too small to tell (said once)

    def ceiling(self, examples, majority_share):
        return evaluation.chance_ceiling(self.num_classes, examples, majority_share)

    def at_chance(self, top1, examples, majority_share):
        return evaluation.at_chance(top1, self.num_classes, examples, majority_share)

    def after_epoch(self, epoch, held_out):
        if not self.told_small and not evaluation.can_tell(self.num_classes, held_out["examples"], held_out["majority_share"]):
            self.told_small = True
            self.say(f"warning: {held_out['examples']} held-out images are too few to tell learning from chance "
                     f"({evaluation.describe_chance(self.num_classes, held_out['majority_share'])}): even 100% top-1 would be "
                     "within noise, so this run cannot tell a model that learned nothing; add held-out images")
        if self.warned or epoch < self.first_warning_epoch() or not self.at_chance(held_out["top1"], held_out["examples"], held_out["majority_share"]):
            return
        self.warned = True
        self.say(f"warning: held-out top-1 {held_out['top1']:.3f} after {epoch} epochs is within noise of chance "
                 f"({evaluation.describe_chance(self.num_classes, held_out['majority_share'])}): the network is not learning. "
                 f"{self.fix()}")

    def first_warning_epoch(self):
        """CHANCE_WARNING_EPOCH, or the end of the warm-up if later: no verdict before the rate is up."""
        return max(CHANCE_WARNING_EPOCH, math.ceil(self.config.warmup_epochs))

    def at_end(self, epochs):
        """A run that ends at chance before its warning epoch (a short trial run) is told that it was
        too short to tell, since the optimizer's flags are not what it needs."""
        first = self.first_warning_epoch()
        if self.warned or epochs >= first:
            return
        self.warned = True
        warmup = self.config.warmup_epochs
        warmup = f" (warm-up {counted(float(warmup), 'epoch')})" if warmup else ""
        self.say(f"warning: {counted(epochs, 'epoch')} is too short to tell whether the network learns"
                 f"{warmup}: train for longer, e.g. --epochs={max(15, 3 * first)}; docs/recipes.md.")

    def fix(self):
        """The flags to change, for the recipe this run uses."""
        rate = self.config.learning_rate
        if self.config.optimizer == "sgd":
            return (f"Try --learning_rate={rate * 4:g} --warmup_epochs=1, or --optimizer=adam --learning_rate=5e-4 "
                    "--warmup_epochs=3; docs/recipes.md.")
        return f"Try --learning_rate={rate / 2:g} --warmup_epochs={self.config.warmup_epochs + 2:g}; docs/recipes.md."


class StopRequest:
    """SIGTERM (a preemption notice), SIGHUP (the terminal that started the run was closed) or a
    first Ctrl-C asks the loop to checkpoint and stop after the current `steps_per_loop` steps; a
    second Ctrl-C stops at once, without a checkpoint (KeyboardInterrupt). Handlers are installed
    only in the main thread. Exit codes: 128 + the signal's number, as a shell reports it."""

    EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130, **({signal.SIGHUP: 129} if hasattr(signal, "SIGHUP") else {})}

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
        _remove_failed_save(manager.directory, step)
        newest = manager.latest_checkpoint
        kept = (f"the newest checkpoint, {os.path.basename(newest)}, is intact and a rerun resumes from it" if newest
                else "no checkpoint was kept before this one")
        raise UsageError(
            f"could not write a checkpoint to {manager.directory} ({first_line(error)}): "
            f"free disk space or choose another --model_dir; {kept}."
        ) from None


def _remove_failed_save(directory, step):
    """Delete what a failed save left: TensorFlow writes a checkpoint into ckpt-<step>_temp/ and
    renames it at the end, so after a full disk that folder holds up to a checkpoint's size and
    would keep the disk full. Nothing else is touched: earlier checkpoints stay as they were."""
    for path in tf.io.gfile.glob(os.path.join(directory, f"ckpt-{step}_temp*")):
        try:
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
        except (OSError, tf.errors.OpError):
            pass  # the error the user sees is the failed save's, not this one
