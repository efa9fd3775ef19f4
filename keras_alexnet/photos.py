"""Small real-photo datasets, cut from photographs that ship inside pip packages.

Built-in data (shapes.py) shows that the code runs; whether a recipe learns *real* images is
checked on these. Nothing is downloaded: scikit-image, matplotlib and scikit-learn carry a few
photographs in their wheels, and each set here is a patch-classification task over some of them.
A class is one photograph; its examples are square patches of 64-96 px (native pixels, JPEG
quality 90) cut at random sizes and positions. Each photograph is divided into tiles in a
checkerboard: training patches come from the "white" tiles and held-out patches from the
"black" ones, so no held-out pixel was ever seen in training.

    python scripts/make_photo_sets.py --out /tmp/photo_sets       # every set in PHOTO_SETS
    python scripts/train.py --dataset folder:/tmp/photo_sets/colour6 --image_size 67 \\
        --epochs 15 --batch_size 32

docs/recipes.md has the runs measured on them.
"""

import dataclasses
import importlib.util
import os

import numpy as np
from PIL import Image

from keras_alexnet.errors import UsageError

_SKIMAGE, _MATPLOTLIB, _SKLEARN = "skimage", "matplotlib", "sklearn"

# name -> {class name: (package, path inside the package)}. The sets share no photograph.
PHOTO_SETS = {
    # six colour photographs: portrait, cat, coffee, rocket launch, Hubble field, a Chinese palace
    "colour6": {
        "astronaut": (_SKIMAGE, "data/astronaut.png"),
        "chelsea": (_SKIMAGE, "data/chelsea.png"),
        "coffee": (_SKIMAGE, "data/coffee.png"),
        "rocket": (_SKIMAGE, "data/rocket.jpg"),
        "hubble": (_SKIMAGE, "data/hubble_deep_field.jpg"),
        "china": (_SKLEARN, "datasets/images/china.jpg"),
    },
    # five colour photographs: a motorcycle in a workshop, a retina, a stained tissue section, a
    # portrait, a flower. (scikit-image's motorcycle_right is left out: it is the other view of the
    # same stereo pair, and patches of the two views cannot be told apart; docs/recipes.md.)
    "colour5": {
        "motorcycle": (_SKIMAGE, "data/motorcycle_left.png"),
        "retina": (_SKIMAGE, "data/retina.jpg"),
        "ihc": (_SKIMAGE, "data/ihc.png"),
        "grace_hopper": (_MATPLOTLIB, "mpl-data/sample_data/grace_hopper.jpg"),
        "flower": (_SKLEARN, "datasets/images/flower.jpg"),
    },
    # eight grey-level photographs: textures, a microscope, a camera man, the moon, coins
    "grey8": {
        "brick": (_SKIMAGE, "data/brick.png"),
        "grass": (_SKIMAGE, "data/grass.png"),
        "gravel": (_SKIMAGE, "data/gravel.png"),
        "camera": (_SKIMAGE, "data/camera.png"),
        "moon": (_SKIMAGE, "data/moon.png"),
        "coins": (_SKIMAGE, "data/coins.png"),
        "cell": (_SKIMAGE, "data/cell.png"),
        "clock": (_SKIMAGE, "data/clock_motion.png"),
    },
}


@dataclasses.dataclass(frozen=True)
class PatchConfig:
    """How patches are cut: per-class counts, patch sides, tile side and seed."""

    train_per_class: int = 200
    validation_per_class: int = 50
    min_side: int = 64
    max_side: int = 96
    tile: int = 112  # each patch lies inside one tile; tiles alternate train / held-out
    seed: int = 0
    quality: int = 90


def set_names(requested=None):
    """The PHOTO_SETS names asked for (all, sorted, when `requested` is empty); a UsageError names
    any unknown one."""
    names = list(requested or sorted(PHOTO_SETS))
    unknown = sorted(set(names) - set(PHOTO_SETS))
    if unknown:
        raise UsageError(f"--sets: unknown {', '.join(unknown)}; choose from {', '.join(sorted(PHOTO_SETS))}.")
    return names


def photo_path(package, relative):
    """The file `relative` inside an installed package, or a UsageError naming the install."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"package {package} is not installed: pip install scikit-image scikit-learn matplotlib")
    path = os.path.join(list(spec.submodule_search_locations)[0], relative)
    if not os.path.isfile(path):
        raise UsageError(f"{path} is missing from the installed {package}: reinstall it")
    return path


def _tiles(width, height, tile, held_out):
    """Top-left corners of the whole tiles in the checkerboard colour `held_out` (0 or 1)."""
    return [(x * tile, y * tile) for y in range(height // tile) for x in range(width // tile)
            if (x + y) % 2 == held_out]


def cut_patches(image, count, held_out, config, rng):
    """`count` square patches (PIL images) of `config.min_side`..`max_side` px from one colour
    of the tile checkerboard."""
    tiles = _tiles(image.width, image.height, config.tile, held_out)
    if not tiles:
        raise UsageError(f"a {image.width}x{image.height} photograph has no whole {config.tile}-px tile: lower tile")
    patches = []
    for _ in range(count):
        left, top = tiles[rng.integers(len(tiles))]
        side = int(rng.integers(config.min_side, config.max_side + 1))
        x = left + int(rng.integers(config.tile - side + 1))
        y = top + int(rng.integers(config.tile - side + 1))
        patches.append(image.crop((x, y, x + side, y + side)))
    return patches


def write_photo_set(out_dir, photos, config=PatchConfig()):
    """Write `photos` ({class: (package, path)}) as out_dir/{train,val}/<class>/NNNN.jpg.

    Returns {"train": n, "validation": m}. Each class draws from its own random stream (seed,
    class index), so adding a class leaves the others' patches unchanged.
    """
    counts = {"train": 0, "validation": 0}
    for index, (name, (package, relative)) in enumerate(sorted(photos.items())):
        image = Image.open(photo_path(package, relative)).convert("RGB")
        rng = np.random.default_rng([config.seed, index])
        for split, folder, held_out, count in (("train", "train", 0, config.train_per_class),
                                               ("validation", "val", 1, config.validation_per_class)):
            class_dir = os.path.join(out_dir, folder, name)
            os.makedirs(class_dir, exist_ok=True)
            for i, patch in enumerate(cut_patches(image, count, held_out, config, rng)):
                patch.save(os.path.join(class_dir, f"{i:04d}.jpg"), quality=config.quality)
            counts[split] += count
    return counts


# The reference classifier's view of a patch (scripts/photo_reference.py): resized to the input
# size learning_check.py trains at.
REFERENCE_SIZE = 67


def reference_features(path):
    """One patch file -> orderless statistics of its colours and edges, for a classifier without a
    network (scripts/photo_reference.py): the patch at 67 x 67, its 6x6x6 RGB histogram, the
    histograms of its grey-level gradient magnitudes and (on edges) orientations, and its
    per-channel mean and standard deviation."""
    image = np.asarray(Image.open(path).convert("RGB").resize((REFERENCE_SIZE,) * 2, Image.BILINEAR), np.float32)
    colours, _ = np.histogramdd(image.reshape(-1, 3), bins=(6, 6, 6), range=((0, 256),) * 3)
    grey = image.mean(axis=2)
    dx, dy = np.diff(grey, axis=1)[:-1], np.diff(grey, axis=0)[:, :-1]
    magnitude, angle = np.hypot(dx, dy), np.arctan2(dy, dx)
    magnitudes, _ = np.histogram(magnitude, bins=12, range=(0, 120))
    edges = magnitude > 4  # orientations of the pixels on an edge, not of the noise
    orientations, _ = np.histogram(angle[edges], bins=8, range=(-np.pi, np.pi))
    moments = np.concatenate([image.mean(axis=(0, 1)), image.std(axis=(0, 1)), [magnitude.mean(), magnitude.std()]])
    return np.concatenate([colours.ravel() / grey.size, magnitudes / grey.size,
                           orientations / max(1, edges.sum()), moments / 100])


def reference_split(root):
    """(features [N, D], labels [N], class names) of a set's train/ or val/ folder."""
    names = sorted(os.listdir(root))
    rows, labels = [], []
    for label, name in enumerate(names):
        folder = os.path.join(root, name)
        for file_name in sorted(os.listdir(folder)):
            rows.append(reference_features(os.path.join(folder, file_name)))
            labels.append(label)
    return np.array(rows), np.array(labels), names
