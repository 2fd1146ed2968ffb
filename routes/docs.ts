/**
 * `GET /openapi.json` and `GET /`, the small web page (`routes/static/index.html`).
 *
 * @module
 */
import { Hono } from "hono";
import { openApiDocument } from "../lib/serve/openapi.ts";
import type { Service } from "../lib/serve/service.ts";

const PAGE = await Deno.readTextFile(new URL("./static/index.html", import.meta.url));

/** The documentation routes. */
export function docsRoutes(_service: Service): Hono {
  const app = new Hono();
  app.get("/openapi.json", (c) => c.json(openApiDocument()));
  app.get("/", (c) =>
    c.html(PAGE, 200, {
      "Content-Security-Policy":
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'",
    }));
  return app;
}
