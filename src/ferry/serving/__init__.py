"""Serving: models as network services over the Open Inference Protocol (HTTP/REST and gRPC).

The path of a request: `http/` or `grpc/` parses and validates it into an `InferRequest`
(`codec.py`), `registry.py` finds the model, its `batcher.py` queues it, a worker thread merges
compatible requests (`batching.collect`), runs the predictor once, splits the results and answers.
"""
