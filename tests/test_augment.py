"""Tests for keras_alexnet.augment: each transform eagerly and inside tf.data, and the two agree."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_alexnet import augment

MEAN = np.array(augment.IMAGENET_MEAN_RGB, np.float32)


def _encode(array, fmt, mode=None, **kwargs):
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _smooth_image(height, width, seed=0):
    """A smooth colour image (JPEG keeps it close), uint8 [H, W, 3]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [127 + 100 * np.sin(x / rng.uniform(8, 30) + y / rng.uniform(8, 30) + c) for c in range(3)]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def _in_dataset(fn, *args):
    """Run fn(*args) inside a tf.data map and return the single result as numpy."""
    dataset = tf.data.Dataset.from_tensors(tuple(tf.convert_to_tensor(a) for a in args)).map(lambda *a: fn(*a))
    return next(iter(dataset)).numpy()


@pytest.mark.parametrize("fmt,mode", [("JPEG", None), ("JPEG", "L"), ("JPEG", "CMYK"), ("PNG", None),
                                      ("PNG", "RGBA"), ("PNG", "L"), ("GIF", None), ("BMP", None)])
def test_decode_image_gives_rgb_uint8(fmt, mode):
    array = _smooth_image(30, 40)
    data = _encode(array, fmt, mode)
    image = augment.decode_image(data).numpy()
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)
    assert np.abs(image.astype(np.float32) - expected).mean() < 6.0
    np.testing.assert_array_equal(_in_dataset(augment.decode_image, data), image)


def test_decode_image_rejects_non_images():
    with pytest.raises(tf.errors.InvalidArgumentError):
        augment.decode_image(b"not an image at all")


def test_scaled_size():
    assert augment.scaled_size(227) == 256
    assert augment.scaled_size(67) == round(256 * 67 / 227)


@pytest.mark.parametrize("shape", [(375, 500), (500, 375), (100, 100), (60, 300)])
def test_center_view_shape_and_mean(shape):
    image = np.full(shape + (3,), 200, np.uint8)
    view = augment.center_view(image, 67).numpy()
    assert view.shape == (67, 67, 3) and view.dtype == np.float32
    np.testing.assert_allclose(view, np.broadcast_to(200 - MEAN, view.shape), atol=1e-3)


def test_center_view_is_the_central_crop():
    # An image already at the scaled size is not resampled: the view is its exact centre.
    image = _smooth_image(256, 300)
    view = augment.center_view(image, 227).numpy()
    expected = image[14:241, 36:263].astype(np.float32) - MEAN
    np.testing.assert_allclose(view, expected, atol=1e-3)
    np.testing.assert_allclose(_in_dataset(lambda x: augment.center_view(x, 227), image), view, atol=1e-4)
    signature = tf.function(lambda x: augment.center_view(x, 227),
                            input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    np.testing.assert_allclose(signature(image).numpy(), view, atol=1e-4)


def test_ten_crop_geometry():
    image = _smooth_image(256, 256)
    views = augment.ten_crop(image, 227).numpy() + MEAN
    assert views.shape == (10, 227, 227, 3)
    f = image.astype(np.float32)
    expected = [f[:227, :227], f[:227, 29:], f[29:, :227], f[29:, 29:], f[14:241, 14:241]]
    for index, crop in enumerate(expected):
        np.testing.assert_allclose(views[index], crop, atol=1e-3)
        np.testing.assert_allclose(views[index + 5], crop[:, ::-1], atol=1e-3)
    np.testing.assert_allclose(_in_dataset(lambda x: augment.ten_crop(x, 227), image), views - MEAN, atol=1e-3)


def test_ten_crop_of_a_wide_image_uses_the_central_square():
    image = np.zeros((127, 255, 3), np.uint8)
    image[:, 64:191] = 255          # the central square is white, the sides black
    assert augment.scaled_size(113) == 127      # so there is no resampling
    views = augment.ten_crop(image, 113).numpy() + MEAN
    np.testing.assert_allclose(views, 255.0, atol=1e-3)


def test_paper_crop_window_stays_in_the_central_square():
    windows = np.array([augment.paper_crop_window(tf.constant([375, 500]), 227, tf.constant([s, 7])).numpy()
                        for s in range(200)])
    side = round(227 * 375 / 256)
    assert (windows[:, 2] == side).all() and (windows[:, 3] == side).all()
    assert windows[:, 0].min() >= 0 and windows[:, 0].max() + side <= 375
    assert windows[:, 1].min() >= 62 and windows[:, 1].max() + side <= 62 + 375 + 1
    # The offsets cover the whole 0..29 range of the 256-scaled square (in original pixels).
    assert windows[:, 0].min() <= 2 and windows[:, 0].max() >= 375 - side - 2


def test_decode_crop_matches_full_decode_for_png_and_jpeg():
    array = _smooth_image(120, 160)
    window = tf.constant([10, 20, 64, 64])
    for fmt in ("PNG", "JPEG"):
        data = _encode(array, fmt, quality=95)
        crop = augment.decode_random_crop(data, lambda shape: window).numpy()
        full = augment.decode_image(data).numpy()[10:74, 20:84]
        assert crop.shape == (64, 64, 3)
        assert np.abs(crop.astype(int) - full.astype(int)).mean() < 2.0


@pytest.mark.parametrize("side,min_side,scale", [(100, 76, 1), (151, 76, 1), (152, 76, 2), (304, 76, 4),
                                                  (607, 76, 4), (608, 76, 8), (5000, 76, 8), (375, 256, 1)])
def test_jpeg_scale_is_the_largest_that_keeps_min_side(side, min_side, scale):
    assert augment.JPEG_SCALES[int(augment.jpeg_scale_index(side, min_side))] == scale


def _photo(scale=1):
    """matplotlib's sample photograph (grace_hopper.jpg, 512x600, installed with matplotlib),
    enlarged `scale` times (Lanczos): uint8 [H, W, 3]."""
    import matplotlib

    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    with Image.open(path) as image:
        image = image.convert("RGB")
        return np.asarray(image.resize((image.width * scale, image.height * scale), Image.LANCZOS))


def _lanczos_center_view(array, image_size):
    """center_view made with PIL's Lanczos resize: the high-quality reference."""
    side = augment.scaled_size(image_size)
    height, width = array.shape[:2]
    size = (round(width * side / height), side) if height <= width else (side, round(height * side / width))
    resized = np.asarray(Image.fromarray(array).resize(size, Image.LANCZOS), np.float32)
    top, left = (size[1] - image_size) // 2, (size[0] - image_size) // 2
    return resized[top:top + image_size, left:left + image_size] - MEAN


@pytest.mark.parametrize("scale,image_size,shape", [(1, 227, (300, 256)), (1, 67, (150, 128)),
                                                    (4, 227, (300, 256)), (4, 67, (300, 256))])
def test_large_jpegs_are_decoded_at_reduced_scale_for_the_views(scale, image_size, shape):
    # A 600x512 photo at S=227: decoded at 1/2 (shorter side 256 = scaled_size(227)); at 4x that
    # size, at 1/8. The centre view is no further from a Lanczos-made one than the view made from
    # the full-size decode (measured: 2.00 vs 2.16, 3.74 vs 4.28, 1.58 vs 2.51, 4.08 vs 4.20).
    array = _photo(scale)
    data = _encode(array, "JPEG", quality=90)
    image = augment.decode_for_view(data, image_size).numpy()
    assert image.shape == shape + (3,)
    np.testing.assert_array_equal(_in_dataset(lambda d: augment.decode_for_view(d, image_size), data), image)
    reference = _lanczos_center_view(array, image_size)
    scaled_error = np.abs(augment.center_view(image, image_size).numpy() - reference).mean()
    full_error = np.abs(augment.center_view(augment.decode_image(data), image_size).numpy() - reference).mean()
    assert scaled_error <= full_error + 0.05


def test_decode_for_view_decodes_small_jpegs_and_other_formats_whole():
    array = _smooth_image(150, 480)  # shorter side 150 < 2 x scaled_size(67) = 152
    for fmt in ("JPEG", "PNG"):
        assert augment.decode_for_view(_encode(array, fmt), 67).shape == (150, 480, 3)
    np.testing.assert_array_equal(augment.decode_for_view(_encode(array, "JPEG"), 67),
                                  augment.decode_image(_encode(array, "JPEG")))


def test_train_crop_decodes_large_windows_at_reduced_scale():
    # The paper's window at S=67 in the 600x512 photo is 451 pixels: decoded at 1/4, ~113 >= 67.
    photo = _photo()
    data = _encode(photo, "JPEG", quality=90)
    seed = tf.constant([3, 8], tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    window_fn = augment.crop_window_fn("paper", 67, seeds[0])
    top, left, height, width = window_fn(tf.constant(photo.shape[:2])).numpy()
    crop = augment.decode_random_crop(data, window_fn, min_side=67).numpy().astype(np.float32)
    # Each edge of the window moves to the nearest multiple of 4 original pixels (halves up).
    edges = [int(np.floor(x / 4 + 0.5)) * 4 for x in (top, left, top + height, left + width)]
    assert max(abs(e - x) for e, x in zip(edges, (top, left, top + height, left + width))) <= 2
    assert crop.shape == ((edges[2] - edges[0]) // 4, (edges[3] - edges[1]) // 4, 3) and min(crop.shape[:2]) >= 67
    # Each pixel is (close to) the mean of its 4x4 original pixels.
    full = augment.decode_image(data).numpy().astype(np.float32)[edges[0]:edges[2], edges[1]:edges[3]]
    box_means = full.reshape(crop.shape[0], 4, crop.shape[1], 4, 3).mean(axis=(1, 3))
    assert np.abs(crop - box_means).mean() < 2.0
    view = augment.train_crop(data, 67, seed, "paper").numpy()
    assert view.shape == (67, 67, 3)
    np.testing.assert_array_equal(_in_dataset(lambda d, s: augment.train_crop(d, 67, s, "paper"), data, seed), view)


def test_resize_shorter_side_antialiases_large_reductions():
    checkerboard = (np.indices((240, 320)).sum(0) % 2 * 255).astype(np.uint8)
    image = np.repeat(checkerboard[..., None], 3, axis=2)
    small = augment.resize_shorter_side(image, 60).numpy()   # 4x smaller: antialiased -> grey
    assert small.shape == (60, 80, 3)
    assert np.abs(small[2:-2, 2:-2] - 127.5).max() < 10
    mild = augment.resize_shorter_side(np.full((300, 400, 3), 90, np.uint8), 256).numpy()
    assert mild.shape == (256, 341, 3)
    np.testing.assert_allclose(mild, 90.0, atol=1e-3)


def test_random_flip_is_identity_or_mirror_and_both_happen():
    image = tf.constant(_smooth_image(8, 9))
    flipped = 0
    for s in range(40):
        out = augment.random_flip(image, tf.constant([s, 0])).numpy()
        if np.array_equal(out, image.numpy()[:, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(out, image.numpy())
    assert 5 < flipped < 35


def test_pca_lighting_statistics():
    # The shift is the same for every pixel; over many draws it has zero mean and covariance
    # P diag((0.1 * 255 * lambda)^2) P^T, i.e. independent along the eigenvectors.
    zeros = tf.zeros([2, 2, 3])
    seeds = tf.data.Dataset.range(4000).map(lambda s: tf.stack([s, s + 1]))
    draws = next(iter(seeds.map(lambda s: augment.pca_lighting(zeros, s)[0, 0]).batch(4000))).numpy()
    eigvec = np.array(augment.IMAGENET_PCA_EIGVEC)
    eigval = np.array(augment.IMAGENET_PCA_EIGVAL)
    coefficients = draws @ eigvec               # coordinates along p1, p2, p3
    std = 0.1 * 255 * eigval
    assert np.all(np.abs(coefficients.mean(0)) < 4 * std / np.sqrt(len(draws)))
    np.testing.assert_allclose(coefficients.std(0), std, rtol=0.06)
    correlation = np.corrcoef(coefficients.T)
    assert np.all(np.abs(correlation[np.triu_indices(3, 1)]) < 0.08)
    # Shift along p1 (brightness) dominates.
    assert std[0] > 10 * std[1]


def test_subtract_mean_per_channel_and_per_pixel():
    image = np.full((4, 4, 3), 100, np.uint8)
    np.testing.assert_allclose(augment.subtract_mean(image).numpy(), np.broadcast_to(100 - MEAN, (4, 4, 3)), atol=1e-4)
    mean_image = np.arange(48, dtype=np.float32).reshape(4, 4, 3)
    np.testing.assert_allclose(augment.subtract_mean(image, mean_image).numpy(), 100 - mean_image)


@pytest.mark.parametrize("augmentation", augment.AUGMENTATIONS)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_train_view_eager_and_tf_data_agree(augmentation, fmt):
    data = _encode(_smooth_image(90, 120), fmt)
    seed = tf.constant([3, 4], tf.int64)
    eager = augment.train_view(data, 67, seed, augmentation).numpy()
    assert eager.shape == (67, 67, 3) and eager.dtype == np.float32
    in_data = _in_dataset(lambda x, s: augment.train_view(x, 67, s, augmentation), data, seed)
    np.testing.assert_allclose(in_data, eager, atol=1e-3)
    # Same seed, same view; the random augmentations differ for other seeds.
    np.testing.assert_allclose(augment.train_view(data, 67, seed, augmentation).numpy(), eager, atol=1e-4)
    others = [augment.train_view(data, 67, tf.constant([s, 9], tf.int64), augmentation).numpy() for s in range(3)]
    differs = any(np.abs(o - eager).max() > 1.0 for o in others)
    assert differs == (augmentation != "none")


@pytest.mark.parametrize("augmentation", augment.AUGMENTATIONS)
def test_train_view_is_the_uint8_crop_finished(augmentation):
    data = _encode(_smooth_image(90, 120), "JPEG")
    seeds = [tf.constant([s, 4], tf.int64) for s in range(3)]
    crops = [augment.train_crop(data, 67, seed, augmentation) for seed in seeds]
    shifts = [augment.lighting_shift(seed, augmentation) for seed in seeds]
    assert crops[0].dtype == tf.uint8 and crops[0].shape == (67, 67, 3) and shifts[0].shape == (3,)
    assert any(np.abs(s.numpy()).max() > 0.1 for s in shifts) == (augmentation == "paper")
    views = [augment.train_view(data, 67, seed, augmentation).numpy() for seed in seeds]
    # finish_views on a batch = on each view = the float view; the lighting shift is the one
    # pca_lighting adds to every pixel.
    batch = augment.finish_views(tf.stack(crops), tf.stack(shifts)).numpy()
    for crop, shift, view, batched in zip(crops, shifts, views, batch):
        expected = crop.numpy().astype(np.float32) - MEAN + shift.numpy()
        np.testing.assert_allclose(view, expected, atol=1e-4)
        np.testing.assert_allclose(batched, expected, atol=1e-4)
    # Rounding to uint8 moves a pixel by at most 0.5 from the float resize.
    if augmentation == "none":
        exact = augment.center_view(augment.decode_image(data), 67).numpy()
        assert np.abs(views[0] - exact).max() <= 0.5 + 1e-3


def test_train_crop_of_an_image_already_at_the_scaled_size_is_a_plain_crop():
    # 76 = scaled_size(67): the paper's crop is then 67 x 67 pixels of the stored image, no resize.
    image = _smooth_image(76, 90)
    data = _encode(image, "PNG")
    seed = tf.constant([5, 6], tf.int64)
    crop = augment.train_crop(data, 67, seed, "paper").numpy()
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    top, left, height, width = augment.paper_crop_window(tf.constant([76, 90]), 67, seeds[0]).numpy()
    assert (height, width) == (67, 67)
    expected = augment.random_flip(image[top:top + 67, left:left + 67], seeds[1]).numpy()
    np.testing.assert_array_equal(crop, expected)


def test_train_view_rejects_unknown_augmentation():
    with pytest.raises(ValueError, match="augmentation"):
        augment.train_view(b"", 67, tf.constant([0, 0]), "cutmix")
