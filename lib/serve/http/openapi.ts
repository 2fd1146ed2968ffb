/**
 * The OpenAPI 3.1 description of every route, served at `GET /openapi.json`. Kept beside the routes by
 * hand; a test checks that every route of the app is described here and every path here is routed.
 *
 * @module
 */

import { SESSION_RECIPE_KEYS } from "../../train/config.ts";

const error = { $ref: "#/components/responses/Error" };
const json = (schema: unknown) => ({ "application/json": { schema } });
const bearer = [{ bearer: [] }];
const idParam = (what: string) => ({
  name: "id",
  in: "path",
  required: true,
  schema: { type: "string" },
  description: what,
});

/** The document. */
export function openApiDocument(version = "0.1.0"): Record<string, unknown> {
  return {
    openapi: "3.1.0",
    info: {
      title: "vit-deno",
      version,
      description: "Vision Transformer classification and fine-tuning service (Deno, tfjs). Errors are " +
        "`{error: {code, message, request_id}}` with a matching HTTP status; every answer carries " +
        "`X-Request-Id`. The model id `default` is reserved (it names the default model).",
    },
    paths: {
      "/": {
        get: {
          summary: "Web page: classify an image, start and watch fine-tuning",
          responses: { 200: { description: "HTML", content: { "text/html": {} } } },
        },
      },
      "/openapi.json": {
        get: {
          summary: "This document",
          responses: { 200: { description: "OpenAPI 3.1", content: json({ type: "object" }) } },
        },
      },
      "/healthz": {
        get: {
          summary: "Liveness: the process answers",
          responses: { 200: { description: "alive", content: json({ type: "object" }) } },
        },
      },
      "/readyz": {
        get: {
          summary: "Readiness: backend up and every model loaded",
          description:
            "200 once started, even when a registered model's URL failed to load: such models are " +
            "listed under `unavailable` (the others serve).",
          responses: { 200: { description: "ready", content: json({ type: "object" }) }, 503: error },
        },
      },
      "/metrics": {
        get: {
          summary: "Prometheus metrics: requests, latencies, queue depth, batch sizes, sessions",
          responses: { 200: { description: "text exposition format 0.0.4", content: { "text/plain": {} } } },
        },
      },
      "/v1/models": {
        get: {
          summary: "List served models",
          responses: {
            200: { description: "models", content: json({ $ref: "#/components/schemas/ModelList" }) },
          },
        },
        post: {
          summary: "Register a model from an http(s) URL of a converted model (bearer token)",
          description: "The registration and the model's files, as fetched, persist in the state dir: a " +
            "restarted server and every process sharing the state dir serve it from those files, without the " +
            "URL (which is fetched again only when they are missing or fail to load; if it fails too, the " +
            "model is `unavailable`, not a failed start). To serve new files from the URL, remove the model " +
            "and register it again.",
          security: bearer,
          requestBody: {
            required: true,
            content: json({
              type: "object",
              required: ["id", "location"],
              properties: {
                id: { type: "string", description: "not `default`, which is reserved" },
                location: { type: "string", format: "uri" },
              },
            }),
          },
          responses: {
            201: { description: "registered", content: json({ $ref: "#/components/schemas/Model" }) },
            400: error,
            401: error,
            403: error,
            409: error,
            422: error,
          },
        },
      },
      "/v1/models/{id}": {
        get: {
          summary:
            "A model: config, labels, preprocessing, dtype, backend, source (`default` = first base model)",
          parameters: [idParam("model id")],
          responses: {
            200: { description: "model", content: json({ $ref: "#/components/schemas/Model" }) },
            404: error,
            503: error,
          },
        },
        delete: {
          summary:
            "Remove a model registered with POST /v1/models, and its persisted registration (bearer token)",
          description: "Images already accepted for it are classified first. Models given with --model and " +
            "fine-tuned models are not removable (409).",
          security: bearer,
          parameters: [idParam("model id")],
          responses: {
            200: { description: "removed", content: json({ type: "object" }) },
            401: error,
            403: error,
            404: error,
            409: error,
          },
        },
      },
      "/v1/models/{id}/classify": {
        post: {
          summary: "Classify one or many images",
          description: "Send images as multipart/form-data (every file field is an image; `top_k` field), " +
            "as a raw image/* body, or as JSON `{image: base64}` / `{images: [base64 | {name, data}], top_k}`. " +
            "Limits: body size (413), decoded pixels (413), images per request (413), queue length (503 + Retry-After).",
          parameters: [
            idParam("model id"),
            {
              name: "top_k",
              in: "query",
              required: false,
              schema: { type: "integer", minimum: 1, default: 5 },
            },
          ],
          requestBody: {
            required: true,
            content: {
              "multipart/form-data": {
                schema: {
                  type: "object",
                  properties: { image: { type: "string", format: "binary" }, top_k: { type: "integer" } },
                },
              },
              "image/*": { schema: { type: "string", format: "binary" } },
              "application/json": {
                schema: {
                  type: "object",
                  properties: {
                    image: { type: "string", contentEncoding: "base64" },
                    images: { type: "array", items: {} },
                    top_k: { type: "integer" },
                  },
                },
              },
            },
          },
          responses: {
            200: {
              description: "predictions per image",
              content: json({ $ref: "#/components/schemas/Classification" }),
            },
            400: error,
            404: error,
            413: error,
            415: error,
            503: error,
          },
        },
      },
      "/v1/finetune": {
        get: {
          summary: "List fine-tuning sessions",
          responses: { 200: { description: "sessions", content: json({ type: "object" }) } },
        },
        post: {
          summary: "Start a fine-tuning session (bearer token)",
          description:
            "JSON with `dataset` naming a folder of class folders under the data root, or multipart " +
            "with the dataset as a tar/tar.gz archive of class folders in the `archive` file field. The finished " +
            "session saves its weights atomically and registers them as model `model_id`; the base model is never modified.",
          security: bearer,
          requestBody: {
            required: true,
            content: {
              "application/json": { schema: { $ref: "#/components/schemas/FineTuneRequest" } },
              "multipart/form-data": {
                schema: {
                  allOf: [{ $ref: "#/components/schemas/FineTuneRequest" }, {
                    type: "object",
                    properties: { archive: { type: "string", format: "binary" } },
                  }],
                },
              },
            },
          },
          responses: {
            202: { description: "accepted", content: json({ $ref: "#/components/schemas/Session" }) },
            400: error,
            401: error,
            403: error,
            404: error,
            409: error,
            413: error,
            415: error,
            429: error,
          },
        },
      },
      "/v1/finetune/{id}": {
        get: {
          summary: "A session: state, progress, metrics",
          parameters: [idParam("session id")],
          responses: {
            200: { description: "session", content: json({ $ref: "#/components/schemas/Session" }) },
            404: error,
          },
        },
        delete: {
          summary: "Cancel a session (bearer token)",
          description:
            "Any server process sharing the state dir accepts it; the one running the session stops its " +
            "training worker within about a second, mid-step (unless it is already writing the model, " +
            "which then finishes). 409 once the session ended.",
          security: bearer,
          parameters: [idParam("session id")],
          responses: {
            202: { description: "cancelling", content: json({ $ref: "#/components/schemas/Session" }) },
            401: error,
            404: error,
            409: error,
          },
        },
      },
      "/v1/finetune/{id}/events": {
        get: {
          summary: "Server-sent events: `state` and `progress`, each carrying the session record",
          parameters: [idParam("session id")],
          responses: {
            200: { description: "event stream", content: { "text/event-stream": {} } },
            404: error,
          },
        },
      },
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "VIT_API_TOKEN" } },
      responses: { Error: { description: "error", content: json({ $ref: "#/components/schemas/Error" }) } },
      schemas: {
        Error: {
          type: "object",
          required: ["error"],
          properties: {
            error: {
              type: "object",
              required: ["code", "message"],
              properties: {
                code: { type: "string" },
                message: { type: "string" },
                request_id: { type: "string", description: "finds the request in the server log" },
              },
            },
          },
        },
        Model: {
          type: "object",
          properties: {
            id: { type: "string" },
            kind: { enum: ["base", "registered", "finetuned"] },
            registered_at: { type: "string", format: "date-time" },
            num_classes: { type: "integer" },
            img_size: { type: "integer" },
            dtype: { type: "string" },
            backend: { type: "string" },
            source: { type: "object" },
            config: { type: "object" },
            labels: { type: "array", items: { type: "string" } },
            preprocessing: { type: "object" },
          },
        },
        ModelList: {
          type: "object",
          properties: {
            default: { type: ["string", "null"] },
            models: { type: "array", items: { $ref: "#/components/schemas/Model" } },
            unavailable: {
              type: "array",
              description:
                "registered models whose URL failed to load; a request after retry_after_s tries again",
              items: {
                type: "object",
                properties: {
                  id: { type: "string" },
                  kind: { const: "registered" },
                  state: { const: "unavailable" },
                  location: { type: ["string", "null"] },
                  registered_at: { type: ["string", "null"] },
                  error: { type: "object" },
                  failed_at: { type: "string", format: "date-time" },
                  retry_after_s: { type: "integer" },
                },
              },
            },
          },
        },
        Classification: {
          type: "object",
          properties: {
            model: { type: "string" },
            top_k: { type: "integer" },
            results: {
              type: "array",
              items: {
                type: "object",
                properties: {
                  name: { type: "string" },
                  width: { type: "integer" },
                  height: { type: "integer" },
                  predictions: {
                    type: "array",
                    items: {
                      type: "object",
                      properties: {
                        label: { type: "string" },
                        index: { type: "integer" },
                        probability: { type: "number" },
                      },
                    },
                  },
                  timing_ms: { type: "object" },
                },
              },
            },
            timing_ms: { type: "object" },
          },
        },
        FineTuneRequest: {
          type: "object",
          required: ["base_model"],
          properties: {
            base_model: { type: "string" },
            dataset: { type: "string", description: "name under the data root (no `..`, no absolute paths)" },
            epochs: { type: "integer", minimum: 1 },
            steps: { type: "integer", minimum: 1 },
            lr: { type: "number", default: 0.01 },
            freeze: { type: "string", description: "none | head-only | blocks:N", default: "none" },
            batch_size: { type: "integer", default: 16 },
            seed: { type: "integer", default: 0 },
            model_id: {
              type: "string",
              description: "id of the model registered at the end (not `default`, which is reserved)",
            },
            ...Object.fromEntries(SESSION_RECIPE_KEYS.map((k) => [k, {
              description:
                "timm's augmentation/regularisation key, as in a training YAML (README: Regularisation)",
            }])),
          },
        },
        Session: {
          type: "object",
          properties: {
            id: { type: "string" },
            state: { enum: ["queued", "running", "succeeded", "failed", "cancelled"] },
            request: { type: "object" },
            progress: {
              type: "object",
              properties: {
                step: { type: "integer" },
                steps: { type: "integer" },
                epoch: { type: "number" },
                loss: { type: "number" },
                lr: { type: "number" },
                imgPerSec: { type: "number" },
              },
            },
            losses: { type: "array", items: { type: "number" } },
            model_id: { type: "string" },
            error: { type: "object" },
            links: { type: "object" },
          },
        },
      },
    },
  };
}
