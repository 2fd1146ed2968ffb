/**
 * `GET /openapi.json` and `GET /`, the small web page (`routes/static/index.html`).
 *
 * @module
 */
import { Hono } from "hono";
import { openApiDocument } from "../lib/serve/http/openapi.ts";
import type { Service } from "../lib/serve/service.ts";

const PAGE_URL = new URL("./static/index.html", import.meta.url);
let page: Promise<string> | undefined;

/** The page, read once on first use (from disk, or over HTTP when this module was imported from a URL). */
function loadPage(): Promise<string> {
  page ??= PAGE_URL.protocol === "file:"
    ? Deno.readTextFile(PAGE_URL)
    : fetch(PAGE_URL).then((r) => r.ok ? r.text() : Promise.reject(new Error(`HTTP ${r.status}`)));
  page.catch(() => page = undefined);
  return page;
}

/** The documentation routes. */
export function docsRoutes(_service: Service): Hono {
  const app = new Hono();
  app.get("/openapi.json", (c) => c.json(openApiDocument()));
  app.get("/", async (c) =>
    c.html(await loadPage(), 200, {
      "Content-Security-Policy":
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; " +
        "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
      "X-Frame-Options": "DENY",
    }));
  return app;
}
