"""Image decoding, the paper's augmentation (§4.1) and the evaluation views (§4.1, §6).

Every function here is a plain TensorFlow function of tensors: it runs eagerly, inside
`tf.data` and inside a `tf.function` / SavedModel signature. Random transforms are stateless:
they take a `seed` (an int32/int64 tensor of shape [2]) so a pipeline is reproducible whatever
its parallelism.

Conventions (the project's contract):
    - images are RGB; a decoded image is uint8 [H, W, 3];
    - the model's input is float32 [S, S, 3] on the 0..255 scale minus `IMAGENET_MEAN_RGB`
      (no division by a standard deviation: the paper's and Caffe's convention);
    - the paper rescales the shorter side to 256 and crops 224 (227 in practice, docs/paper.md);
      for a smaller input size S the 256 scales in proportion: `scaled_size(S) = round(256*S/227)`.

Training views (`train_view(..., augmentation=...)`):
    "paper":     random S x S crop of the 256-scaled centre square, decoded with a fused
                 decode-and-crop for JPEG, horizontal flip, PCA lighting (std 0.1), mean subtraction.
                 (A JPEG window at least 2, 4 or 8 times S is decoded at that reduced scale.)
    "inception": random-resized-crop (area 8%-100%, aspect 3/4-4/3) with the fused decode, flip,
                 mean subtraction (the modern recipe; no lighting).
    "none":      the centre view (deterministic; for debugging and ablations).

A training view is made in two parts, so that the host does the least work per image:
`train_crop` (decode, crop, flip, resize; uint8 [S, S, 3]) and `lighting_shift` (the PCA
lighting draw, float32 [3]) run in the input pipeline; `finish_views` (cast, mean, lighting) runs
on whole batches, inside the compiled training step when the Trainer feeds it. `train_view` is
the two parts in one call. The resized crop is rounded to uint8 (at most 0.5 of 255 off), which
quarters the bytes every later step reads and copies.

Evaluation views: `center_view` (one S x S centre crop) and `ten_crop` (§4.1: the four corner
crops and the centre crop of the 256-scaled centre square, and their horizontal mirrors), of
`decode_for_view` (large JPEGs decoded at reduced scale, the shorter side kept >= 256).
"""

import tensorflow as tf

from keras_alexnet.layers import IMAGENET_MEAN_RGB  # the model's input contract

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



def scaled_size(image_size):
    """The side the shorter image side is rescaled to: 256 for 227, in proportion otherwise (§4.1)."""
    return int(round(PAPER_SCALED_SIZE * image_size / PAPER_IMAGE_SIZE))


def decode_image(image_bytes, min_side=None):
    """Decode JPEG, PNG, GIF (first frame) or BMP bytes to uint8 RGB [H, W, 3].

    Grayscale and CMYK JPEGs, grayscale and RGBA PNGs are converted to RGB. The format is read
    from the bytes, not a file name, so a PNG named `.jpg` decodes. Raises
    `tf.errors.InvalidArgumentError` on bytes that are not a decodable image (the input pipeline
    in data.py skips and counts those).

    `min_side`: the caller only needs the shorter side down to this many pixels. A JPEG whose
    shorter side is at least twice that is then decoded at 1/2, 1/4 or 1/8 scale (libjpeg's
    scaled inverse DCT, `jpeg_scale_index`): the most reduced one that keeps the shorter side
    >= min_side.
    """
    if min_side is not None:
        def jpeg():
            shape = tf.image.extract_jpeg_shape(image_bytes)
            scale_index = jpeg_scale_index(tf.minimum(shape[0], shape[1]), min_side)
            # libjpeg rounds the scaled sides up; the last row and column then stand for less than
            # `ratio` pixels. Dropping them keeps the image's geometry exact to 1/ratio.
            return _scaled_jpeg_decode(image_bytes, scale_index, lambda ratio: None if ratio == 1 else
                                       tf.stack([0, 0, shape[0] // ratio, shape[1] // ratio]))

        def other():
            return decode_image(image_bytes)

        image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    else:
        image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


# The scales libjpeg's inverse DCT computes directly, and TensorFlow exposes (`ratio`).
JPEG_SCALES = (1, 2, 4, 8)


def jpeg_scale_index(side, min_side):
    """Index in JPEG_SCALES of the largest scale s with side // s >= min_side (0, scale 1, if
    none): int32 scalar.

    A JPEG decoded at 1/s has each side rounded up from side / s; side // s is the conservative
    bound. Decoding at 1/s is an 8x8-block low-pass and subsample, so it replaces the first part
    of a reduction the caller makes anyway, at a fraction of the cost of a full decode and resize.
    """
    scaled_sides = tf.cast(side, tf.int32) // tf.constant(JPEG_SCALES[1:])
    return tf.reduce_sum(tf.cast(scaled_sides >= min_side, tf.int32))


def _scaled_jpeg_decode(image_bytes, scale_index, window_at):
    """Decode a JPEG at 1/JPEG_SCALES[scale_index] (an int32 tensor): the window
    `window_at(ratio)` ([top, left, height, width] in the pixels of the image at 1/ratio) with
    decode_and_crop_jpeg, or the whole image where it gives None."""
    def at(ratio):
        def decode():
            window = window_at(ratio)
            if window is None:
                return tf.io.decode_jpeg(image_bytes, channels=3, ratio=ratio)
            return tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3, ratio=ratio)
        return decode

    return tf.switch_case(scale_index, [at(ratio) for ratio in JPEG_SCALES])


def _resize(image, height, width):
    """Bilinear resize to float32 [height, width, 3]; antialiased when shrinking by more than 2x.

    Plain bilinear reads 2x2 pixels per output pixel, which is right down to a 2x reduction (the
    paper's 375 -> 256 is 1.46x) and 3x cheaper than the antialiased kernel; beyond 2x (large
    photos at serving time, small image_size) it would alias, so the antialiased kernel is used.
    """
    size = tf.stack([height, width])
    shrink = tf.reduce_max(tf.cast(tf.shape(image)[:2], tf.float32) / tf.cast(size, tf.float32))
    # uint8 goes into the kernel as it is (it reads uint8 and writes float32): no extra pass.
    resized = tf.cond(shrink > 2.0,
                      lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
                      lambda: tf.image.resize(image, size, method="bilinear"))
    resized.set_shape([None, None, 3])
    return tf.cast(resized, tf.float32)


def resize_shorter_side(image, size):
    """Resize (bilinear, antialiased) so the shorter side is `size`, keeping the aspect ratio.

    Returns float32 [H', W', 3] on the input's 0..255 scale (see _resize for the kernel).
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_height = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), size)
    new_width = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), size)
    return _resize(image, new_height, new_width)


def decode_for_view(image_bytes, image_size):
    """Decode bytes for center_view or ten_crop at input size S: as decode_image, with large JPEGs
    decoded at reduced scale (shorter side kept >= scaled_size(S), which is all the views use)."""
    return decode_image(image_bytes, min_side=scaled_size(image_size))


def _central_square(image, side):
    shape = tf.shape(image)
    top = (shape[0] - side) // 2
    left = (shape[1] - side) // 2
    return tf.image.crop_to_bounding_box(image, top, left, side, side)


def subtract_mean(image, mean_image=None):
    """Subtract the per-channel ImageNet mean, or a per-pixel `mean_image` if given (§2).

    `mean_image`: None, a per-channel mean [3], or a per-pixel mean broadcastable to the image
    ([S, S, 3] for the paper's, see data.compute_mean_image). Returns float32.
    """
    image = tf.cast(image, tf.float32)
    mean = tf.constant(IMAGENET_MEAN_RGB, tf.float32) if mean_image is None else tf.cast(mean_image, tf.float32)
    if mean.shape.rank == 1:
        # BiasAdd is made for a last-axis vector; `image - mean` broadcasts through Eigen's
        # generic path, 2x slower on a 227x227x3 image.
        return tf.nn.bias_add(image, -mean)
    return image - mean


def center_view(image, image_size, mean_image=None):
    """The evaluation and serving view: float32 [S, S, 3], mean subtracted (§4.1, §6).

    uint8 image of any size -> shorter side resized to scaled_size(S) (256 for 227) -> central
    S x S crop -> mean subtracted.
    """
    return subtract_mean(_center_crop(image, image_size), mean_image)


def _center_crop(image, image_size):
    # center_view before the mean: shorter side to scaled_size(S), central S x S, float32.
    view = _central_square(resize_shorter_side(image, scaled_size(image_size)), image_size)
    view.set_shape([image_size, image_size, 3])
    return view


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


def decode_random_crop(image_bytes, window_fn, min_side=None):
    """Decode only a window of the image: uint8 [h, w, 3], window = window_fn([height, width]).

    JPEG: the size is read from the header (tf.image.extract_jpeg_shape) and only the window is
    decoded (tf.io.decode_and_crop_jpeg skips the IDCT outside it and stops after its last
    row). Other formats are decoded whole and cropped.

    `min_side`: the caller resizes the crop down to this size. A JPEG window whose shorter side is
    at least twice that is decoded at 1/2, 1/4 or 1/8 scale (`jpeg_scale_index`), so the crop comes
    back smaller, but never below min_side.
    """

    def jpeg():
        window = window_fn(tf.image.extract_jpeg_shape(image_bytes)[:2])
        if min_side is None:
            return tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)
        scale_index = jpeg_scale_index(tf.minimum(window[2], window[3]), min_side)

        def scaled_window(ratio):
            # The window at 1/ratio, each edge rounded to the nearest scaled pixel (at most ratio/2
            # original pixels off; the sides stay >= min_side and inside the scaled image).
            start = (2 * window[:2] + ratio) // (2 * ratio)
            end = (2 * (window[:2] + window[2:]) + ratio) // (2 * ratio)
            return tf.concat([start, end - start], 0)

        return _scaled_jpeg_decode(image_bytes, scale_index, scaled_window)

    def other():
        image = decode_image(image_bytes)
        window = window_fn(tf.shape(image)[:2])
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


def lighting_shift(seed, augmentation="paper", std=0.1):
    """The colour shift `pca_lighting` adds for this seed, float32 [3]; zeros unless the
    augmentation is "paper" with std > 0. Same seed as train_view gives the same shift."""
    if augmentation != "paper" or not std:
        return tf.zeros([3], tf.float32)
    return pca_lighting(tf.zeros([3], tf.float32), _view_seeds(seed)[2], std)


def _view_seeds(seed):
    # One example's seed -> the seeds of its crop window, flip and lighting (in that order).
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)


def train_crop(image_bytes, image_size, seed, augmentation="paper"):
    """Encoded image bytes -> the geometric part of a training view, uint8 [S, S, 3].

    "paper" / "inception": a random window decoded with the fused decode-and-crop (at 1/2, 1/4
    or 1/8 scale when the window is at least 2, 4 or 8 times S), flipped with probability 1/2,
    resized to S x S (bilinear); "none": the centre view. `seed`: int tensor [2].
    """
    if augmentation == "none":
        image = _round_to_uint8(_center_crop(decode_for_view(image_bytes, image_size), image_size))
    elif augmentation in ("paper", "inception"):
        seeds = _view_seeds(seed)
        # Flipping the uint8 crop before the (left-right symmetric) resize copies a quarter of the
        # bytes of flipping the float output; same result.
        crop = random_flip(decode_random_crop(image_bytes, crop_window_fn(augmentation, image_size, seeds[0]),
                                              min_side=image_size), seeds[1])
        # Images stored with the shorter side at scaled_size(S) (the paper's 256 for 227, §2) give
        # S x S crops: a resize to the same size is the identity, so skip it.
        same_size = tf.reduce_all(tf.equal(tf.shape(crop)[:2], image_size))
        image = tf.cond(same_size, lambda: crop, lambda: _round_to_uint8(_resize(crop, image_size, image_size)))
    else:
        raise ValueError(f"unknown augmentation {augmentation!r}; expected one of {AUGMENTATIONS}")
    image.set_shape([image_size, image_size, 3])
    return image


def crop_window_fn(augmentation, image_size, seed):
    """The random training window of "paper" or "inception" for this seed, as a function of the
    image's [height, width] (what decode_random_crop takes)."""
    if augmentation == "paper":
        return lambda shape: paper_crop_window(shape, image_size, seed)
    if augmentation == "inception":
        return lambda shape: inception_crop_window(shape, seed)
    raise ValueError(f"augmentation {augmentation!r} has no random window; expected paper or inception")


def _round_to_uint8(image):
    # Bilinear weights are convex, so a resized uint8 image is already within 0..255.
    return tf.cast(tf.round(image), tf.uint8)


def finish_views(images, shifts, mean_image=None):
    """uint8 crops [..., S, S, 3] and their lighting shifts [..., 3] -> the model's input, float32:
    `images - mean + shift`, i.e. pca_lighting then subtract_mean (§4.1, §2). Batched or not."""
    offset = -tf.cast(shifts, tf.float32)[..., None, None, :]
    mean = tf.constant(IMAGENET_MEAN_RGB, tf.float32) if mean_image is None else tf.cast(mean_image, tf.float32)
    return tf.cast(images, tf.float32) - (mean + offset)


def train_view(image_bytes, image_size, seed, augmentation="paper", mean_image=None, lighting_std=0.1):
    """Encoded image bytes -> one augmented training view, float32 [S, S, 3], mean subtracted.

    `augmentation` is one of AUGMENTATIONS (see the module docstring). `seed`: int tensor [2]
    (stateless; the same seed gives the same view). Equal to
    finish_views(train_crop(...), lighting_shift(...)), which is how the input pipeline makes it.
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; expected one of {AUGMENTATIONS}")
    return finish_views(train_crop(image_bytes, image_size, seed, augmentation),
                        lighting_shift(seed, augmentation, lighting_std), mean_image)
