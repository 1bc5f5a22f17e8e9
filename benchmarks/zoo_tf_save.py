"""Builds and saves the zoo's TensorFlow models (`zoo_models.py` runs it in a child process, so that
TensorFlow stays out of the zoo's): `python benchmarks/zoo_tf_save.py saved_model|graphdef|tflite|module OUT`."""

from __future__ import annotations

import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"


def main(kind: str, out: str) -> None:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    tf.keras.utils.set_random_seed(0)
    if kind == "saved_model":
        tf.keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3)).export(out, verbose=False)
    elif kind == "graphdef":
        model = tf.keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
        spec = tf.TensorSpec([None, 64, 64, 3], tf.float32, name="image")
        frozen = convert_variables_to_constants_v2(tf.function(lambda x: model(x)).get_concrete_function(spec))
        with open(out, "wb") as f:
            f.write(frozen.graph.as_graph_def().SerializeToString())
    elif kind == "tflite":
        model = tf.keras.applications.EfficientNetB0(weights=None, input_shape=(64, 64, 3))
        with open(out, "wb") as f:
            f.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    else:

        class Ranker(tf.Module):
            def __init__(self) -> None:
                self.embed = tf.Variable(tf.random.normal([50, 16]))
                self.dense = tf.Variable(tf.random.normal([16, 1]))

            @tf.function(input_signature=[tf.TensorSpec([None, 12], tf.int64, name="item_ids")])
            def serve(self, item_ids):
                pooled = tf.reduce_mean(tf.nn.embedding_lookup(self.embed, item_ids), axis=1)
                return {"score": tf.sigmoid(tf.matmul(pooled, self.dense))}

        ranker = Ranker()
        tf.saved_model.save(ranker, out, signatures=ranker.serve)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
