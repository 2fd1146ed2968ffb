/**
 * Fine-tuning session routes (all but reading need the bearer token): start one (`POST /v1/finetune`, 202),
 * list them, read one, stream its progress as server-sent events, cancel it.
 *
 * @module
 */
import { type Context, Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { hasToken } from "../lib/serve/http/auth.ts";
import { needsToken, whenReady } from "../lib/serve/http/middleware.ts";
import { readJson, readMultipart } from "../lib/serve/http/body.ts";
import { redactPaths, ServiceError } from "../lib/serve/errors.ts";
import { fieldsFromForm, parseFineTuneFields } from "../lib/serve/http/finetune_request.ts";
import { prepareSession, UploadFile } from "../lib/serve/session_data.ts";
import type { Service } from "../lib/serve/service.ts";
import type { SessionEvent, SessionRecord } from "../lib/serve/sessions.ts";

function links(id: string) {
  return { self: `/v1/finetune/${id}`, events: `/v1/finetune/${id}/events` };
}

/**
 * A session record as a client sees it: without its owner process, and, unless the client holds the token,
 * without the detail of an error (only its code); messages redacted of server paths.
 */
function view(rec: SessionRecord, authorized: boolean): Record<string, unknown> {
  const { owner: _owner, error, ...rest } = rec;
  const shown = error ? { error: authorized ? error : { code: error.code } } : {};
  return redactPaths({ ...rest, ...shown, links: links(rec.id) });
}

/** The fine-tuning routes. */
export function finetuneRoutes(service: Service): Hono {
  const app = new Hono();
  const limits = service.options.limits;

  const auth = needsToken(service), ready = whenReady(service);

  app.post("/v1/finetune", auth, ready, async (c) => {
    const type = (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
    if (type !== "multipart/form-data" && type !== "application/json") {
      throw new ServiceError(
        "unsupported",
        "unsupported_media_type",
        `content type ${JSON.stringify(type || "(none)")} is not accepted; send application/json ` +
          `(dataset by name) or multipart/form-data (dataset archive as "archive")`,
      );
    }
    // The slot is taken before the body is read: the session limit bounds the uploads read and extracted.
    const slot = await service.sessions.reserve();
    let upload: UploadFile | undefined, started = false;
    try {
      let raw: Record<string, unknown>, archive;
      if (type === "multipart/form-data") {
        upload = await UploadFile.create(service.options.stateDir);
        const file = upload;
        const form = await readMultipart(c.req.raw, {
          maxBytes: limits.maxUploadBytes,
          maxFiles: 1,
          maxFileBytes: limits.maxUploadBytes,
          maxFields: 16,
          tooManyFiles: () =>
            new ServiceError(
              "invalid",
              "invalid_field",
              'upload one dataset archive, as the file field "archive"',
            ),
        }, (field) => field === "archive" ? (chunk) => file.write(chunk) : undefined);
        upload.close();
        ({ fields: raw, archive } = fieldsFromForm(form, upload.path));
      } else {
        const json = await readJson(c.req.raw, 1024 * 1024);
        if (typeof json !== "object" || json === null || Array.isArray(json)) {
          throw new ServiceError(
            "invalid",
            "invalid_request",
            "the JSON body must be an object of fine-tuning options",
          );
        }
        raw = json as Record<string, unknown>;
      }
      const fields = parseFineTuneFields(raw, archive, limits.maxSteps);
      const base = await service.registry.get(fields.base_model);
      const { request, dataset } = await prepareSession(service, base, fields);
      // The archive is extracted: only the extracted folder is kept (until the session ends).
      await upload?.remove();
      let rec;
      try {
        rec = await service.sessions.start(request, () => Promise.resolve(dataset), slot);
      } catch (e) {
        await dataset.cleanup?.().catch(() => {});
        throw e;
      }
      started = true;
      c.header("Location", `/v1/finetune/${rec.id}`);
      return c.json(view(rec, true), 202);
    } finally {
      await upload?.remove();
      if (!started) await slot.release();
    }
  });

  const authorized = (c: Context) => hasToken(c.req.header("authorization"), service.options.token);

  app.get("/v1/finetune", (c) => {
    const ok = authorized(c);
    return c.json({ sessions: service.sessions.list().map((r) => view(r, ok)) });
  });

  app.get("/v1/finetune/:id", async (c) => {
    const rec = await service.sessions.get(c.req.param("id"));
    return c.json(view(rec, authorized(c)));
  });

  app.delete("/v1/finetune/:id", auth, async (c) => {
    const rec = await service.sessions.cancel(c.req.param("id"));
    return c.json(view(rec, true), 202);
  });

  app.get("/v1/finetune/:id/events", async (c) => {
    const id = c.req.param("id");
    const first = await service.sessions.get(id);
    const ok = authorized(c);
    return streamSSE(c, async (stream) => {
      const done = (s: string) => s === "succeeded" || s === "failed" || s === "cancelled";
      let seq = 0;
      const send = (type: string, data: SessionRecord) =>
        stream.writeSSE({ event: type, data: JSON.stringify(view(data, ok)), id: String(seq++) });
      await send("state", first);
      if (done(first.state)) return;
      if (!service.sessions.isLocal(id)) {
        // Another worker runs it: follow its persisted record.
        let last = "";
        while (!stream.aborted) {
          const rec = await service.sessions.get(id);
          const text = JSON.stringify(rec);
          if (text !== last) await send("progress", rec);
          last = text;
          if (done(rec.state)) return send("state", rec);
          await stream.sleep(1000);
        }
        return;
      }
      const queue: SessionEvent[] = [];
      let wake: (() => void) | undefined;
      const unsubscribe = service.sessions.subscribe(id, (e) => {
        queue.push(e);
        wake?.();
      });
      stream.onAbort(() => wake?.());
      try {
        while (!stream.aborted) {
          if (queue.length === 0) {
            await new Promise<void>((r) => {
              // A comment line now and then keeps proxies from closing an idle stream.
              const timer = setTimeout(r, 15000);
              wake = () => {
                clearTimeout(timer);
                r();
              };
            });
            wake = undefined;
            if (queue.length === 0 && !stream.aborted) await stream.write(": keep-alive\n\n");
            continue;
          }
          // Only the newest progress matters to a slow reader; state changes are all sent.
          const batch = queue.splice(0);
          const lastProgress = batch.findLast((e) => e.type === "progress");
          for (const e of batch) {
            if (e.type === "progress" && e !== lastProgress) continue;
            await send(e.type, e.record);
            if (e.type === "state" && done(e.record.state)) return;
          }
        }
      } finally {
        unsubscribe();
      }
    });
  });
  return app;
}
