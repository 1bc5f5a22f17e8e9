"""PP-OCR as a pipeline, end to end: `ferry serve --demo ocr` reads rendered text, over HTTP and gRPC."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from ferry.compress.metrics import line_accuracy
from serving_helpers import free_port, post

tritongrpc = pytest.importorskip("tritonclient.grpc")
LINES = ["HELLO FERRY 2026", "ship models fast"]


def rendered(lines: list[str], size: int = 40) -> bytes:
    """Text drawn with the FreeType font Pillow ships: the ground truth is known by construction."""
    image = Image.new("RGB", (40 + 16 * size, 40 + len(lines) * int(size * 1.75)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size)
    for i, line in enumerate(lines):
        draw.text((20, 20 + i * int(size * 1.75)), line, fill="black", font=font)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache"))}
    cmd = [sys.executable, "-m", "ferry", "serve", "--demo", "ocr", "--http-port", str(http_port),
           "--grpc-port", str(grpc_port)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(proc.stderr.read().decode()) from None
            time.sleep(0.2)
    yield f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", Path(env["XDG_CACHE_HOME"]) / "ferry" / "ocr-demo"
    proc.terminate()
    proc.wait(30)


def test_the_announced_curl_line_reads_a_page(server, tmp_path):
    """The server's log says `try: curl -s .../v2/models/ocr/predict -F file=@page.png`; that line works."""
    import shlex
    import shutil

    http, *_ = server
    if shutil.which("curl") is None:
        pytest.fail("curl is part of the machine's base tools here; the test needs it")
    (tmp_path / "page.png").write_bytes(rendered(["curl reads this"]))
    line = f"curl -s http://{http}/v2/models/ocr/predict -F file=@page.png"
    done = subprocess.run(shlex.split(line), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    text = json.loads(done.stdout)["results"][0]["text"]
    assert len(text) == 1 and line_accuracy(text[0], "curl reads this") >= 0.9


def test_the_ocr_demo_reads_rendered_text_over_http(server):
    http, _, _ = server
    body = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"content_type": "base64"},
                                   "data": [base64.b64encode(rendered(LINES)).decode()]}]}).encode()  # fmt: skip
    status, _, data = post(http, "/v2/models/ocr/infer", body)
    assert status == 200, data
    outputs = {o["name"]: o for o in json.loads(data)["outputs"]}
    texts = outputs["text"]["data"]
    assert len(texts) == 2 and outputs["boxes"]["shape"] == [2, 4, 2]
    for got, want in zip(texts, LINES):
        assert line_accuracy(got, want) >= 0.9, (got, want)
    top = np.array(outputs["boxes"]["data"]).reshape(2, 4, 2)[:, 0, 1]
    assert top[0] < top[1]  # in reading order
    assert all(0.5 < s <= 1.0 for s in outputs["scores"]["data"])


def test_the_ocr_demo_over_grpc_and_an_image_without_text(server):
    _, grpc, _ = server
    client = tritongrpc.InferenceServerClient(grpc)
    for lines, count in ((["read me over grpc"], 1), ([], 0)):
        inp = tritongrpc.InferInput("image", [1], "BYTES")
        inp.set_data_from_numpy(np.array([rendered(lines) if lines else rendered([" "])], dtype=object))
        result = client.infer("ocr", [inp])
        texts = [t.decode() for t in result.as_numpy("text")]
        assert len(texts) == count
        if lines:
            assert line_accuracy(texts[0], lines[0]) >= 0.9, texts


def test_a_broken_image_is_a_400_that_names_the_step(server):
    http, _, _ = server
    body = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not an image"]}]})
    status, _, data = post(http, "/v2/models/ocr/infer", body.encode())
    assert status == 400 and "step 'det_input'" in json.loads(data)["error"]


def test_int8_recognition_still_reads_the_text(tmp_path):
    """The recogniser quantized to static int8 (calibrated on lines rendered here) reads as fp32 does."""
    from ferry.ocr import repository
    from serving_helpers import running_server

    root = repository(tmp_path / "repo", int8=True)
    assert ferry_package_is_int8(root / "ocr_rec" / "1")
    body = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"content_type": "base64"},
                                   "data": [base64.b64encode(rendered(LINES)).decode()]}]}).encode()  # fmt: skip
    with running_server(root) as s:
        status, _, data = post(s, "/v2/models/ocr/infer", body)
    assert status == 200, data
    texts = next(o["data"] for o in json.loads(data)["outputs"] if o["name"] == "text")
    assert len(texts) == 2 and all(line_accuracy(g, w) >= 0.9 for g, w in zip(texts, LINES)), texts


def ferry_package_is_int8(path) -> bool:
    import ferry

    manifest = ferry.load(path).manifest
    return manifest.compression.get("mode") == "static" and manifest.provenance.derived_from[-1]["step"] == "quantize"


def test_paddleocr_pipeline_clients_keep_working(server):
    """PaddleOCR's pipeline_http_client posts {"key": ["image"], "value": [base64]} to /ocr/prediction and
    reads value[0] back as a Python literal of [[(text, score), box], ...]."""
    import ast

    http, _, _ = server
    doc = {"key": ["image"], "value": [base64.b64encode(rendered(LINES)).decode()]}
    status, _, data = post(http, "/ocr/prediction", json.dumps(doc).encode())
    answer = json.loads(data)
    assert status == 200 and answer["err_no"] == 0 and answer["key"] == ["result"]
    items = ast.literal_eval(answer["value"][0])
    assert len(items) == 2
    for ((text, score), box), want in zip(items, LINES):
        assert line_accuracy(text, want) >= 0.9 and 0.5 < score <= 1.0 and len(box) == 4
    status, _, data = post(http, "/ocr/prediction", json.dumps({"key": ["image"], "value": ["%%%"]}).encode())
    assert status == 400 and json.loads(data)["err_no"] != 0


def test_multipart_uploads_run_through_the_pipeline(server):
    http, _, _ = server
    boundary = "ocrboundary"
    files = [rendered(["first upload"]), rendered(["second one here"])]
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"; filename="{i}.png"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
            + data
            + b"\r\n"
            for i, data in enumerate(files)
        )
        + f"--{boundary}--\r\n".encode()
    )
    status, _, data = post(http, "/v2/models/ocr/predict", body,
                           {"Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
    assert status == 200, data
    results = json.loads(data)["results"]
    assert [len(r["text"]) for r in results] == [1, 1]
    assert line_accuracy(results[0]["text"][0], "first upload") >= 0.9
    assert line_accuracy(results[1]["text"][0], "second one here") >= 0.9


def test_the_demo_tunes_each_stage_at_its_real_sizes(server, capsys):
    """`--demo ocr` records, per stage, the engine `ferry bench --tune` measured fastest at the sizes the stage
    meets (a page for the detector, 48-pixel-high crops for the others): backend auto reads it."""
    import ferry
    from ferry.cli import main

    *_, repo = server
    for kind in ("det", "cls", "rec"):
        record = ferry.load(repo / f"ocr_{kind}" / "1").manifest.tuning["fp32"]
        # ncnn converts at fixed shapes: not chosen for stages whose inputs have named dimensions
        assert record["fastest"] and set(record["fastest"].values()) <= {"onnxruntime", "openvino", "mnn"}
    args = ["bench", str(repo / "ocr_rec" / "1"), "--backend", "onnxruntime", "--batch", "2", "--runs", "2",
            "--warmup", "1", "--min-seconds", "0", "--dim", "height=48", "--dim", "width=96"]  # fmt: skip
    assert main(args) == 0
    assert main([*args[:-4], "--dim", "width=x"]) != 0


def test_ferry_predict_through_the_pipeline_writes_json_lines(server, tmp_path, monkeypatch):
    from ferry.cli import main

    *_, repo = server
    monkeypatch.setenv("XDG_CACHE_HOME", str(repo.parent.parent))  # the demo the server built
    (tmp_path / "in").mkdir()
    pages = {"a.png": ["first page"], "b.png": ["second page", "two lines"]}
    for name, lines in pages.items():
        (tmp_path / "in" / name).write_bytes(rendered(lines))
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--demo", "ocr", str(tmp_path / "in"), "-o", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["sample"] for r in records] == ["a.png", "b.png"]
    for record in records:
        want = pages[record["sample"]]
        assert len(record["text"]) == len(want) and len(record["boxes"]) == len(want)
        assert all(line_accuracy(g, w) >= 0.9 for g, w in zip(record["text"], want)), record
