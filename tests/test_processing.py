"""Declared pre/postprocessing: images to arrays the way the demo model was trained, scores to labels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ferry.errors import InputError
from ferry.processing import postprocess, preprocess_image, preprocess_images

DIGITS_STEPS = [
    {"op": "decode", "mode": "L"},
    {"op": "resize", "size": [8, 8], "resample": "box"},
    {"op": "invert", "max_value": 255.0},
    {"op": "scale", "factor": 16 / 255.0},
    {"op": "layout", "to": "CHW"},
]


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_digit_image_round_trips_to_training_values():
    ink = np.random.default_rng(0).integers(0, 17, (8, 8)).astype(np.float32)  # 0..16 like sklearn digits
    pixels = (255 - ink / 16 * 255).round().astype(np.uint8)
    big = np.kron(pixels, np.ones((4, 4), np.uint8))  # 32x32, as a scanner would give it
    out = preprocess_image(png_bytes(big), DIGITS_STEPS)
    assert out.shape == (1, 8, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], ink, atol=0.05)


def test_rgb_resize_crop_normalize_layout():
    img = np.zeros((40, 60, 3), np.uint8)
    img[..., 0] = 255
    steps = [
        {"op": "decode", "mode": "RGB"},
        {"op": "resize", "size": 20},  # shorter side to 20: 30x20
        {"op": "center_crop", "size": [20, 20]},
        {"op": "scale"},
        {"op": "normalize", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        {"op": "layout", "to": "CHW"},
    ]
    batch = preprocess_images([png_bytes(img), png_bytes(img)], steps)
    assert batch.shape == (2, 3, 20, 20)
    np.testing.assert_allclose(batch[:, 0], 1.0)
    np.testing.assert_allclose(batch[:, 1:], -1.0)


def test_bad_images_and_steps_are_input_errors():
    with pytest.raises(InputError, match="could not decode image"):
        preprocess_image(b"not an image", DIGITS_STEPS)
    with pytest.raises(InputError, match="unknown preprocessing step 'blur'"):
        preprocess_image(png_bytes(np.zeros((8, 8), np.uint8)), [{"op": "decode"}, {"op": "blur"}])
    with pytest.raises(InputError, match="must come before array steps"):
        preprocess_image(
            png_bytes(np.zeros((8, 8), np.uint8)), [{"op": "decode"}, {"op": "scale"}, {"op": "resize", "size": 4}]
        )


def test_softmax_topk_labels():
    scores = np.array([[1.0, 3.0, 2.0], [0.0, 0.0, 5.0]], np.float32)
    result = postprocess(scores, [{"op": "softmax"}, {"op": "topk", "k": 2}], ["cat", "dog", "eel"])
    assert [r["label"] for r in result[0]] == ["dog", "eel"]
    assert result[1][0]["label"] == "eel"
    probs = np.exp(scores[0]) / np.exp(scores[0]).sum()
    assert result[0][0]["score"] == pytest.approx(float(probs[1]), rel=1e-6)
    plain = postprocess(scores, [{"op": "softmax"}])
    np.testing.assert_allclose(plain.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(InputError, match="unknown postprocessing step"):
        postprocess(scores, [{"op": "argmax"}])
