/**
 * The app as a module for `deno serve` (`export default { fetch }`), e.g.
 * `deno serve --parallel -A --port 8000 routes/main.ts -- --model weights`: each worker builds its own
 * service from the same flags (or `VIT_*` environment variables), listens once its models are loaded, and
 * shares the state dir, so fine-tuned models, model registrations, session records and the session limit
 * are shared by every worker. On SIGTERM/SIGINT each worker records its running sessions as interrupted, so
 * the process exits.
 *
 * @module
 */
import { parseServeArgs } from "../lib/serve/options.ts";
import { startService } from "./start.ts";

const args = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args;
// On SIGTERM/SIGINT `deno serve` stops accepting connections, but the process would live on until a running
// fine-tuning session ended: each worker records its sessions as interrupted and frees its models instead.
const { app, ready } = await startService(parseServeArgs(args, (k) => Deno.env.get(k)));
// `deno serve` starts listening once this module has been evaluated, and the kernel spreads connections over
// the workers that listen: waiting here keeps a still-loading worker out of the rotation, so no client of a
// running server meets a `not_ready` 503 from a sibling that started later.
await ready;

export default { fetch: app.fetch } satisfies Deno.ServeDefaultExport;
