"""`shapes`: the built-in demo dataset. No files, no downloads; deterministic from a seed.

Ten classes of filled shapes (CLASS_NAMES) drawn on 80x80 RGB images:

    circle, ring, square, frame (hollow square), triangle, diamond (a tall rhombus), star (5
    points), cross (a plus sign), hexagon, crescent.

Every image varies in: the shape's colour (uniform RGB, at least 120 away from the background's
mean colour), size (radius 22%-45% of the side), position (anywhere it fits), rotation (+-12
degrees; a full turn for circle, ring, hexagon and crescent), the background (a linear gradient
from a random colour halfway to a second one, in a random direction) and Gaussian pixel noise
(std 0-8). Classes are balanced. The train and validation splits come from independent random
streams (seed, 0) and (seed, 1), so the validation images are held out.

Images are stored JPEG-encoded (quality 90, about 3 KB each), so the demo goes through exactly the
pipeline of a folder of photos: fused decode-and-crop, flip, lighting, mean subtraction (data.py).

Dataset string: "shapes" or "shapes:train=N,validation=M,seed=S,size=P" (any subset), defaults
train=4000, validation=1000, seed=0, size=80. Generating and encoding the default train split
takes ~3 s on one core. docs/input.md has the training runs measured on it.
"""

import dataclasses
import functools
import io

import numpy as np
from PIL import Image, ImageDraw

from keras_alexnet.errors import UsageError

CLASS_NAMES = ("circle", "ring", "square", "frame", "triangle", "diamond", "star", "cross", "hexagon", "crescent")

# Shapes that look the same under any rotation, or whose orientation is free, turn fully.
_FREE_ROTATION = {"circle", "ring", "hexagon", "crescent"}
_MAX_ROTATION_DEGREES = 12.0
_RADIUS_RANGE = (0.22, 0.45)  # of the image side
_NOISE_STD_MAX = 8.0
_MIN_COLOUR_DISTANCE = 120.0
_JPEG_QUALITY = 90
_NOISE_BANK = 16
_CHUNK = 256  # images composited at once (keeps memory small)


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
    """Sizes and seed of the shapes dataset (parsed from the dataset string)."""

    train: int = 4000
    validation: int = 1000
    seed: int = 0
    size: int = 80

    def num_examples(self):
        return {"train": self.train, "validation": self.validation}


def parse_spec(spec):
    """"shapes" or "shapes:train=N,validation=M,seed=S,size=P" -> ShapesConfig."""
    name, _, options = spec.partition(":")
    if name != "shapes":
        raise UsageError(f"not a shapes dataset string: {spec!r}")
    values = {}
    fields = {f.name for f in dataclasses.fields(ShapesConfig)}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if key not in fields or not value.isdigit():
            raise UsageError(f"bad shapes option {item!r} in {spec!r}; expected shapes:train=N,validation=M,seed=S,size=P")
        values[key] = int(value)
    config = ShapesConfig(**values)
    if config.size < 16 or config.train < 1 or config.validation < 1:
        raise UsageError(f"shapes sizes too small in {spec!r}: need size >= 16 and at least one image per split")
    return config


def _regular_polygon(count, radius, rotation, x_scale=1.0, start=-np.pi / 2, inner=None):
    """Vertices (relative to the centre) of a regular polygon, or of a star if `inner` is set."""
    if inner is None:
        angles = start + 2 * np.pi * np.arange(count) / count
        radii = np.full(count, radius)
    else:
        angles = start + np.pi * np.arange(2 * count) / count
        radii = np.where(np.arange(2 * count) % 2 == 0, radius, radius * inner)
    x, y = radii * np.cos(angles) * x_scale, radii * np.sin(angles)
    cos, sin = np.cos(rotation), np.sin(rotation)
    return np.stack([x * cos - y * sin, x * sin + y * cos], axis=1)


def _cross(radius, rotation):
    arm = 0.32 * radius
    corners = [(-arm, -radius), (arm, -radius), (arm, -arm), (radius, -arm), (radius, arm), (arm, arm),
               (arm, radius), (-arm, radius), (-arm, arm), (-radius, arm), (-radius, -arm), (-arm, -arm)]
    points = np.array(corners)
    cos, sin = np.cos(rotation), np.sin(rotation)
    return np.stack([points[:, 0] * cos - points[:, 1] * sin, points[:, 0] * sin + points[:, 1] * cos], axis=1)


def _draw_mask(name, size, cx, cy, radius, rotation):
    """A uint8 [size, size] mask (255 inside the shape)."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)

    def polygon(points, fill=255):
        draw.polygon([(cx + x, cy + y) for x, y in points], fill=fill)

    def disc(r, dx=0.0, dy=0.0, fill=255):
        draw.ellipse([cx + dx - r, cy + dy - r, cx + dx + r, cy + dy + r], fill=fill)

    if name == "circle":
        disc(radius)
    elif name == "ring":
        disc(radius)
        disc(radius * 0.55, fill=0)
    elif name == "square":
        polygon(_regular_polygon(4, radius, rotation, start=np.pi / 4))
    elif name == "frame":
        polygon(_regular_polygon(4, radius, rotation, start=np.pi / 4))
        polygon(_regular_polygon(4, radius * 0.6, rotation, start=np.pi / 4), fill=0)
    elif name == "triangle":
        polygon(_regular_polygon(3, radius, rotation))
    elif name == "diamond":
        polygon(_regular_polygon(4, radius, rotation, x_scale=0.6))
    elif name == "star":
        polygon(_regular_polygon(5, radius, rotation, inner=0.42))
    elif name == "cross":
        polygon(_cross(radius, rotation))
    elif name == "hexagon":
        polygon(_regular_polygon(6, radius, rotation))
    elif name == "crescent":
        disc(radius)
        disc(radius * 0.85, dx=0.5 * radius * np.cos(rotation), dy=0.5 * radius * np.sin(rotation), fill=0)
    else:
        raise ValueError(name)
    return np.asarray(mask)


def generate(num_images, seed, size=80):
    """Draw `num_images` shapes images: (uint8 [N, size, size, 3], int32 labels [N]).

    `seed` is an int or a sequence of ints (a numpy SeedSequence entropy); the same seed gives
    the same images.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_images) % len(CLASS_NAMES)).astype(np.int32)
    images = np.empty((num_images, size, size, 3), np.uint8)
    grid = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)  # [2, size, size]: y, x
    # Pixel noise: random shifts of a bank of Gaussian fields (drawing fresh noise for every image
    # would be half the generation time).
    bank = rng.standard_normal((_NOISE_BANK, 2 * size, 2 * size, 3), dtype=np.float32)
    for first in range(0, num_images, _CHUNK):
        chunk = labels[first:first + _CHUNK]
        count = len(chunk)
        # Backgrounds: linear gradients between two colours, in random directions.
        colours = rng.uniform(0, 255, (count, 2, 3)).astype(np.float32)
        colours[:, 1] = colours[:, 0] + 0.5 * (colours[:, 1] - colours[:, 0])  # gentle gradients
        angles = rng.uniform(0, 2 * np.pi, count).astype(np.float32)
        t = np.cos(angles)[:, None, None] * grid[1] + np.sin(angles)[:, None, None] * grid[0]
        low, high = t.min(axis=(1, 2), keepdims=True), t.max(axis=(1, 2), keepdims=True)
        t = ((t - low) / np.maximum(high - low, 1e-6))[..., None]
        background = colours[:, None, None, 0] + t * (colours[:, None, None, 1] - colours[:, None, None, 0])
        # Foregrounds: a colour that stands out from the background's mean colour, and a shape mask.
        foreground = np.empty((count, 3), np.float32)
        masks = np.empty((count, size, size), np.uint8)
        for index, label in enumerate(chunk):
            name = CLASS_NAMES[label]
            for _ in range(100):
                foreground[index] = rng.uniform(0, 255, 3)
                if np.linalg.norm(foreground[index] - colours[index].mean(0)) >= _MIN_COLOUR_DISTANCE:
                    break
            radius = rng.uniform(*_RADIUS_RANGE) * size
            cx, cy = rng.uniform(radius, size - radius, 2)
            if name in _FREE_ROTATION:
                rotation = rng.uniform(0, 2 * np.pi)
            else:
                rotation = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEGREES, _MAX_ROTATION_DEGREES))
            masks[index] = _draw_mask(name, size, cx, cy, radius, rotation)
        alpha = masks[..., None].astype(np.float32) / 255.0
        composite = background * (1 - alpha) + foreground[:, None, None, :] * alpha
        noise_std = rng.uniform(0, _NOISE_STD_MAX, count).astype(np.float32)[:, None, None, None]
        picks = rng.integers(0, _NOISE_BANK, count)
        shifts = rng.integers(0, size, (count, 2))
        for index in range(count):
            y, x = shifts[index]
            composite[index] += bank[picks[index], y:y + size, x:x + size] * noise_std[index]
        images[first:first + count] = np.clip(composite, 0, 255).astype(np.uint8)
    return images, labels


def _encode_jpeg(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue()


@functools.lru_cache(maxsize=4)
def encoded_split(config, split):
    """(JPEG bytes as a numpy object array [N], int32 labels [N]) of one split; cached per process."""
    if split not in ("train", "validation"):
        raise UsageError(f"unknown split {split!r} for shapes; expected 'train' or 'validation'")
    count = config.num_examples()[split]
    images, labels = generate(count, seed=[config.seed, 0 if split == "train" else 1], size=config.size)
    encoded = np.array([_encode_jpeg(image) for image in images], dtype=object)
    return encoded, labels


def save_grid(path, config=ShapesConfig(), per_class=8):
    """Write an image (format from the file name) of `per_class` training images of every class (one row per class), for docs."""
    images, labels = generate(per_class * len(CLASS_NAMES) * 3, seed=[config.seed, 0], size=config.size)
    rows = []
    for label in range(len(CLASS_NAMES)):
        picked = images[labels == label][:per_class]
        rows.append(np.concatenate(list(picked), axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
