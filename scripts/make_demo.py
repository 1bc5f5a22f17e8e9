"""Regenerate the bundled demo model: a small CNN trained on scikit-learn's digits (8x8 grayscale).

    python scripts/make_demo.py        # needs ferry[torch,sklearn,image]

Writes src/ferry/demo/digits/ (the package) and src/ferry/demo/samples/ (PNG images of held-out
digits, dark ink on white as a scanner would give them; the true digit is the first character of each
file name). Deterministic: fixed seeds, one thread.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import ferry

ROOT = Path(__file__).resolve().parents[1] / "src" / "ferry" / "demo"
PREPROCESSING = [
    {"op": "decode", "mode": "L"},
    {"op": "resize", "size": [8, 8], "resample": "box"},
    {"op": "invert", "max_value": 255.0},
    {"op": "scale", "factor": 16 / 255.0},
    {"op": "layout", "to": "CHW"},
]
POSTPROCESSING = [{"op": "softmax"}, {"op": "topk", "k": 3}]


class DigitsCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None]  # N,1,8,8 in 0..16
    y = digits.target
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _epoch in range(40):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    print(f"test accuracy: {accuracy:.4f} on {len(y_test)} held-out digits")

    result = ferry.export(
        model,
        torch.from_numpy(x_test[:4]),
        ROOT / "digits",
        input_names=["image"],
        output_names=["logits"],
        exporter="torchscript",  # opset 17: runs on every backend ferry has, the lite engine included
        name="digits",
        labels=[str(i) for i in range(10)],
        preprocessing=PREPROCESSING,
        postprocessing=POSTPROCESSING,
        descriptions={"image": "8x8 grayscale digit, ink 0..16 on background 0", "logits": "class scores"},
        overwrite=True,
    )
    print(result)

    samples = ROOT / "samples"
    shutil.rmtree(samples, ignore_errors=True)
    samples.mkdir(parents=True)
    for digit in range(10):
        for k, i in enumerate(np.flatnonzero(y_test == digit)[:2]):
            ink = x_test[i, 0] / 16.0
            pixels = (255 - ink * 255).round().astype(np.uint8)
            Image.fromarray(pixels, "L").resize((32, 32), Image.Resampling.NEAREST).save(samples / f"{digit}_{k}.png")
    np.savez_compressed(samples / "test.npz", image=x_test, label=y_test)
    print(f"wrote {len(list(samples.glob('*.png')))} sample images and test.npz to {samples}")


if __name__ == "__main__":
    main()
