"""The training step of keras_alexnet.build() under Keras-JAX against PyTorch's AlexNet, on one
device, in one process, with the device's matmul rate measured in the same run.

    python scripts/peer_benchmark.py                     # GPU: bfloat16, batch 256, both engines
    python scripts/peer_benchmark.py --json              # one JSON object per engine
    python scripts/peer_benchmark.py --engines=torch --batch_size=4 --image_size=67   # a CPU smoke run

Needs JAX and PyTorch, not TensorFlow: `import keras_alexnet` and `build()` do not load it, and
this script sets KERAS_BACKEND=jax before Keras is imported. The engines:

    keras_jax   keras_alexnet.build(variant=--variant) in mixed_bfloat16, stepped by a jax.jit of
                Keras 3's stateless API (forward, backward, SGD with momentum 0.9 and weight decay
                5e-4): what a JAX user of this package gets.
    torch       torchvision's AlexNet layout (64/192/384/256/256 filters, written out here so that
                torchvision is not needed), channels_last, torch.autocast in bfloat16, the same
                SGD, eager (--torch_compile: torch.compile'd).

Each engine warms up (compiles), then times --runs runs of --steps steps on one batch already on
the device; medians are printed with the achieved TFLOP/s (3 x the forward FLOPs of the model's
convolutions and dense layers per image) and its fraction of a --matmul_size matmul's
TFLOP/s on the same device (--precision=float32: neither bfloat16 policy nor autocast, a float32
matmul). docs/performance.md, "GPU: Keras-JAX against PyTorch", says what was
measured with it.
"""

import json
import os
import statistics
import sys
import time

from absl import flags

import _cli as cli

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and PyTorch share the GPU's memory
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))  # keras_alexnet without installing

ENGINES = ("keras_jax", "torch")
flags.DEFINE_list("engines", list(ENGINES), "Which engines to time: keras_jax, torch.")
flags.DEFINE_enum("variant", "paper", ["paper", "one_column"], "keras_jax: the model (paper at 227, one_column is torchvision's layout).")
flags.DEFINE_integer("image_size", None, "Input side (default: 227 for paper, 224 for one_column and torch).")
flags.DEFINE_integer("batch_size", 256, "Images per step.")
flags.DEFINE_integer("steps", 20, "Timed steps per run.")
flags.DEFINE_integer("runs", 5, "Timed runs; medians are reported.")
flags.DEFINE_integer("warmup_steps", 3, "Steps before timing (compilation, autotuning).")
flags.DEFINE_integer("matmul_size", 8192, "Side of the square matmul (in --precision) that measures the ceiling.")
flags.DEFINE_enum("precision", "bfloat16", ["bfloat16", "float32"],
                  "bfloat16: Keras' mixed_bfloat16 policy and torch.autocast; float32: neither.")
flags.DEFINE_bool("torch_compile", False, "torch: time a torch.compile'd step instead of the eager one.")
flags.DEFINE_bool("json", False, "Print one JSON object per engine instead of a table.")
FLAGS = flags.FLAGS

NUM_CLASSES = 1000
LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4


def timed_runs(step, warmup_steps, steps, runs, synchronize):
    """Seconds per step of `runs` runs of `steps` calls of step(), after `warmup_steps` calls."""
    for _ in range(warmup_steps):
        step()
    synchronize()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize()
        seconds.append((time.perf_counter() - start) / steps)
    return seconds




# -- Keras on JAX ----------------------------------------------------------------------------------

def keras_jax_engine(batch_size, image_size, variant, precision):
    """(step, synchronize, forward FLOPs per image, device name) for keras_alexnet under JAX."""
    import jax
    import jax.numpy as jnp
    import keras

    import keras_alexnet
    from keras_alexnet.model import model_flops

    if keras.backend.backend() != "jax":
        cli.fail(f"KERAS_BACKEND is {keras.backend.backend()!r}: run this script with KERAS_BACKEND=jax (or unset).")
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        model = keras_alexnet.build(num_classes=NUM_CLASSES, input_shape=(image_size, image_size, 3), variant=variant, seed=0)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    optimizer = keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss_and_state(trainable, non_trainable, images, labels):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, images, training=True)
        return loss_fn(labels, logits), non_trainable

    gradient = jax.value_and_grad(loss_and_state, has_aux=True)

    @jax.jit
    def train_step(state, images, labels):
        trainable, non_trainable, optimizer_variables = state
        (loss, non_trainable), grads = gradient(trainable, non_trainable, images, labels)
        trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
        return loss, (trainable, non_trainable, optimizer_variables)

    key = jax.random.PRNGKey(0)
    images = jax.random.normal(key, (batch_size, image_size, image_size, 3), jnp.float32) * 60.0
    labels = jax.random.randint(key, (batch_size,), 0, NUM_CLASSES)
    state = [[v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables]]
    last = {}

    def step():
        loss, new_state = train_step(state, images, labels)
        state[:] = new_state
        last["loss"] = loss

    def synchronize():
        jax.block_until_ready(last.get("loss"))

    return step, synchronize, model_flops(model), str(jax.devices()[0].device_kind)


def jax_matmul_rate(size, precision):
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), jnp.bfloat16 if precision == "bfloat16" else jnp.float32)
    multiply = jax.jit(lambda x, y: x @ y)
    seconds = timed_runs(lambda: multiply(a, a).block_until_ready(), 2, 5, 3, lambda: None)
    return 2 * size ** 3 / statistics.median(seconds)


# -- PyTorch -------------------------------------------------------------------------------------

def torch_engine(batch_size, image_size, compile_step, precision):
    """(step, synchronize, forward FLOPs per image, device name) for torchvision's AlexNet layout."""
    import torch
    from torch import nn

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = nn.Sequential(  # torchvision.models.alexnet, layer for layer
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(256 * 36, 4096), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, NUM_CLASSES),
    ).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    loss_fn = nn.CrossEntropyLoss()
    images = (torch.randn(batch_size, 3, image_size, image_size, device=device) * 60.0).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()

    step = torch.compile(train_step) if compile_step else train_step
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return step, synchronize, _torch_flops(model, images[:1]), name


def _torch_flops(model, image):
    """Forward FLOPs per image counted as keras_alexnet.model.layer_flops counts them: 2 x kernel
    size x output positions of each convolution, 2 x kernel size of each linear layer."""
    import math

    import torch

    flops = []
    counted = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [m.register_forward_hook(lambda m, i, out: flops.append(
        2 * m.weight.numel() * (math.prod(out.shape[2:]) if isinstance(m, torch.nn.Conv2d) else 1))) for m in counted]
    with torch.no_grad():
        model(image)
    for hook in hooks:
        hook.remove()
    return sum(flops)


def torch_matmul_rate(size, precision):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.ones(size, size, device=device, dtype=torch.bfloat16 if precision == "bfloat16" else torch.float32)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    seconds = timed_runs(lambda: torch.matmul(a, a), 2, 5, 3, synchronize)
    return 2 * size ** 3 / statistics.median(seconds)


# -- main ----------------------------------------------------------------------------------------

def measure(engine):
    size = FLAGS.image_size or (227 if engine == "keras_jax" and FLAGS.variant == "paper" else 224)
    if engine == "keras_jax":
        step, synchronize, flops, device = keras_jax_engine(FLAGS.batch_size, size, FLAGS.variant, FLAGS.precision)
        matmul = jax_matmul_rate(FLAGS.matmul_size, FLAGS.precision)
        model = f"keras_alexnet {FLAGS.variant}, {'mixed_bfloat16' if FLAGS.precision == 'bfloat16' else 'float32'}, jax.jit"
    else:
        step, synchronize, flops, device = torch_engine(FLAGS.batch_size, size, FLAGS.torch_compile, FLAGS.precision)
        matmul = torch_matmul_rate(FLAGS.matmul_size, FLAGS.precision)
        model = (f"torchvision layout, {'autocast bfloat16' if FLAGS.precision == 'bfloat16' else 'float32'}, channels_last, "
                 f"{'torch.compile' if FLAGS.torch_compile else 'eager'}")
    seconds = timed_runs(step, FLAGS.warmup_steps, FLAGS.steps, FLAGS.runs, synchronize)
    rates = [FLAGS.batch_size / s for s in seconds]
    achieved = statistics.median(rates) * 3 * flops
    return {"engine": engine, "model": model, "device": device, "image_size": size, "batch_size": FLAGS.batch_size,
            "images_per_sec": statistics.median(rates), "images_per_sec_runs": rates,
            "gflop_per_image": 3 * flops / 1e9, "achieved_tflops": achieved / 1e12,
            "precision": FLAGS.precision, "matmul_tflops": matmul / 1e12, "ceiling_fraction": achieved / matmul}


def main(argv):
    unknown = sorted(set(FLAGS.engines) - set(ENGINES))
    if unknown or not FLAGS.engines:
        cli.fail(f"--engines: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(ENGINES)}.")
    for name in ("batch_size", "steps", "runs", "matmul_size"):
        if FLAGS[name].value < 1:
            cli.fail(f"--{name}={FLAGS[name].value} must be at least 1.")
    results = [measure(engine) for engine in FLAGS.engines]
    for result in results:
        if FLAGS.json:
            print(json.dumps(result))
        else:
            rates = result["images_per_sec_runs"]
            print(f"{result['engine']:<10} {result['device']}: {result['model']}, S={result['image_size']}, batch {result['batch_size']}: "
                  f"{result['images_per_sec']:.1f} images/s [{min(rates):.1f}-{max(rates):.1f}], "
                  f"{result['achieved_tflops']:.3f} TFLOP/s, {result['ceiling_fraction']:.3f} of the {result['precision']} matmul "
                  f"({result['matmul_tflops']:.3f} TFLOP/s)")
    if len(results) == 2 and not FLAGS.json:
        print(f"keras_jax / torch: x{results[0]['images_per_sec'] / results[1]['images_per_sec']:.2f} images/s")
    return 0


if __name__ == "__main__":
    cli.run(main, keras_backend=None)  # Keras-JAX, set above
