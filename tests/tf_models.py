"""TensorFlow models for the converter tests, built in a child process (TensorFlow stays out of pytest's):
`python tests/tf_models.py OUT` writes a Keras-exported SavedModel, a tf.Module SavedModel with two outputs
and an int input, a frozen GraphDef, a .tflite, and a SavedModel using an op tf2onnx cannot convert."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(out: Path) -> None:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    tf.random.set_seed(0)
    inp = tf.keras.Input((8,), name="features")
    hidden = tf.keras.layers.Dense(16, activation="relu")(inp)
    probs = tf.keras.layers.Dense(3, activation="softmax", name="probs")(hidden)
    keras_model = tf.keras.Model(inp, probs)
    keras_model.export(str(out / "keras_saved_model"), verbose=False)

    class TwoOutputs(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(tf.random.normal([4, 2]))

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 4], tf.float32, name="x"),
                tf.TensorSpec([None], tf.int64, name="ids"),
            ]
        )
        def serve(self, x, ids):
            return {"scores": tf.matmul(x, self.w), "shifted": ids + 1}

    module = TwoOutputs()
    tf.saved_model.save(module, str(out / "module_saved_model"), signatures={"predict": module.serve})

    concrete = tf.function(lambda x: keras_model(x)).get_concrete_function(
        tf.TensorSpec([None, 8], tf.float32, name="features")
    )
    graph_def = convert_variables_to_constants_v2(concrete).graph.as_graph_def()
    (out / "frozen.pb").write_bytes(graph_def.SerializeToString())
    (out / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_model).convert())

    class Unconvertible(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3, 3], tf.float32, name="m")])
        def serve(self, m):
            return {"values": tf.linalg.eigh(m + tf.linalg.matrix_transpose(m))[0]}

    odd = Unconvertible()
    tf.saved_model.save(odd, str(out / "unconvertible_saved_model"), signatures=odd.serve)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
