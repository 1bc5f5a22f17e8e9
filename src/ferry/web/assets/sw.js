// The site's service worker, written by `ferry export web`.
// 1. Cache first: the runtime, the model and the pages are fetched once, so that a second visit loads
//    nothing from the network and works offline. The cache name carries the site's version, so a new
//    export (a new sw.js) starts a new cache and removes the old one.
// 2. It adds Cross-Origin-Opener-Policy and Cross-Origin-Embedder-Policy to every response, so that the
//    page is cross-origin isolated and onnxruntime-web can run threads on a host that sends no headers.
const CACHE = "ferry-__FERRY_SITE_VERSION__";

self.addEventListener("install", () => self.skipWaiting());

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith("ferry-") && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

function isolated(response) {
  if (response.status === 0) return response; // opaque: its headers cannot be changed
  const headers = new Headers(response.headers);
  headers.set("Cross-Origin-Opener-Policy", "same-origin");
  headers.set("Cross-Origin-Embedder-Policy", "require-corp");
  headers.set("Cross-Origin-Resource-Policy", "cross-origin");
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || !request.url.startsWith("http")) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const cached = await cache.match(request, { ignoreSearch: true, ignoreVary: true });
    if (cached) return isolated(cached);
    const response = await fetch(request);
    // The page gets the response as it streams in; waitUntil keeps the worker alive until the copy is in
    // the cache (a put nobody waits for can be lost when the worker stops: transformers.js #99).
    if (response.ok && response.type !== "opaque") event.waitUntil(cache.put(request, response.clone()));
    return isolated(response);
  })());
});
