"""`ferry export web` and `ferry serve-web`, checked in Debian's headless chromium through Playwright.

The runtime files come the way a user's do: from the npm registry once, integrity-checked, then from
the cache (`~/.cache/ferry`)."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import ferry
from conftest import IMAGE_STEPS, make_mlp, tiny_bert_package, torch_cnn_package
from ferry.cli import cli, main
from ferry.errors import ExportError, InputError
from ferry.processing.image import preprocess_image
from ferry.processing.outputs import postprocess
from ferry.web import export_web, runtime
from ferry.web.preview import SiteServer
from web_helpers import CLASSIFY_JS, PREDICT_ERROR_JS, PREDICT_JS, PREPROCESS_JS, b64, error_of, launch, wait_ready

playwright_api = pytest.importorskip("playwright.sync_api")
DEMO = Path(ferry.__file__).parent / "demo"
SAMPLES = sorted((DEMO / "samples").glob("*.png"))


@pytest.fixture(scope="module")
def playwright():
    with playwright_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """Packages and their sites, made once for the module: the demo digits, a torch CNN, a tiny BERT."""
    root = tmp_path_factory.mktemp("web")
    packages = {
        "digits": ferry.load(DEMO / "digits"),
        "cnn": torch_cnn_package(root / "cnn-pkg"),
        "bert": tiny_bert_package(root / "bert-pkg"),
    }
    return {name: (pkg, export_web(pkg, root / f"{name}-site").path) for name, pkg in packages.items()}


@pytest.fixture
def serve():
    servers = []

    def start(site: Path, isolation: bool = True) -> SiteServer:
        servers.append(SiteServer(site, port=0, isolation=isolation).start())
        return servers[-1]

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def open_site(playwright, tmp_path, url: str, name: str = "profile"):
    context = launch(playwright, tmp_path / name)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    wait_ready(page)
    assert not errors, errors
    return context, page


# --- the folder ---------------------------------------------------------------------------------------


def test_site_holds_the_model_manifest_and_only_the_wasm_runtime(sites):
    pkg, site = sites["digits"]
    names = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    runtime_files = {f"ort/{n}" for n in runtime.BUILDS["wasm"].files}
    assert names == {"index.html", "ferry.js", "sw.js", "model.json", "model.onnx"} | runtime_files
    manifest = json.loads((site / "model.json").read_text())
    assert manifest["signature"] == pkg.signature.to_dict()
    assert manifest["preprocessing"] == pkg.manifest.preprocessing and manifest["labels"] == pkg.manifest.labels
    assert manifest["model"]["sha256"] == pkg.manifest.files["model.onnx"].sha256
    assert manifest["runtime"] == {"name": "onnxruntime-web", "version": runtime.VERSION, "base": "ort/",
                                   "builds": {"wasm": "ort.wasm.min.mjs"}}  # fmt: skip
    assert (site / "model.onnx").read_bytes() == pkg.model_path.read_bytes()
    # the cache name in sw.js follows the site's content
    assert re.search(r'"ferry-[0-9a-f]{16}"', (site / "sw.js").read_text())


def test_webgpu_adds_its_build_and_runtime_url_copies_none(sites, tmp_path):
    pkg, _ = sites["digits"]
    result = export_web(pkg, tmp_path / "gpu", webgpu=True)
    assert {f.name for f in result.files} >= {f"ort/{n}" for n in runtime.BUILDS["webgpu"].files}
    assert result.transfer < 4.5e6  # the WebGPU wasm is fetched only where it is used
    url = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{runtime.VERSION}/dist/"
    cdn = export_web(pkg, tmp_path / "cdn", runtime_url=url)
    assert not (tmp_path / "cdn" / "ort").exists()
    assert json.loads((cdn.path / "model.json").read_text())["runtime"]["base"] == url


def test_summary_reports_each_file_with_its_gzip_size(sites, tmp_path):
    result = export_web(sites["digits"][0], tmp_path / "s")
    wasm = next(f for f in result.files if f.name.endswith(".wasm"))
    assert 2e6 < wasm.gzip_size < wasm.size / 3  # the 14 MB wasm travels as about 3.7 MB
    text = result.summary()
    assert "ort/ort-wasm-simd-threaded.wasm" in text and f"{wasm.gzip_size:,}" in text and "MB gzip" in text


def test_cli_export_and_a_site_is_replaced_whole(tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "stale.txt").write_text("from before")
    result = CliRunner().invoke(cli, ["export", "web", str(DEMO / "digits"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "first visit transfers" in result.output
    assert (out / "model.json").is_file() and not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no staging folder left behind


def test_external_data_does_not_fit_a_page(tmp_path):
    path = tmp_path / "big.onnx"
    onnx.save(make_mlp(), str(path), save_as_external_data=True, size_threshold=0, location="big.onnx.data")
    with pytest.raises(ExportError, match="external data"):
        export_web(ferry.load(path), tmp_path / "site")
    assert not (tmp_path / "site").exists()


# --- the runtime files --------------------------------------------------------------------------------


def _tarball(tmp_path: Path, version: str) -> Path:
    path = tmp_path / "ort.tgz"
    with tarfile.open(path, "w:gz") as tar:
        data = json.dumps({"name": "onnxruntime-web", "version": version}).encode()
        info = tarfile.TarInfo("package/package.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_runtime_of_another_version_is_refused(sites, tmp_path):
    with pytest.raises(ExportError, match=rf"onnxruntime-web 1\.18\.0, but .* built for {re.escape(runtime.VERSION)}"):
        export_web(sites["digits"][0], tmp_path / "site", runtime_from=_tarball(tmp_path, "1.18.0"))
    folder = tmp_path / "node_modules" / "onnxruntime-web"
    folder.mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps({"version": runtime.VERSION}))
    with pytest.raises(ExportError, match="dist/ort.wasm.min.mjs is missing"):
        export_web(sites["digits"][0], tmp_path / "site", runtime_from=folder)
    assert not (tmp_path / "site").exists()


def test_no_registry_and_no_cache_says_what_to_do(sites, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")  # nothing listens on the discard port
    monkeypatch.delenv("FERRY_ORT_WEB", raising=False)
    with pytest.raises(ExportError, match="could not download onnxruntime-web .* --runtime-from"):
        export_web(sites["digits"][0], tmp_path / "site")


def test_a_download_that_does_not_match_npms_hash_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "_download", lambda url: b"not the tarball")
    with pytest.raises(ExportError, match="does not match npm's integrity hash"):
        runtime.copy_runtime(["wasm"], tmp_path / "out")
    assert not (tmp_path / "cache" / "ferry" / runtime.TARBALL).exists()


# --- the preview server -------------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", [True, False])
def test_serve_web_sends_mime_types_and_isolation_headers(sites, serve, isolation):
    server = serve(sites["digits"][1], isolation=isolation)
    assert server.server_address[0] == "127.0.0.1"
    types = {"ort/ort-wasm-simd-threaded.wasm": "application/wasm", "ort/ort.wasm.min.mjs": "text/javascript",
             "ferry.js": "text/javascript", "model.json": "application/json", "index.html": "text/html"}  # fmt: skip
    for name, mime in types.items():
        r = httpx.get(server.url + name)
        assert r.status_code == 200 and r.headers["content-type"].startswith(mime), (name, r.headers)
        assert ("cross-origin-embedder-policy" in r.headers) is isolation
        assert r.headers.get("cross-origin-opener-policy") == ("same-origin" if isolation else None)


def test_serve_web_refuses_a_folder_that_is_not_a_site(tmp_path, capsys):
    assert main(["serve-web", str(tmp_path)]) == 1
    assert "no model.json; is this a folder `ferry export web` wrote?" in capsys.readouterr().err


# --- in the browser -----------------------------------------------------------------------------------


def python_top(pkg: ferry.ModelPackage, images: list[Path]) -> list[list[dict]]:
    x = np.stack([preprocess_image(p, pkg.manifest.preprocessing) for p in images])
    logits = ferry.create_predictor(ferry.Config(pkg)).predict(x)[pkg.signature.outputs[0].name]
    return postprocess(logits, pkg.manifest.postprocessing, pkg.manifest.labels)


def assert_same_top(got: list[list[dict]], want: list[list[dict]], atol: float) -> None:
    assert len(got) == len(want)
    for g_row, w_row in zip(got, want):
        assert [g["label"] for g in g_row][:1] == [w["label"] for w in w_row][:1]
        np.testing.assert_allclose([g["score"] for g in g_row], [w["score"] for w in w_row], atol=atol)


def test_demo_digits_in_the_page_match_ferry_predict(sites, serve, playwright, tmp_path):
    pkg, site = sites["digits"]
    context, page = open_site(playwright, tmp_path, serve(site).url)
    try:
        got = page.evaluate(CLASSIFY_JS, [b64(p) for p in SAMPLES])
    finally:
        context.close()
    want = python_top(pkg, SAMPLES)
    assert_same_top(got, want, atol=1e-5)


def _noise_png(path: Path, size: tuple[int, int], mode: str, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    gradient = np.linspace(0, 255, size[0], dtype=np.float32)[None, :, None]
    arr = ((arr.astype(np.float32) + gradient) / 2).astype(np.uint8)  # smooth and noisy parts
    if mode == "RGBA":
        arr[..., 3] = 255
    Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(path)
    return path


PREPROCESS_CASES = {
    "the CNN's (resize shorter side, crop, normalize)": IMAGE_STEPS,
    "digits (gray, box, invert)": json.loads((DEMO / "digits" / "ferry.json").read_text())["preprocessing"],
    **{
        f"{resample} to [w,h], HWC": [
            {"op": "decode", "mode": "RGB"},
            {"op": "resize", "size": [19, 31], "resample": resample},
            {"op": "scale", "factor": 1 / 255},
            {"op": "layout", "to": "HWC"},
        ]  # fmt: skip
        for resample in ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
    },
    "upscale bicubic": [{"op": "decode", "mode": "RGB"}, {"op": "resize", "size": [90, 70], "resample": "bicubic"}],
    "crop larger than the image": [{"op": "decode", "mode": "L"}, {"op": "center_crop", "size": [64, 20]}],
    "decode only": [{"op": "decode", "mode": "RGB"}],
}


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_preprocessing_in_js_gives_pythons_numbers(sites, serve, playwright, tmp_path, mode):
    _, site = sites["digits"]
    images = [_noise_png(tmp_path / f"{i}.png", size, mode, i) for i, size in enumerate([(37, 23), (23, 41)])]
    context, page = open_site(playwright, tmp_path, serve(site).url)
    try:
        for case, steps in PREPROCESS_CASES.items():
            for image in images:
                got = page.evaluate(PREPROCESS_JS, [b64(image), steps])
                want = preprocess_image(image, steps)
                assert got["shape"] == list(want.shape), (case, image.name)
                # the same integer resampling and float32 steps: equal, not just close
                np.testing.assert_array_equal(np.float32(got["data"]), want.reshape(-1), err_msg=case)
    finally:
        context.close()


def test_torch_cnn_in_the_page_matches_the_python_predictor(sites, serve, playwright, tmp_path):
    pkg, site = sites["cnn"]
    images = [_noise_png(tmp_path / f"{i}.png", (48, 40), "RGB", i) for i in range(4)]
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    context, page = open_site(playwright, tmp_path, serve(site).url)
    try:
        top = page.evaluate(CLASSIFY_JS, [b64(p) for p in images])
        feeds = {"image": {"data": x.ravel().tolist(), "shape": list(x.shape), "dtype": "float32"}}
        out = page.evaluate(PREDICT_JS, feeds)
    finally:
        context.close()
    assert_same_top(top, python_top(pkg, images), atol=1e-5)
    want = ferry.create_predictor(ferry.Config(pkg)).predict(x)["logits"]
    assert out["logits"]["shape"] == [3, 5]
    np.testing.assert_allclose(np.float32(out["logits"]["data"]).reshape(3, 5), want, atol=1e-5)


def test_transformer_on_token_ids_matches_the_python_predictor(sites, serve, playwright, tmp_path):
    pkg, site = sites["bert"]
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 100, (2, 12)).astype(np.int64)
    mask = np.ones((2, 12), np.int64)
    mask[1, 8:] = 0
    feeds = {k: {"data": v.ravel().tolist(), "shape": list(v.shape), "dtype": "int64"}
             for k, v in {"input_ids": ids, "attention_mask": mask}.items()}  # fmt: skip
    context, page = open_site(playwright, tmp_path, serve(site).url)
    try:
        out = page.evaluate(PREDICT_JS, feeds)
        assert "input_ids: int64[batch,sequence]" in page.inner_text("#about")
        page.click("#run")  # the demo's tensor form (not the image one), filled with random token ids
        page.wait_for_selector("body[data-done='1']", state="attached")
        assert page.inner_text("#outputs").startswith("hidden: float32[1,1,32]")
    finally:
        context.close()
    want = ferry.create_predictor(ferry.Config(pkg)).predict({"input_ids": ids, "attention_mask": mask})["hidden"]
    assert out["hidden"]["shape"] == [2, 12, 32]
    np.testing.assert_allclose(np.float32(out["hidden"]["data"]).reshape(want.shape), want, atol=1e-4)


def _int8(tmp_path: Path) -> ferry.ModelPackage:
    from ferry.compress.quantize import quantize

    return quantize(DEMO / "digits", tmp_path / "q", DEMO / "samples" / "test.npz", backend="onnxruntime").package


def _fp16(tmp_path: Path) -> ferry.ModelPackage:
    from ferry.compress.precision import convert_precision

    return convert_precision(DEMO / "digits", tmp_path / "h", "fp16").package


@pytest.mark.parametrize(
    ("precision", "make", "max_ratio", "atol"), [("int8", _int8, 0.4, 1e-3), ("fp16", _fp16, 0.6, 1e-3)]
)
def test_compressed_site_runs_the_compressed_model(serve, playwright, tmp_path, precision, make, max_ratio, atol):
    small = make(tmp_path)
    result = export_web(small, tmp_path / "site")
    assert result.precision == precision
    fp32 = next(f.size for f in export_web(DEMO / "digits", tmp_path / "fp32").files if f.name == "model.onnx")
    assert next(f.size for f in result.files if f.name == "model.onnx") < max_ratio * fp32
    context, page = open_site(playwright, tmp_path, serve(result.path).url)
    try:
        got = page.evaluate(CLASSIFY_JS, [b64(p) for p in SAMPLES])
    finally:
        context.close()
    assert_same_top(got, python_top(small, SAMPLES), atol=atol)


BAD_INPUTS = {
    "missing": ({"input_ids": {"data": [1, 2], "shape": [1, 2]}}, r"missing input\(s\) \['attention_mask'\]"),
    "unknown": (
        {
            "input_ids": {"data": [1], "shape": [1, 1]},
            "attention_mask": {"data": [1], "shape": [1, 1]},
            "ids": {"data": [1], "shape": [1, 1]},
        },
        r"unknown input\(s\) \['ids'\]",
    ),  # fmt: skip
    "rank": (
        {"input_ids": {"data": [1, 2], "shape": [2]}, "attention_mask": {"data": [1, 1], "shape": [1, 2]}},
        r"input 'input_ids': expected rank 2 int64\[batch,sequence\], got rank 1 with shape \[2\]",
    ),  # fmt: skip
    "shared dimension": (
        {"input_ids": {"data": [1, 2], "shape": [1, 2]}, "attention_mask": {"data": [1, 1, 1], "shape": [1, 3]}},
        r"dimension 'sequence' is 2 in input 'input_ids' but 3 in input 'attention_mask'",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_wrong_inputs_give_pythons_error_in_js(sites, serve, playwright, tmp_path, case):
    feeds, pattern = BAD_INPUTS[case]
    pkg, site = sites["bert"]
    with pytest.raises(InputError, match=pattern):
        arrays = {k: np.array(v["data"], np.int64).reshape(v["shape"]) for k, v in feeds.items()}
        ferry.create_predictor(ferry.Config(pkg)).predict(arrays)
    context, page = open_site(playwright, tmp_path, serve(site).url)
    try:
        message = page.evaluate(PREDICT_ERROR_JS, feeds)
    finally:
        context.close()
    assert message.startswith("FerryInputError: model 'bert'") and re.search(pattern, message), message


JS_ONLY_ERRORS = {
    "dtype": (
        "{input_ids: {data: new Float32Array(2), shape: [1, 2]}, "
        "attention_mask: {data: new BigInt64Array(2), shape: [1, 2]}}",
        r"input 'input_ids': expected dtype int64 \(BigInt64Array\), got float32",
    ),  # fmt: skip
    "length": (
        "{input_ids: {data: [1, 2, 3], shape: [1, 2]}, attention_mask: {data: [1, 1], shape: [1, 2]}}",
        r"shape \[1, 2\] holds 2 elements, but 3 were given",
    ),  # fmt: skip
    "not whole": (
        "{input_ids: {data: [1, 2.5], shape: [1, 2]}, attention_mask: {data: [1, 1], shape: [1, 2]}}",
        r"element 1 is 2.5, not a whole number \(dtype int64\)",
    ),  # fmt: skip
    "no shape": ("{input_ids: {data: [1, 2]}, attention_mask: {data: [1, 1], shape: [1, 2]}}", r"got no shape"),
    "one tensor into a two-input model": ("{data: [1], shape: [1]}", r"takes 2 inputs"),
}


def test_js_refuses_what_python_would_refuse_before_it_reaches_the_engine(sites, serve, playwright, tmp_path):
    _, site = sites["bert"]
    context, page = open_site(playwright, tmp_path, serve(site).url)
    try:
        for case, (feeds, pattern) in JS_ONLY_ERRORS.items():
            message = error_of(page, f"window.ferryModel.predict({feeds})")
            assert message.startswith("FerryInputError") and re.search(pattern, message), (case, message)
        message = error_of(page, "window.ferryModel.classify(new Blob([new Uint8Array([1, 2, 3])]))")
        assert message.startswith("FerryInputError: model 'bert' declares no image preprocessing")
    finally:
        context.close()


def test_an_undecodable_image_is_a_clear_error(sites, serve, playwright, tmp_path):
    _, site = sites["digits"]
    context, page = open_site(playwright, tmp_path, serve(site).url)
    try:
        message = error_of(page, "window.ferryModel.classify(new Blob([new Uint8Array([1, 2, 3])]))")
    finally:
        context.close()
    assert message.startswith("FerryInputError: could not decode image"), message


def test_threads_through_the_service_worker_on_a_host_that_sends_no_headers(sites, serve, playwright, tmp_path):
    _, site = sites["digits"]
    server = serve(site, isolation=False)
    context = launch(playwright, tmp_path / "profile")
    try:
        page = context.new_page()
        # without the service worker's headers the page is not isolated, and onnxruntime-web gets one thread
        page.goto(server.url + "model.json")
        bare = page.evaluate("async () => { const f = await import('./ferry.js'); const m = await f.load('model.json');"
                             " return [m.isolated, m.threads]; }")  # fmt: skip
        assert bare == [False, 1]
        page.goto(server.url)
        wait_ready(page)
        assert page.evaluate("[crossOriginIsolated, window.ferryModel.threads, navigator.hardwareConcurrency]")[:2] == [
            True,
            min(4, page.evaluate("navigator.hardwareConcurrency")),
        ]
        assert page.evaluate("window.ferryModel.threads") >= 2
        assert "cross-origin isolated" in page.inner_text("#status")
    finally:
        context.close()


def test_second_visit_works_with_the_server_stopped(sites, serve, playwright, tmp_path):
    pkg, site = sites["digits"]
    server = serve(site, isolation=False)
    context = launch(playwright, tmp_path / "profile")
    try:
        page = context.new_page()
        page.goto(server.url)
        wait_ready(page)
        server.shutdown()
        server.server_close()
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url, timeout=2)
        again = context.new_page()
        network: list[str] = []
        again.on("response", lambda r: network.append(r.url) if not r.from_service_worker else None)
        again.goto(server.url)
        wait_ready(again)
        got = again.evaluate(CLASSIFY_JS, [b64(SAMPLES[0])])
        assert again.evaluate("window.ferryModel.threads") >= 2
        assert network == []  # every file came from the service worker's cache
    finally:
        context.close()
    assert_same_top(got, python_top(pkg, SAMPLES[:1]), atol=1e-5)


def test_screenshot_of_the_demo_page_shows_the_predicted_label(sites, serve, playwright, tmp_path):
    from rapidocr_onnxruntime import RapidOCR

    _, site = sites["digits"]
    context, page = open_site(playwright, tmp_path, serve(site).url)
    try:
        page.set_input_files("#file", str(DEMO / "samples" / "3_0.png"))
        page.wait_for_selector("body[data-done='1']")
        shot = page.screenshot(full_page=True)
    finally:
        context.close()
    (tmp_path / "demo.png").write_bytes(shot)
    lines, _ = RapidOCR()(shot)
    text = " ".join(line[1] for line in lines or [])
    assert re.search(r"Predicted:?\s*3\b", text), text
    assert "2 threads" in text or "threads" in text, text


def test_webgpu_build_gives_the_wasm_numbers(sites, serve, playwright, tmp_path):
    """WebGPU here is Chromium's software adapter (SwiftShader): a correctness check, not a speed one."""
    pkg, _ = sites["digits"]
    site = export_web(pkg, tmp_path / "gpu", webgpu=True).path
    context = launch(playwright, tmp_path / "profile", extra=["--enable-unsafe-webgpu"])
    try:
        page = context.new_page()
        page.goto(serve(site).url)
        wait_ready(page)
        assert page.evaluate("window.ferryModel.backend") == "webgpu"
        got = page.evaluate(CLASSIFY_JS, [b64(p) for p in SAMPLES[:4]])
    finally:
        context.close()
    assert_same_top(got, python_top(pkg, SAMPLES[:4]), atol=1e-4)
