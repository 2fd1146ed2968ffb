/**
 * The HTTP app: every route of the service on one Hono instance, behind the request middleware (request id,
 * security headers, metrics, CORS) and the one error mapping (`lib/serve/http/errors.ts`), unknown paths
 * included.
 *
 * @module
 */
import { Hono } from "hono";
import { errorResponse, notFoundResponse } from "../lib/serve/http/errors.ts";
import { corsFor, requestContext } from "../lib/serve/http/middleware.ts";
import type { Service } from "../lib/serve/service.ts";
import { docsRoutes } from "./docs.ts";
import { finetuneRoutes } from "./finetune.ts";
import { healthRoutes } from "./health.ts";
import { modelRoutes } from "./models.ts";

/** Builds the app for a service (which may still be starting: `/readyz` says when it is ready). */
export function createApp(service: Service): Hono {
  const app = new Hono();
  app.use("*", requestContext(service));
  const cors = corsFor(service);
  if (cors) app.use("*", cors);
  app.route("/", healthRoutes(service));
  app.route("/", modelRoutes(service));
  app.route("/", finetuneRoutes(service));
  app.route("/", docsRoutes(service));
  app.notFound(notFoundResponse);
  app.onError(errorResponse);
  return app;
}
