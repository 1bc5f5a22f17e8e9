"""Small real models, built here with onnx.helper (no downloads)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ferry

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((4, 8)).astype(np.float32)
B1 = RNG.standard_normal(8).astype(np.float32)
W2 = RNG.standard_normal((8, 3)).astype(np.float32)


def mlp_reference(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ W1 + B1, 0) @ W2


def make_mlp(opset: int = 17, extra_output: bool = False, dropout: bool = False) -> onnx.ModelProto:
    """x[batch,4] -> MatMul+Add -> Relu -> MatMul -> y[batch,3]; optional side output and Dropout."""
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"], name="mm1"),
        helper.make_node("Add", ["h0", "B1"], ["h1"], name="add1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
    ]
    hidden = "h2"
    if dropout:
        nodes.append(helper.make_node("Dropout", ["h2"], ["h3"], name="drop"))
        hidden = "h3"
    nodes.append(helper.make_node("MatMul", [hidden, "W2"], ["y"], name="mm2"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])]
    if extra_output:
        nodes.append(helper.make_node("Sigmoid", ["z_in"], ["z"], name="side"))
        inputs.append(helper.make_tensor_value_info("z_in", TensorProto.FLOAT, ["batch", 2]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 2]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        inputs,
        outputs,
        initializer=[
            numpy_helper.from_array(W1, "W1"),
            numpy_helper.from_array(B1, "B1"),
            numpy_helper.from_array(W2, "W2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def make_two_input() -> onnx.ModelProto:
    """ids[batch,seq] int64, mask[batch,seq] float32 -> out = ids * mask (float) and an image input [batch,3,4,4]."""
    nodes = [
        helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["idsf", "mask"], ["out"]),
        helper.make_node("ReduceMean", ["img"], ["pooled"], keepdims=0, axes=[2, 3]),
    ]
    graph = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "seq"]),
            helper.make_tensor_value_info("img", TensorProto.FLOAT, ["batch", 3, 4, 4]),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq"]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 3]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture
def mlp_package(tmp_path: Path) -> ferry.ModelPackage:
    return ferry.save(make_mlp(), tmp_path / "mlp", name="mlp")


@pytest.fixture
def mlp_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.onnx"
    onnx.save(make_mlp(), str(path))
    return path


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 KiB tmpfs: a disk that fills up, for outputs that must appear whole or not at all (root only,
    as CI runs; the mount is undone after the test)."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


IMAGE_STEPS = [
    {"op": "decode", "mode": "RGB"},
    {"op": "resize", "size": 40, "resample": "bilinear"},
    {"op": "center_crop", "size": [32, 32]},
    {"op": "scale", "factor": 1 / 255},
    {"op": "normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    {"op": "layout", "to": "CHW"},
]


def torch_cnn_package(path: Path) -> ferry.ModelPackage:
    """A torch CNN (conv, batch norm, relu, pooling, linear) on 3x32x32 images with ImageNet-style
    preprocessing, softmax and top-3 over five labels: an image classifier as users export them."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 5),
    ).eval()  # fmt: skip
    for m in net.modules():  # trained-looking statistics, so that batch norm does something
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    ferry.export(
        net, torch.randn(2, 3, 32, 32), path, input_names=["image"], output_names=["logits"], name="cnn",
        preprocessing=IMAGE_STEPS, postprocessing=[{"op": "softmax"}, {"op": "topk", "k": 3}],
        labels=["cat", "dog", "bird", "fish", "frog"],
    )  # fmt: skip
    return ferry.load(path)


def wide_convolutions_package(path: Path) -> ferry.ModelPackage:
    """3x3 convolutions of 64 channels on 56x56: wide enough that MNN computes them by Winograd."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1)).eval()
    ferry.export(net, torch.randn(2, 16, 56, 56), path, input_names=["x"], output_names=["y"], name="wide")
    return ferry.load(path)


def cancelling_package(path: Path) -> ferry.ModelPackage:
    """Two nearly equal convolutions subtracted: a small difference of large values, which any int8 engine
    loses (its rounding is larger than the difference)."""
    import copy

    import torch

    torch.manual_seed(0)

    class Cancel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3)
            self.b = copy.deepcopy(self.a)
            with torch.no_grad():
                self.b.weight.add_(1e-3 * torch.randn_like(self.b.weight))

        def forward(self, x):
            return self.a(x) - self.b(x)

    ferry.export(Cancel().eval(), torch.randn(2, 3, 16, 16), path, input_names=["x"], output_names=["y"],
                 name="cancel")  # fmt: skip
    return ferry.load(path)


def tiny_bert(path: Path, vocab: int = 100, exporter: str = "torchscript"):
    """A two-layer BERT from transformers (random weights) exported as a package: token ids and mask in,
    hidden states out, batch and sequence dynamic. Returns the conversion (package and parity) and the
    torch module."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    bert = transformers.BertModel(config).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    axes = {0: "batch", 1: "sequence"}
    encoder = Encoder().eval()
    result = ferry.export(
        encoder, (torch.randint(0, vocab, (2, 16)), torch.ones(2, 16, dtype=torch.int64)), path,
        input_names=["input_ids", "attention_mask"], output_names=["hidden"], name="bert",
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes}, exporter=exporter,
    )  # fmt: skip
    return result, encoder


def tiny_bert_package(path: Path) -> ferry.ModelPackage:
    return tiny_bert(path)[0].package


def interruptible(command: list[str], **kwargs) -> subprocess.Popen:
    """Start `command` with SIGINT at its default, as a terminal's Ctrl-C finds it: a shell that runs the
    suite in the background (`cmd &` without job control) leaves SIGINT ignored, children inherit that,
    and Python then never raises KeyboardInterrupt."""
    import signal

    return subprocess.Popen(command, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)
