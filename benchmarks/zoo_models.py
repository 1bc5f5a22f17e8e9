"""The zoo's models, by source framework: each a name and a builder that writes a ferry package from
random weights, fitted estimators or files pip packages ship (no downloads). `benchmarks/zoo.py` runs
them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import ferry


@dataclass
class ZooModel:
    name: str
    source: str  # the framework it comes from
    build: Callable[[Path], Any]  # folder -> Conversion (or a package path for shipped ONNX files)
    dims: dict[str, int] = field(default_factory=dict)  # sizes of named dimensions for the made-up inputs


# --- PyTorch and transformers (random weights from small configs) -------------------------------------


def _hf(name: str, config_cls: str, model_cls: str, inputs: str, **config: Any) -> ZooModel:
    def build(root: Path):
        import torch
        import transformers

        torch.manual_seed(0)
        model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**config)).eval()
        if inputs == "tokens":
            example = (torch.randint(0, 100, (2, 16)), torch.ones(2, 16, dtype=torch.int64))
            names, axes = ["input_ids", "attention_mask"], {0: "batch", 1: "sequence"}

            class Wrap(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.model = model  # a submodule, so that tracing sees its weights as parameters

                def forward(self, input_ids, attention_mask):
                    out = self.model(input_ids=input_ids, attention_mask=attention_mask)
                    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        else:
            shape = {"image": (2, 3, 32, 32), "clip-image": (2, 3, 32, 32), "audio": (2, 1600)}[inputs]
            example = (torch.randn(*shape),)
            names, axes = ["pixel_values" if "image" in inputs else "input_values"], {0: "batch"}

            class Wrap(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.model = model

                def forward(self, x):
                    kw = {"pixel_values": x} if "image" in inputs else {"input_values": x}
                    out = self.model(**kw)
                    for key in ("last_hidden_state", "logits", "pooler_output"):
                        if getattr(out, key, None) is not None:
                            return getattr(out, key)
                    return out[0]

        dyn = {n: axes for n in names} | {"out": {0: "batch"}}
        return ferry.export(Wrap().eval(), example, root / name, input_names=names, output_names=["out"],
                            dynamic_axes=dyn, exporter="torchscript", name=name)  # fmt: skip

    return ZooModel(name, "transformers", build, {"sequence": 16})


TEXT = {"vocab_size": 100, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
TORCH = [
    _hf("bert", "BertConfig", "BertModel", "tokens", num_hidden_layers=2, **TEXT),
    _hf(
        "distilbert",
        "DistilBertConfig",
        "DistilBertModel",
        "tokens",
        vocab_size=100,
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
    ),  # fmt: skip
    _hf("roberta", "RobertaConfig", "RobertaModel", "tokens", num_hidden_layers=2, **TEXT),
    _hf("gpt2", "GPT2Config", "GPT2Model", "tokens", vocab_size=100, n_embd=32, n_layer=2, n_head=2),
    _hf(
        "t5-encoder",
        "T5Config",
        "T5EncoderModel",
        "tokens",
        vocab_size=100,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
    ),  # fmt: skip
    _hf(
        "vit",
        "ViTConfig",
        "ViTModel",
        "image",
        image_size=32,
        patch_size=8,
        num_hidden_layers=2,
        **{k: v for k, v in TEXT.items() if k != "vocab_size"},
    ),  # fmt: skip
    _hf(
        "wav2vec2",
        "Wav2Vec2Config",
        "Wav2Vec2Model",
        "audio",
        num_hidden_layers=2,
        conv_dim=(32, 32),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        **{k: v for k, v in TEXT.items() if k != "vocab_size"},
    ),  # fmt: skip
    _hf(
        "clip-text",
        "CLIPTextConfig",
        "CLIPTextModel",
        "tokens",
        num_hidden_layers=2,
        max_position_embeddings=32,
        **TEXT,
    ),  # fmt: skip
    _hf(
        "clip-vision",
        "CLIPVisionConfig",
        "CLIPVisionModel",
        "clip-image",
        image_size=32,
        patch_size=8,
        num_hidden_layers=2,
        **{k: v for k, v in TEXT.items() if k != "vocab_size"},
    ),  # fmt: skip
    _hf(
        "resnet",
        "ResNetConfig",
        "ResNetForImageClassification",
        "image",
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        num_labels=10,
    ),  # fmt: skip
    _hf(
        "mobilenet-v2",
        "MobileNetV2Config",
        "MobileNetV2ForImageClassification",
        "image",
        image_size=32,
        depth_multiplier=0.35,
        num_labels=10,
    ),  # fmt: skip
    _hf(
        "efficientnet",
        "EfficientNetConfig",
        "EfficientNetForImageClassification",
        "image",
        image_size=32,
        width_coefficient=0.25,
        depth_coefficient=0.25,
        hidden_dim=320,  # the default (2560) belongs to the default width (B7's 2.0)
        num_labels=10,
    ),  # fmt: skip
    _hf(
        "convnext",
        "ConvNextConfig",
        "ConvNextForImageClassification",
        "image",
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        num_labels=10,
    ),  # fmt: skip
]


# --- Paddle (paddle.vision, random init, saved for Paddle Inference in a child process) ---------------

PADDLE_SAVE = (
    "import sys, paddle\nfrom paddle.static import InputSpec\npaddle.seed(0)\n"
    "net = getattr(paddle.vision.models, sys.argv[1])(pretrained=False)\nnet.eval()\n"
    "paddle.jit.save(net, sys.argv[2], input_spec=[InputSpec([None, 3, 224, 224], 'float32', 'x')])\n"
)


def _paddle(arch: str) -> ZooModel:
    def build(root: Path):
        prefix = root / f"{arch}-paddle" / "inference"
        subprocess.run([sys.executable, "-c", PADDLE_SAVE, arch, str(prefix)], check=True, capture_output=True)
        return ferry.convert(prefix.parent, root / arch, name=arch)

    return ZooModel(arch, "paddle", build)


PADDLE = [_paddle(a) for a in ("resnet18", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "vgg11",
                                "shufflenet_v2_x0_25", "squeezenet1_0", "densenet121", "googlenet")]  # fmt: skip


# --- scikit-learn ----------------------------------------------------------------------------------


def _sk(name: str, make: Callable[[], Any], text: bool = False) -> ZooModel:
    def build(root: Path):
        from sklearn.datasets import load_digits

        rng = np.random.default_rng(0)
        if text:
            words = np.array(["ferry", "model", "browser", "ray", "kserve", "lite", "paddle", "onnx"])
            x = np.array([" ".join(rng.choice(words, 5)) for _ in range(200)], dtype=object)
            y = np.array([int("ferry" in s) for s in x])
            est = make().fit(x, y)
            return ferry.convert(est, root / name, example_inputs=x[:8], name=name)
        x, y = load_digits(return_X_y=True)
        x = x.astype(np.float32)
        est = make().fit(x, y)
        return ferry.convert(est, root / name, example_inputs=x[:8], name=name)

    return ZooModel(name, "sklearn", build)


def _sklearn_models() -> list[ZooModel]:
    def lr():
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=500)

    def rf():
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0)

    def gb():
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0)

    def svc():
        from sklearn.svm import SVC

        return SVC(probability=True, random_state=0)

    def knn():
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(5)

    def tfidf():
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        return make_pipeline(TfidfVectorizer(), LogisticRegression())

    return [_sk("logistic-regression", lr), _sk("random-forest", rf), _sk("gradient-boosting", gb),
            _sk("svc-probability", svc), _sk("k-nn", knn), _sk("tfidf-logistic", tfidf, text=True),
            ZooModel("column-transformer", "sklearn", _column_transformer)]  # fmt: skip


def _column_transformer(root: Path):
    """Numeric, integer and string columns of a DataFrame: one package input per column."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.normal(40, 10, 300), "visits": rng.integers(0, 9, 300),
                          "city": rng.choice(["a", "b", "oslo"], 300)})  # fmt: skip
    y = (frame.age > 40) ^ (frame.city == "oslo")
    columns = ColumnTransformer(
        [("num", StandardScaler(), ["age", "visits"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])]
    )
    clf = make_pipeline(columns, HistGradientBoostingClassifier(max_iter=20)).fit(frame, y)
    return ferry.convert(clf, root / "column-transformer", example_inputs=frame[:16], name="column-transformer")


# --- Keras 3 (torch backend) ------------------------------------------------------------------------


def _keras(name: str, make: Callable[[Any], Any], shape: tuple[int, ...]) -> ZooModel:
    def build(root: Path):
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras

        keras.utils.set_random_seed(0)
        model = make(keras)
        x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
        model(x)
        return ferry.convert(model, root / name, example_inputs=x, name=name)

    return ZooModel(name, "keras", build)


def _functional(k):
    a = k.Input((16,), name="features")
    h = k.layers.Dense(32, activation="relu")(a)
    return k.Model(a, [k.layers.Dense(3, name="scores")(h)])


KERAS = [
    _keras(
        "keras-sequential",
        lambda k: k.Sequential([k.Input((12,)), k.layers.Dense(16, activation="relu"), k.layers.Dense(4)]),
        (12,),
    ),  # fmt: skip
    _keras("keras-functional", _functional, (16,)),
    _keras(
        "keras-mobilenet-v3-small",
        lambda k: k.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3), include_preprocessing=False),
        (96, 96, 3),
    ),  # fmt: skip
    _keras(
        "keras-efficientnet-b0",
        lambda k: k.applications.EfficientNetB0(weights=None, input_shape=(64, 64, 3)),
        (64, 64, 3),
    ),  # fmt: skip
    _keras("keras-resnet50", lambda k: k.applications.ResNet50(weights=None, input_shape=(64, 64, 3)), (64, 64, 3)),
]


# --- TensorFlow (built and saved in a child process, converted through tf2onnx) --------------------------

TF_SAVE = Path(__file__).with_name("zoo_tf_save.py")  # run in a child: TensorFlow stays out of the zoo's process


def _tensorflow(name: str, kind: str, file: str) -> ZooModel:
    def build(root: Path):
        source = root / f"{name}-tf" / file
        source.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run([sys.executable, str(TF_SAVE), kind, str(source)], check=True, capture_output=True, env=env)
        return ferry.convert(source, root / name, name=name)

    return ZooModel(name, "tensorflow", build)


TENSORFLOW = [
    _tensorflow("tf-mobilenet-v2-saved-model", "saved_model", "saved_model"),
    _tensorflow("tf-resnet50-graphdef", "graphdef", "frozen.pb"),
    _tensorflow("tf-efficientnet-b0-tflite", "tflite", "model.tflite"),
    _tensorflow("tf-module-embedding", "module", "saved_model"),
]


# --- ONNX files that pip packages ship ---------------------------------------------------------------


def _shipped(name: str, file: str, dims: dict[str, int]) -> ZooModel:
    def build(root: Path):
        import rapidocr_onnxruntime

        path = Path(rapidocr_onnxruntime.__file__).parent / "models" / file
        return ferry.convert(path, root / name, name=name)

    return ZooModel(name, "onnx (rapidocr-onnxruntime)", build, dims)


SHIPPED = [
    _shipped("pp-ocrv4-det", "ch_PP-OCRv4_det_infer.onnx", {}),
    _shipped("pp-ocrv4-rec", "ch_PP-OCRv4_rec_infer.onnx", {}),
    _shipped("pp-ocr-cls", "ch_ppocr_mobile_v2.0_cls_infer.onnx", {}),
]

ZOO: list[ZooModel] = [*TORCH, *PADDLE, *_sklearn_models(), *KERAS, *TENSORFLOW, *SHIPPED]
