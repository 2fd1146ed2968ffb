/**
 * `deno task serve [--model [id=]dir|url ...] [--port 8000] [--host 127.0.0.1] [--state-dir runs/serve] ...`:
 * serves the models (the shipped model in `weights/` by default) over HTTP. Listens at once (`/healthz`
 * answers, `/readyz` says 503 until the models are loaded), exits 1 with a clear message when a model cannot
 * be loaded, and on SIGINT/SIGTERM stops accepting requests, records running sessions as interrupted and
 * exits.
 *
 * @module
 */
import { parseServeArgs, SERVE_OPTIONS, SERVE_USAGE } from "../lib/serve/options.ts";
import { startService } from "../routes/start.ts";
import { commandLine } from "./_cli.ts";

if (import.meta.main) {
  const env = (k: string) => Deno.env.get(k);
  commandLine("serve", SERVE_USAGE, SERVE_OPTIONS, Deno.args, { env });
  const options = parseServeArgs(Deno.args, env);
  // Stops listening first on SIGINT/SIGTERM (the server is created once the models are checked).
  const listening: { server?: Deno.HttpServer } = {};
  const { app, ready } = await startService(options, {
    onSignal: () => listening.server?.shutdown() ?? Promise.resolve(),
    exit: true,
  });
  listening.server = Deno.serve({
    port: options.port,
    hostname: options.host,
    onListen: ({ hostname, port }) => console.error(`serve: listening on http://${hostname}:${port}/`),
  }, app.fetch);
  await ready;
}
