// ferry.js: run a ferry web export in the page, on onnxruntime-web.
//
//   import * as ferry from "./ferry.js";
//   await ferry.isolate();                       // optional: threads on hosts that send no COOP/COEP
//   const model = await ferry.load("model.json");
//   const out = await model.predict({ image: { data: Float32Array, shape: [1, 1, 8, 8] } });
//   const top = await model.classify(fileOrImageOrCanvas);  // [{ index, label, score }, ...]
//
// The preprocessing and postprocessing steps are those of the package (ferry.json), done here with the
// same arithmetic as ferry's Python code (src/ferry/processing/): Pillow's resampling filters in fixed
// point, float32 steps, Python's rounding. Inputs are checked against the signature with the messages
// the Python predictor gives.

export class FerryInputError extends Error {
  constructor(message) {
    super(message);
    this.name = "FerryInputError";
  }
}

const TYPED = {
  float32: Float32Array, float64: Float64Array, float16: Uint16Array,
  int8: Int8Array, int16: Int16Array, int32: Int32Array, int64: BigInt64Array,
  uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array, bool: Uint8Array,
};

const MAX_PIXELS = 50_000_000; // the Python default (processing/image.py)

// A 67-byte ONNX model (y = Identity(x)). Creating a session on it starts onnxruntime-web: download and
// compile its 14 MB wasm and start the threads, which it otherwise does only once the model is in hand.
// Done while the model downloads, it took 0.3-0.4 s off a first visit of MobileNetV2 here.
const STARTER = "CAcSADo3ChAKAXgSAXkiCElkZW50aXR5EgF3Wg8KAXgSCgoICAESBAoCCAFiDwoBeRIKCggIARIECgIIAUIECgAQDQ==";

async function fetchOk(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res;
}

async function sha256(bytes) {
  if (!globalThis.crypto?.subtle) return null; // not a secure context: nothing to check with
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Make the page cross-origin isolated through the site's service worker, so that onnxruntime-web can run
 * threads on a host that sends no COOP/COEP headers. Reloads the page once when the worker first takes
 * over; resolves to whether the page is isolated. */
export async function isolate(swUrl = "sw.js") {
  const key = "ferry-isolate-reloaded";
  if (globalThis.crossOriginIsolated) {
    sessionStorage.removeItem(key);
    navigator.serviceWorker?.register(swUrl).catch(() => {}); // for the cache; nothing here waits on it
    return true;
  }
  if (!("serviceWorker" in navigator) || !globalThis.isSecureContext) return false;
  await navigator.serviceWorker.register(swUrl);
  await navigator.serviceWorker.ready;
  if (sessionStorage.getItem(key)) {
    sessionStorage.removeItem(key); // reloaded once and still not isolated: run on one thread
    return false;
  }
  sessionStorage.setItem(key, "1");
  location.reload();
  return new Promise(() => {}); // the page is going away
}

/** Load a site's model.json and create the session. Options: backend ("auto" | "wasm" | "webgpu"),
 * threads (default: up to 4 when the page is cross-origin isolated, else 1). */
export async function load(manifestUrl = "model.json", options = {}) {
  const started = performance.now();
  const steps = {}; // where the load's time went, in ms
  let mark = started;
  const step = (name) => { const now = performance.now(); steps[name] = now - mark; mark = now; };
  const base = new URL(manifestUrl, globalThis.document?.baseURI ?? location.href);
  const manifest = await (await fetchOk(base)).json();
  if (manifest.format !== "ferry-web") throw new Error(`${base}: not a ferry web manifest`);
  const runtimeBase = new URL(manifest.runtime.base, base);
  const backend = await chooseBackend(manifest, options.backend ?? "auto");
  // the model's bytes download while the runtime loads
  const modelBytes = fetchOk(new URL(manifest.model.file, base)).then((r) => r.arrayBuffer());
  modelBytes.catch(() => {}); // awaited below, where its error is thrown
  const ort = await import(new URL(manifest.runtime.builds[backend], runtimeBase).href);
  step("runtime");
  const isolated = Boolean(globalThis.crossOriginIsolated);
  const threads = isolated ? options.threads ?? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.wasmPaths = runtimeBase.href;
  ort.env.wasm.numThreads = threads;
  const starter = Uint8Array.from(atob(STARTER), (c) => c.charCodeAt(0));
  await (await ort.InferenceSession.create(starter, { executionProviders: [backend] })).release();
  step("start");
  const bytes = new Uint8Array(await modelBytes);
  step("model");
  const digest = await sha256(bytes);
  if (digest !== null && digest !== manifest.model.sha256) {
    throw new Error(`${manifest.model.file}: sha256 ${digest} differs from the manifest's ${manifest.model.sha256}`);
  }
  step("verify");
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: [backend],
    graphOptimizationLevel: "all",
  });
  step("session");
  const info = { backend, threads, isolated, loadMs: performance.now() - started, loadSteps: steps, loadStartedAt: started };
  return new Model(manifest, ort, session, info);
}

async function chooseBackend(manifest, wanted) {
  const builds = manifest.runtime.builds;
  if (wanted === "wasm") return "wasm";
  if (wanted !== "auto" && wanted !== "webgpu") throw new Error(`backend must be auto, wasm or webgpu, got ${wanted}`);
  const adapter = builds.webgpu && navigator.gpu ? await navigator.gpu.requestAdapter().catch(() => null) : null;
  if (adapter) return "webgpu";
  if (wanted === "webgpu") {
    throw new Error(builds.webgpu ? "WebGPU is not available in this browser" : "this site was exported without --webgpu");
  }
  return "wasm";
}

const pyList = (names) => `[${names.map((n) => `'${n}'`).join(", ")}]`; // as Python prints a list of names

function describe(spec) {
  return `${spec.dtype}[${spec.shape.join(",")}]`;
}

export class Model {
  constructor(manifest, ort, session, info) {
    this.manifest = manifest;
    this.name = manifest.name;
    this.inputs = manifest.signature.inputs;
    this.outputs = manifest.signature.outputs;
    this.labels = manifest.labels ?? null;
    Object.assign(this, info); // backend, threads, isolated, loadMs, loadSteps
    this.timings = {};
    this._ort = ort;
    this._session = session;
  }

  /** Run the model. `feeds`: {name: {data, shape}} (data a typed array of the input's dtype, or a plain
   * array of numbers), or one {data, shape} for a one-input model. Returns {name: {data, shape, dtype}}. */
  async predict(feeds, options = {}) {
    const tensors = this._check(this._named(feeds));
    const started = performance.now();
    const names = options.outputs ?? this.outputs.map((o) => o.name);
    const result = await this._session.run(tensors, names);
    this.timings.predict = performance.now() - started;
    const out = {};
    for (const name of names) out[name] = { data: result[name].data, shape: Array.from(result[name].dims), dtype: result[name].type };
    return out;
  }

  /** The package's preprocessing on one image (Blob/File, URL, <img>, <canvas>, ImageBitmap or ImageData):
   * {data: Float32Array, shape}, without the batch axis, as `ferry.processing.preprocess_image` gives. */
  async preprocess(image, options = {}) {
    const steps = this.manifest.preprocessing ?? [];
    if (!steps.length) throw new FerryInputError(`model '${this.name}' declares no image preprocessing`);
    return preprocessImage(image, steps, options.maxPixels ?? MAX_PIXELS);
  }

  /** Preprocess, predict, postprocess one image. With top-k postprocessing: [{index, label, score}];
   * otherwise the postprocessed first output of the one sample. */
  async classify(image, options = {}) {
    const t0 = performance.now();
    const x = await this.preprocess(image, options);
    this.timings.preprocess = performance.now() - t0;
    const input = this.inputs[0];
    const out = await this.predict({ [input.name]: { data: x.data, shape: [1, ...x.shape] } });
    const first = out[this.outputs[0].name];
    const t1 = performance.now();
    const result = postprocess(first.data, first.shape, this.manifest.postprocessing ?? [], this.labels)[0];
    this.timings.postprocess = performance.now() - t1;
    return result;
  }

  _named(feeds) {
    const single = feeds instanceof this._ort.Tensor || (feeds && "data" in feeds && "shape" in feeds);
    if (!single) return feeds;
    if (this.inputs.length !== 1) {
      throw new FerryInputError(`model '${this.name}' takes ${this.inputs.length} inputs; pass {name: value} for each`);
    }
    return { [this.inputs[0].name]: feeds };
  }

  _check(feeds) {
    const expected = new Map(this.inputs.map((s) => [s.name, s]));
    const given = Object.keys(feeds ?? {});
    const unknown = given.filter((n) => !expected.has(n)).sort();
    const missing = [...expected.keys()].filter((n) => !given.includes(n)).sort();
    if (unknown.length || missing.length) {
      const parts = [];
      if (unknown.length) parts.push(`unknown input(s) ${pyList(unknown)}`);
      if (missing.length) parts.push(`missing input(s) ${pyList(missing)}`);
      const takes = this.inputs.map((s) => `${s.name}: ${describe(s)}`).join(", ");
      throw new FerryInputError(`model '${this.name}': ${parts.join("; ")}; the model takes ${takes}`);
    }
    const sizes = new Map();
    const tensors = {};
    for (const [name, value] of Object.entries(feeds)) {
      const spec = expected.get(name);
      const where = `model '${this.name}', input '${name}'`;
      const data = typedData(value, spec, where);
      const shape = Array.from(value.shape ?? value.dims ?? []);
      if (!value.shape && !value.dims) throw new FerryInputError(`${where}: expected {data, shape} ${describe(spec)}, got no shape`);
      if (shape.length !== spec.shape.length) {
        throw new FerryInputError(`${where}: expected rank ${spec.shape.length} ${describe(spec)}, got rank ${shape.length} with shape [${shape.join(", ")}]`);
      }
      spec.shape.forEach((dim, axis) => {
        if (!Number.isInteger(shape[axis]) || shape[axis] < 0) {
          throw new FerryInputError(`${where}: shape [${shape.join(", ")}] has a size that is not a whole number at axis ${axis}`);
        }
        if (typeof dim === "number" && dim >= 0 && shape[axis] !== dim) {
          throw new FerryInputError(`${where}: expected ${describe(spec)}, got shape [${shape.join(", ")}] (axis ${axis} must be ${dim})`);
        }
        if (typeof dim === "string") {
          const seen = sizes.get(dim);
          if (seen === undefined) sizes.set(dim, [name, shape[axis]]);
          else if (seen[1] !== shape[axis]) {
            throw new FerryInputError(`model '${this.name}': dimension '${dim}' is ${seen[1]} in input '${seen[0]}' but ${shape[axis]} in input '${name}'; inputs that share a dimension must agree`);
          }
        }
      });
      const count = shape.reduce((a, b) => a * b, 1);
      if (data.length !== count) {
        throw new FerryInputError(`${where}: shape [${shape.join(", ")}] holds ${count} elements, but ${data.length} were given`);
      }
      tensors[name] = new this._ort.Tensor(spec.dtype, data, shape);
    }
    return tensors;
  }
}

function typedData(value, spec, where) {
  const data = value instanceof Object && "data" in value ? value.data : undefined;
  const Typed = TYPED[spec.dtype];
  if (spec.dtype === "string") {
    if (!Array.isArray(data) || data.some((x) => typeof x !== "string")) throw new FerryInputError(`${where}: expected strings`);
    return data;
  }
  if (!Typed) throw new FerryInputError(`${where}: dtype ${spec.dtype} is not supported in the browser`);
  if (data instanceof Typed) return data;
  if (ArrayBuffer.isView(data)) {
    const got = data.constructor.name.replace("Array", "").toLowerCase().replace("big", "");
    throw new FerryInputError(`${where}: expected dtype ${spec.dtype} (${Typed.name}), got ${got} (${data.constructor.name}); ferry never casts silently`);
  }
  if (!Array.isArray(data)) {
    throw new FerryInputError(`${where}: expected a ${Typed.name} or an array of numbers ${describe(spec)}, got ${data === null ? "null" : typeof data}`);
  }
  const integer = !spec.dtype.startsWith("float");
  data.forEach((x, i) => {
    if (typeof x !== "number" || (integer && !Number.isInteger(x))) {
      throw new FerryInputError(`${where}: element ${i} is ${JSON.stringify(x)}, not ${integer ? "a whole number" : "a number"} (dtype ${spec.dtype})`);
    }
  });
  return Typed === BigInt64Array || Typed === BigUint64Array ? Typed.from(data, (x) => BigInt(x)) : Typed.from(data);
}

// ---- preprocessing: the arithmetic of src/ferry/processing/image.py ----

const FILTERS = {
  // name: [support, filter] as in Pillow's Resample.c
  box: [0.5, (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0)],
  bilinear: [1.0, (x) => { x = Math.abs(x); return x < 1.0 ? 1.0 - x : 0.0; }],
  hamming: [1.0, (x) => {
    x = Math.abs(x);
    if (x === 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x *= Math.PI;
    return (Math.sin(x) / x) * (0.54 + 0.46 * Math.cos(x));
  }],
  bicubic: [2.0, (x) => {
    const a = -0.5;
    x = Math.abs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
  }],
  lanczos: [3.0, (x) => {
    const sinc = (v) => { if (v === 0.0) return 1.0; v *= Math.PI; return Math.sin(v) / v; };
    return x >= -3.0 && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0;
  }],
};

const PRECISION_BITS = 32 - 8 - 2;

function coefficients(inSize, outSize, filterName) {
  const [support0, filter] = FILTERS[filterName];
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = support0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    const k = new Float64Array(xmax);
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) { k[x] = filter((x + xmin - center + 0.5) * ss); ww += k[x]; }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? k[x] / ww : k[x];
      kk[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss) {
  const v = Math.floor(ss / (1 << PRECISION_BITS)); // an arithmetic shift, without 32-bit overflow
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// One image: {width, height, channels, pixels: Uint8Array (HWC)}.
function resample(img, outW, outH, filterName) {
  if (filterName === "nearest") return resampleNearest(img, outW, outH);
  if (!(filterName in FILTERS)) throw new FerryInputError(`resize: unknown resample ${JSON.stringify(filterName)}`);
  const { width, height, channels: c } = img;
  let src = img;
  if (outW !== width) {
    const { ksize, bounds, kk } = coefficients(width, outW, filterName);
    const out = new Uint8Array(outW * height * c);
    for (let y = 0; y < height; y++) {
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1];
        for (let ch = 0; ch < c; ch++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let x = 0; x < xmax; x++) ss += src.pixels[(y * width + x + xmin) * c + ch] * kk[xx * ksize + x];
          out[(y * outW + xx) * c + ch] = clip8(ss);
        }
      }
    }
    src = { width: outW, height, channels: c, pixels: out };
  }
  if (outH !== height) {
    const { ksize, bounds, kk } = coefficients(height, outH, filterName);
    const out = new Uint8Array(outW * outH * c);
    for (let yy = 0; yy < outH; yy++) {
      const ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1];
      for (let x = 0; x < outW; x++) {
        for (let ch = 0; ch < c; ch++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let y = 0; y < ymax; y++) ss += src.pixels[((y + ymin) * outW + x) * c + ch] * kk[yy * ksize + y];
          out[(yy * outW + x) * c + ch] = clip8(ss);
        }
      }
    }
    src = { width: outW, height: outH, channels: c, pixels: out };
  }
  return src;
}

function resampleNearest(img, outW, outH) {
  // Pillow's ImagingScaleAffine: sample positions start at half a step and accumulate one step at a time
  const { width, height, channels: c } = img;
  const out = new Uint8Array(outW * outH * c);
  const sx = width / outW, sy = height / outH;
  const xin = new Int32Array(outW);
  for (let x = 0, xo = sx * 0.5; x < outW; x++, xo += sx) xin[x] = Math.min(width - 1, Math.trunc(xo));
  for (let y = 0, yo = sy * 0.5; y < outH; y++, yo += sy) {
    const yi = Math.min(height - 1, Math.trunc(yo));
    for (let x = 0; x < outW; x++) {
      for (let ch = 0; ch < c; ch++) out[(y * outW + x) * c + ch] = img.pixels[(yi * width + xin[x]) * c + ch];
    }
  }
  return { width: outW, height: outH, channels: c, pixels: out };
}

function pyRound(x) {
  // Python's round(): halves go to the even neighbour
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function resizeStep(img, size, resample_ = "bilinear") {
  let w, h;
  if (typeof size === "number") {
    const scale = size / Math.min(img.width, img.height);
    w = Math.max(1, pyRound(img.width * scale));
    h = Math.max(1, pyRound(img.height * scale));
  } else {
    [w, h] = [Math.trunc(size[0]), Math.trunc(size[1])];
  }
  if (w === img.width && h === img.height) return img;
  return resample(img, w, h, resample_.toLowerCase());
}

function centerCrop(img, size) {
  const [cw, ch] = [Math.trunc(size[0]), Math.trunc(size[1])];
  const left = Math.max(0, Math.floor((img.width - cw) / 2)), top = Math.max(0, Math.floor((img.height - ch) / 2));
  const c = img.channels;
  const out = new Uint8Array(cw * ch * c); // outside the image stays 0, as Pillow's crop fills it
  for (let y = 0; y < ch; y++) {
    const sy = top + y;
    if (sy >= img.height) break;
    for (let x = 0; x < cw; x++) {
      const sx = left + x;
      if (sx >= img.width) break;
      for (let k = 0; k < c; k++) out[(y * cw + x) * c + k] = img.pixels[(sy * img.width + sx) * c + k];
    }
  }
  return { width: cw, height: ch, channels: c, pixels: out };
}

async function headerSize(blob) {
  // width and height from the header, before decoding (PNG, GIF, JPEG); null for other formats
  const b = new Uint8Array(await blob.slice(0, 65536).arrayBuffer());
  const dv = new DataView(b.buffer);
  if (b.length >= 24 && b[0] === 0x89 && b[1] === 0x50) return [dv.getUint32(16), dv.getUint32(20)];
  if (b.length >= 10 && b[0] === 0x47 && b[1] === 0x49) return [dv.getUint16(6, true), dv.getUint16(8, true)];
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let i = 2;
    while (i + 9 < b.length && b[i] === 0xff) {
      const marker = b[i + 1], len = dv.getUint16(i + 2);
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) return [dv.getUint16(i + 7), dv.getUint16(i + 5)];
      i += 2 + len;
    }
  }
  return null;
}

async function decode(image, mode, maxPixels) {
  if (typeof image === "string") image = await (await fetchOk(image)).blob();
  const checkSize = (w, h) => {
    if (maxPixels !== null && w * h > maxPixels) {
      throw new FerryInputError(`image is ${w}x${h} = ${(w * h / 1e6).toFixed(1)} MP, over the limit of ${(maxPixels / 1e6).toFixed(1)} MP`);
    }
  };
  let rgba, width, height;
  if (typeof ImageData !== "undefined" && image instanceof ImageData) {
    ({ width, height } = image);
    checkSize(width, height);
    rgba = image.data;
  } else {
    if (image instanceof Blob) {
      const size = await headerSize(image);
      if (size) checkSize(...size);
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(image, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    } catch (exc) {
      throw new FerryInputError(`could not decode image: ${exc.message}`);
    }
    ({ width, height } = bitmap);
    checkSize(width, height);
    const canvas = new OffscreenCanvas(width, height);
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    rgba = ctx.getImageData(0, 0, width, height).data;
  }
  const n = width * height;
  if (mode === "RGB") {
    const pixels = new Uint8Array(n * 3);
    for (let i = 0; i < n; i++) { pixels[i * 3] = rgba[i * 4]; pixels[i * 3 + 1] = rgba[i * 4 + 1]; pixels[i * 3 + 2] = rgba[i * 4 + 2]; }
    return { width, height, channels: 3, pixels };
  }
  if (mode === "L") {
    const pixels = new Uint8Array(n);
    // Pillow's L24: ITU-R 601-2 luma in 16-bit fixed point
    for (let i = 0; i < n; i++) pixels[i] = (rgba[i * 4] * 19595 + rgba[i * 4 + 1] * 38470 + rgba[i * 4 + 2] * 7471 + 0x8000) >>> 16;
    return { width, height, channels: 1, pixels };
  }
  throw new FerryInputError(`decode: mode ${JSON.stringify(mode)} is not supported in the browser (RGB or L)`);
}

const IMAGE_OPS = new Set(["decode", "resize", "center_crop"]);

export async function preprocessImage(image, steps, maxPixels = MAX_PIXELS) {
  let img = null, arr = null;
  const toArray = () => ({ h: img.height, w: img.width, c: img.channels, data: Float32Array.from(img.pixels), layout: "HWC" });
  for (const step of steps) {
    const { op, ...args } = step;
    if (IMAGE_OPS.has(op)) {
      if (arr) throw new FerryInputError(`preprocessing step '${op}' works on images and must come before array steps`);
      if (op === "decode") img = await decode(image, args.mode ?? "RGB", maxPixels);
      else if (!img) throw new FerryInputError(`preprocessing step '${op}' needs 'decode' before it`);
      else if (op === "resize") img = resizeStep(img, args.size, args.resample ?? "bilinear");
      else img = centerCrop(img, args.size);
      continue;
    }
    if (!arr) {
      if (!img) img = await decode(image, "RGB", maxPixels);
      arr = toArray();
    }
    const d = arr.data;
    if (op === "invert") {
      const m = args.max_value ?? 255.0;
      for (let i = 0; i < d.length; i++) d[i] = m - d[i];
    } else if (op === "scale") {
      const f = Math.fround(args.factor ?? 1 / 255.0);
      for (let i = 0; i < d.length; i++) d[i] = d[i] * f;
    } else if (op === "normalize") {
      const mean = Float32Array.from(args.mean), std = Float32Array.from(args.std);
      const c = arr.c;
      for (let i = 0; i < d.length; i++) d[i] = Math.fround(d[i] - mean[mean.length === 1 ? 0 : i % c]) / std[std.length === 1 ? 0 : i % c];
    } else if (op === "layout") {
      const to = args.to ?? "CHW";
      if (to === "CHW") {
        const { h, w, c } = arr;
        const out = new Float32Array(d.length);
        for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) out[k * h * w + y * w + x] = d[(y * w + x) * c + k];
        arr = { ...arr, data: out, layout: "CHW" };
      } else if (to !== "HWC") throw new FerryInputError(`layout must be CHW or HWC, got ${JSON.stringify(to)}`);
    } else {
      throw new FerryInputError(`unknown preprocessing step ${JSON.stringify(op)}; known: center_crop, decode, invert, layout, normalize, resize, scale`);
    }
  }
  if (!arr) arr = toArray();
  const shape = arr.layout === "CHW" ? [arr.c, arr.h, arr.w] : [arr.h, arr.w, arr.c];
  return { data: arr.data, shape };
}

// ---- postprocessing: src/ferry/processing/outputs.py ----

/** Per sample of a [batch, classes] output: [{index, label, score}] after top-k, else the scores. */
export function postprocess(data, shape, steps, labels = null) {
  const n = shape[0], k = data.length / n;
  let rows = Array.from({ length: n }, (_, i) => Float32Array.from(data.subarray(i * k, (i + 1) * k)));
  let top = null;
  for (const step of steps) {
    if (step.op === "labels") continue;
    if (top) throw new FerryInputError("topk must be the last numeric postprocessing step");
    if (step.op === "softmax") {
      rows = rows.map((r) => {
        const m = r.reduce((a, b) => Math.max(a, b), -Infinity);
        const e = r.map((v) => Math.exp(v - m));
        const s = e.reduce((a, b) => a + b, 0);
        return e.map((v) => v / s);
      });
    } else if (step.op === "topk") {
      const kk = Math.min(step.k ?? 5, k);
      top = rows.map((r) => Array.from(r.keys()).sort((a, b) => r[b] - r[a] || a - b).slice(0, kk)
        .map((i) => ({ index: i, label: labels && i < labels.length ? labels[i] : String(i), score: r[i] })));
    } else {
      throw new FerryInputError(`unknown postprocessing step ${JSON.stringify(step.op)}; known: labels, softmax, topk`);
    }
  }
  return top ?? rows;
}
