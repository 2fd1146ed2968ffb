/**
 * Starting the service, the one way both entry points do it (`deno task serve` through `scripts/serve.ts`,
 * and each worker of `deno serve --parallel routes/main.ts`): the models are checked before anything is
 * served (a missing or broken one is a clear error, exit 1), the app is built, the models load (`ready`
 * settles; `/readyz` says when to a server already listening), and SIGINT/SIGTERM record running sessions as
 * interrupted and free the models so the process exits.
 *
 * @module
 */
import type { Hono } from "hono";
import type { ServeOptions } from "../lib/serve/options.ts";
import { Service } from "../lib/serve/service.ts";
import { createApp } from "./app.ts";

/** A service being started, with its app. */
export interface Started {
  service: Service;
  app: Hono;
  /** Settles once the models are loaded (the process has exited 1 if they could not be). */
  ready: Promise<void>;
}

/**
 * Starts the service for `options`. `onSignal` runs first on SIGINT/SIGTERM (e.g. to stop listening);
 * `exit` ends the process after the service is closed (a `deno serve` worker leaves that to `deno serve`).
 */
export async function startService(
  options: ServeOptions,
  hooks: { onSignal?: (signal: string) => Promise<void>; exit?: boolean } = {},
): Promise<Started> {
  const service = new Service(options);
  try {
    await service.checkModels();
  } catch (e) {
    console.error(`serve: ${(e as Error).message}`);
    Deno.exit(1);
  }
  const app = createApp(service);
  let stopping = false;
  let loaded = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`serve: ${signal}: shutting down`);
    try {
      await hooks.onSignal?.(signal);
      await service.close();
    } catch (e) {
      console.error(`serve: shutting down: ${(e as Error).message}`);
    }
    // A `deno serve` worker still loading does not listen yet, so `deno serve` has not taken over the signal
    // and nothing else would end the process. It has no session of its own; a sibling's running session that
    // this exit cuts short is recorded as interrupted by the next start.
    if (hooks.exit || !loaded) Deno.exit(0);
  };
  for (const signal of Deno.build.os === "windows" ? ["SIGINT"] as const : ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => stop(signal));
  }
  const ready = service.start().then(() => {
    loaded = true;
    console.error(
      `serve: ready on ${service.backendName}: ${service.registry.list().map((m) => m.id).join(", ")}` +
        (options.token ? "" : " (VIT_API_TOKEN unset: fine-tuning and model registration are disabled)"),
    );
  }, (e) => {
    if (stopping) return; // the models were freed under the load: the signal handler ends the process
    console.error(`serve: ${(e as Error).message}`);
    Deno.exit(1);
  });
  return { service, app, ready };
}
