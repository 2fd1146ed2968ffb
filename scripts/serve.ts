/**
 * `deno task serve [--model [id=]dir|url ...] [--port 8000] [--host 127.0.0.1] [--state-dir runs/serve] ...`:
 * serves the models (the shipped model in `weights/` by default) over HTTP. Listens at once (`/healthz`
 * answers, `/readyz` says 503 until the models are loaded), exits 1 with a clear message when a model cannot
 * be loaded, and on SIGINT/SIGTERM stops accepting requests, records running sessions as interrupted and
 * exits.
 *
 * @module
 */
import { createApp } from "../routes/app.ts";
import { parseServeArgs, SERVE_OPTIONS, SERVE_USAGE } from "../lib/serve/options.ts";
import { commandLine } from "./_cli.ts";
import { Service } from "../lib/serve/service.ts";

if (import.meta.main) {
  const env = (k: string) => Deno.env.get(k);
  commandLine("serve", SERVE_USAGE, SERVE_OPTIONS, Deno.args, { env });
  const options = parseServeArgs(Deno.args, env);
  const service = new Service(options);
  try {
    await service.checkModels();
  } catch (e) {
    console.error(`serve: ${(e as Error).message}`);
    Deno.exit(1);
  }
  const app = createApp(service);
  const server = Deno.serve({
    port: options.port,
    hostname: options.host,
    onListen: ({ hostname, port }) => console.error(`serve: listening on http://${hostname}:${port}/`),
  }, app.fetch);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`serve: ${signal}: shutting down`);
    await server.shutdown();
    await service.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  try {
    await service.start();
  } catch (e) {
    console.error(`serve: ${(e as Error).message}`);
    Deno.exit(1);
  }
  console.error(
    `serve: ready on ${service.backendName}: ${service.registry.list().map((m) => m.id).join(", ")}` +
      (options.token ? "" : " (VIT_API_TOKEN unset: fine-tuning and model registration are disabled)"),
  );
}
