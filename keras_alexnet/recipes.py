"""Training recipes: what the settings a user leaves unset mean.

    paper       §5 as published: SGD with momentum 0.9, lr 0.01 at batch 128 (scaled linearly
                with the global batch), divided by 10 when the held-out error stops improving,
                coupled weight decay 5e-4, 227x227 input, batch 128, 90 epochs. What ImageNet
                needs, and what a dataset of 100,000 training images or more gets.
    small_data  for the datasets people train from scratch and experiment on (under 100,000
                images): the paper's SGD at its unscaled rate 0.01, batch 32, one warm-up epoch,
                cosine decay. The paper's rate scaled down to a small batch (0.0025 at 32) leaves
                Caffe's initialization on a flat start, and a plateau schedule then cut the rate
                before anything was learned; docs/recipes.md has the runs behind it.
    demo        the built-in shapes data within 10 minutes on a 2-core CPU: 67 px (the smallest
                input the net takes), batch 32, 10 epochs, Adam 5e-4 with 3 warm-up epochs, no
                dropout (in 10 epochs the net underfits the shapes; dropout only slows it).
    finetune    a run started from --weights (keras_alexnet.finetune): Caffe's fine-tuning rates
                (SGD 0.001, a new fc8 at 10x), no warm-up, cosine, batch 32, 10 epochs; the input
                size is the weight file's. docs/finetune.md.

`--recipe auto` (the default) picks finetune with --weights, demo for `shapes`, paper for 100,000 training images or more,
small_data otherwise. Any setting given explicitly wins over the recipe. The chosen recipe and the
reason are printed in the run's header and kept in config.json (`recipe`, `recipe_reason`).
"""

import dataclasses

RECIPES = ("auto", "paper", "small_data", "demo", "finetune")
# At ImageNet's scale (1.28M images) the paper's recipe is the reference; under this many training
# images a run is short in steps and the small-data recipe applies.
LARGE_DATASET = 100_000
# The settings a recipe decides (TrainConfig fields that default to None).
FIELDS = ("image_size", "batch_size", "epochs", "optimizer", "learning_rate", "lr_schedule", "warmup_epochs",
          "weight_decay", "dropout")


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    image_size: int
    batch_size: int
    epochs: int
    optimizer: str
    learning_rate: float  # None: the paper's 0.01 x global batch / 128 (run_config.resolve)
    lr_schedule: str
    warmup_epochs: float
    weight_decay: float
    dropout: float = 0.5  # after fc6 and fc7 (§4.2)


PAPER = Recipe("paper", image_size=227, batch_size=128, epochs=90, optimizer="sgd", learning_rate=None,
               lr_schedule="plateau", warmup_epochs=0.0, weight_decay=5e-4)
# The paper's SGD, momentum and coupled decay, at the paper's rate without the linear scaling down
# to a small batch, one warm-up epoch, and a cosine decay that ends at 0 whatever the run's length.
SMALL_DATA = Recipe("small_data", image_size=227, batch_size=32, epochs=30, optimizer="sgd", learning_rate=0.01,
                    lr_schedule="cosine", warmup_epochs=1.0, weight_decay=5e-4)
# Adam: on the shapes data it leaves the flat start within two epochs where SGD needs four, which a
# 10-minute budget cannot spare; three warm-up epochs keep every seed's ReLUs alive. No dropout:
# the paper's 0.5 fights ImageNet's overfitting, while after 10 epochs of shapes the net still
# confuses circles and hexagons on its own training images (it underfits), so dropout only slows
# the learning (docs/recipes.md).
DEMO = Recipe("demo", image_size=67, batch_size=32, epochs=10, optimizer="adam", learning_rate=5e-4,
              lr_schedule="cosine", warmup_epochs=3.0, weight_decay=0.0, dropout=0.0)
# From pretrained weights (--weights): Caffe's fine-tuning rate (finetune_flickr_style: base 0.001,
# the new fc8 10x), no warm-up (the features are already there), cosine. The input size comes from
# the weight file (keras_alexnet.finetune.configure); 227 only when the recipe is named without one.
FINETUNE = Recipe("finetune", image_size=227, batch_size=32, epochs=10, optimizer="sgd", learning_rate=0.001,
                  lr_schedule="cosine", warmup_epochs=0.0, weight_decay=5e-4)
_BY_NAME = {recipe.name: recipe for recipe in (PAPER, SMALL_DATA, DEMO, FINETUNE)}


def choose(name, dataset, num_train_examples, weights=None):
    """(Recipe, reason): the named recipe, or for "auto" the one that fits the start and the dataset."""
    if name != "auto":
        return _BY_NAME[name], f"--recipe={name}"
    if weights:
        return FINETUNE, f"starts from --weights={weights}"
    if dataset.split(":")[0] == "shapes":
        return DEMO, "the built-in shapes data"
    if num_train_examples >= LARGE_DATASET:
        return PAPER, f"{num_train_examples:,} training images, at least {LARGE_DATASET:,}"
    return SMALL_DATA, f"{num_train_examples:,} training images, under {LARGE_DATASET:,}"


def apply(config, num_train_examples):
    """`config` (a TrainConfig) with every recipe setting it leaves as None filled in, and
    `recipe`/`recipe_reason` set to the recipe used and why."""
    recipe, reason = choose(config.recipe, config.dataset, num_train_examples, config.weights)
    unset = {field: getattr(recipe, field) for field in FIELDS if getattr(config, field) is None}
    return dataclasses.replace(config, recipe=recipe.name, recipe_reason=reason, **unset)
