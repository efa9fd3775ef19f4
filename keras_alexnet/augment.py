"""Image decoding, the paper's augmentation (§4.1) and the evaluation views (§4.1, §6).

Every function here is a plain TensorFlow function of tensors: it runs eagerly, inside
`tf.data` and inside a `tf.function` / SavedModel signature. Random transforms are stateless:
they take a `seed` (an int32/int64 tensor of shape [2]) so a pipeline is reproducible whatever
its parallelism.

Conventions (the project's contract):
    - images are RGB; a decoded image is uint8 [H, W, 3];
    - the model's input is float32 [S, S, 3] on the 0..255 scale minus `IMAGENET_MEAN_RGB`
      (no division by a standard deviation: the paper's and Caffe's convention);
    - the paper rescales the shorter side to 256 and crops 224 (227 in practice, ../PAPER.md);
      for a smaller input size S the 256 scales in proportion: `scaled_size(S) = round(256*S/227)`.

Training views (`train_view(..., augmentation=...)`):
    "paper":     random S x S crop of the 256-scaled centre square, decoded with a fused
                 decode-and-crop for JPEG, horizontal flip, PCA lighting (std 0.1), mean subtraction.
    "inception": random-resized-crop (area 8%-100%, aspect 3/4-4/3) with the fused decode, flip,
                 mean subtraction (the modern recipe; no lighting).
    "none":      the centre view (deterministic; for debugging and ablations).

Evaluation views: `center_view` (one S x S centre crop) and `ten_crop` (§4.1: the four corner
crops and the centre crop of the 256-scaled centre square, and their horizontal mirrors).
"""

import tensorflow as tf

# Per-channel mean of the ImageNet training set, RGB, 0..255 (Caffe's, the contract's).
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)

# PCA of the ImageNet training-set RGB pixel values in [0, 1] (§4.1; values from
# fb.resnet.torch). Eigenvalues, and eigenvectors as the COLUMNS of the matrix
# (row i is the channel R, G, B): noise = EIGVEC @ (alpha * EIGVAL).
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

# The paper's crop (227, as Caffe) and the side its image is rescaled to before cropping (§4.1).
PAPER_IMAGE_SIZE = 227
PAPER_SCALED_SIZE = 256

AUGMENTATIONS = ("paper", "inception", "none")

# Bilinear with antialiasing: downscaling a 500x375 ImageNet image to 256 without it aliases.
_RESIZE_METHOD = tf.image.ResizeMethod.BILINEAR


def scaled_size(image_size):
    """The side the shorter image side is rescaled to: 256 for 227, in proportion otherwise (§4.1)."""
    return int(round(PAPER_SCALED_SIZE * image_size / PAPER_IMAGE_SIZE))


def decode_image(image_bytes):
    """Decode JPEG, PNG, GIF (first frame) or BMP bytes to uint8 RGB [H, W, 3].

    Grayscale and CMYK JPEGs, grayscale and RGBA PNGs are converted to RGB. The format is read
    from the bytes, not a file name, so a PNG named `.jpg` decodes. Raises
    `tf.errors.InvalidArgumentError` on bytes that are not a decodable image (the input pipeline
    in data.py skips and counts those).
    """
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _resize(image, height, width):
    return tf.image.resize(image, tf.stack([height, width]), method=_RESIZE_METHOD, antialias=True)


def resize_shorter_side(image, size):
    """Resize (bilinear, antialiased) so the shorter side is `size`, keeping the aspect ratio.

    Returns float32 [H', W', 3] on the input's 0..255 scale.
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_height = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), size)
    new_width = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), size)
    return _resize(tf.cast(image, tf.float32), new_height, new_width)


def _central_square(image, side):
    shape = tf.shape(image)
    top = (shape[0] - side) // 2
    left = (shape[1] - side) // 2
    return tf.image.crop_to_bounding_box(image, top, left, side, side)


def subtract_mean(image, mean_image=None):
    """Subtract the per-channel ImageNet mean, or a per-pixel `mean_image` if given (§2).

    `mean_image`: None, or float32 broadcastable to the image ([S, S, 3] for the paper's
    per-pixel mean, see data.compute_mean_image). Returns float32.
    """
    image = tf.cast(image, tf.float32)
    if mean_image is None:
        return image - tf.constant(IMAGENET_MEAN_RGB, tf.float32)
    return image - tf.cast(mean_image, tf.float32)


def center_view(image, image_size, mean_image=None):
    """The evaluation and serving view: float32 [S, S, 3], mean subtracted (§4.1, §6).

    uint8 image of any size -> shorter side resized to scaled_size(S) (256 for 227) -> central
    S x S crop -> mean subtracted.
    """
    resized = resize_shorter_side(image, scaled_size(image_size))
    view = _central_square(resized, image_size)
    view.set_shape([image_size, image_size, 3])
    return subtract_mean(view, mean_image)


def ten_crop(image, image_size, mean_image=None):
    """The paper's ten test views (§4.1): float32 [10, S, S, 3], mean subtracted.

    The shorter side is resized to L = scaled_size(S) and the central L x L square kept (the
    paper's 256x256 image). Views 0-4: top-left, top-right, bottom-left, bottom-right and centre
    S x S crops of that square; views 5-9: the same crops mirrored left-right.
    """
    side = scaled_size(image_size)
    square = _central_square(resize_shorter_side(image, side), side)
    far = side - image_size
    mid = far // 2
    offsets = [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]
    crops = [square[top:top + image_size, left:left + image_size, :] for top, left in offsets]
    crops = tf.stack(crops)
    views = tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)
    views.set_shape([10, image_size, image_size, 3])
    return subtract_mean(views, mean_image)


def paper_crop_window(image_shape, image_size, seed):
    """The paper's random crop as a window [top, left, height, width] in ORIGINAL pixels (§4.1).

    The paper rescales the shorter side to 256, keeps the central 256x256 square and takes a
    random 224 (here S) crop of it. In the original image that crop is a square of side
    S * min(H, W) / 256 at a uniformly random position inside the central min(H, W) square, so it
    can be cut out before decoding (tf.io.decode_and_crop_jpeg) and then resized to S x S.
    """
    height, width = image_shape[0], image_shape[1]
    shorter = tf.minimum(height, width)
    scale = tf.cast(shorter, tf.float32) / float(scaled_size(image_size))
    side = tf.clip_by_value(tf.cast(tf.round(image_size * scale), tf.int32), 1, shorter)
    # Random offset in the 256-scaled square (0..L-S inclusive), mapped to original pixels.
    span = scaled_size(image_size) - image_size
    offset = tf.random.stateless_uniform([2], seed, minval=0, maxval=span + 1, dtype=tf.int32)
    offset = tf.minimum(tf.cast(tf.round(tf.cast(offset, tf.float32) * scale), tf.int32), shorter - side)
    top = (height - shorter) // 2 + offset[0]
    left = (width - shorter) // 2 + offset[1]
    return tf.stack([top, left, side, side])


def inception_crop_window(image_shape, seed, area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3)):
    """Random-resized-crop window [top, left, height, width] (Szegedy et al. 2015; torchvision's).

    Falls back to the whole image when no window fits after 10 tries.
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([image_shape[0], image_shape[1], 3]),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def image_shape(image_bytes):
    """[height, width] of encoded image bytes; reads only the header for JPEG."""
    return tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.image.extract_jpeg_shape(image_bytes)[:2],
        lambda: tf.shape(decode_image(image_bytes))[:2],
    )


def decode_crop(image_bytes, window):
    """Decode only `window` ([top, left, height, width]) of the image: uint8 [h, w, 3].

    JPEG uses the fused tf.io.decode_and_crop_jpeg, which skips the IDCT outside the window and
    stops reading after its last row; other formats are decoded whole and then cropped.
    """

    def jpeg():
        return tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def other():
        image = decode_image(image_bytes)
        return image[window[0]:window[0] + window[2], window[1]:window[1] + window[3], :]

    image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def random_flip(image, seed):
    """Horizontal reflection with probability 1/2 (§4.1)."""
    return tf.image.stateless_random_flip_left_right(image, seed)


def pca_lighting(image, seed, std=0.1):
    """The paper's colour augmentation (§4.1) on a 0..255 float image.

    Adds  [p1 p2 p3] [a1*l1, a2*l2, a3*l3]^T  to every pixel, with (p_i, l_i) the eigenvectors and
    eigenvalues of the ImageNet RGB covariance (IMAGENET_PCA_*) and a_i ~ N(0, std) drawn once per
    call. The eigenvalues are for [0, 1] pixels, so the shift is scaled by 255.
    """
    alpha = tf.random.stateless_normal([3], seed, stddev=std, dtype=tf.float32)
    eigvec = tf.constant(IMAGENET_PCA_EIGVEC, tf.float32)
    eigval = tf.constant(IMAGENET_PCA_EIGVAL, tf.float32)
    shift = tf.linalg.matvec(eigvec, alpha * eigval) * 255.0
    return tf.cast(image, tf.float32) + shift


def train_view(image_bytes, image_size, seed, augmentation="paper", mean_image=None, lighting_std=0.1):
    """Encoded image bytes -> one augmented training view, float32 [S, S, 3], mean subtracted.

    `augmentation` is one of AUGMENTATIONS (see the module docstring). `seed`: int tensor [2]
    (stateless; the same seed gives the same view).
    """
    if augmentation == "none":
        return center_view(decode_image(image_bytes), image_size, mean_image)
    if augmentation not in ("paper", "inception"):
        raise ValueError(f"unknown augmentation {augmentation!r}; expected one of {AUGMENTATIONS}")
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    shape = image_shape(image_bytes)
    if augmentation == "paper":
        window = paper_crop_window(shape, image_size, seeds[0])
    else:
        window = inception_crop_window(shape, seeds[0])
    image = decode_crop(image_bytes, window)
    image = _resize(tf.cast(image, tf.float32), image_size, image_size)
    image = random_flip(image, seeds[1])
    if augmentation == "paper" and lighting_std:
        image = pca_lighting(image, seeds[2], lighting_std)
    image.set_shape([image_size, image_size, 3])
    return subtract_mean(image, mean_image)
