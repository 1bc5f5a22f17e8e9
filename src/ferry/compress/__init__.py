"""Compression: evaluate a package, quantize it to int8 with calibration and an accuracy guard, convert it
to fp16/bf16, prune it. The path a model takes:

    data.py       evaluation / calibration data: .npz, a folder of images with labels.txt, .jsonl
    metrics.py    top-1 / top-k, agreement and cosine against a reference, character accuracy
    evaluate.py   `evaluate(package, data, metric)` -> EvalResult
    quantize.py   calibrate, quantize, judge the candidates (the accuracy guard), then report
    quantizers.py one function per engine's tool: ONNX Runtime static / dynamic / weight-only, NNCF
    sensitivity.py  per-layer output error of a quantized graph against fp32: what the guard keeps in float
    report.py     size, latency and accuracy before and after
"""
