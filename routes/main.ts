/**
 * The app as a module for `deno serve` (`export default { fetch }`), e.g.
 * `deno serve --parallel -A --port 8000 routes/main.ts -- --model weights`: each worker builds its own
 * service from the same flags (or `VIT_*` environment variables) and shares the state dir, so fine-tuned
 * models and session records are visible to every worker.
 *
 * @module
 */
import { parseServeArgs } from "../lib/serve/options.ts";
import { Service } from "../lib/serve/service.ts";
import { createApp } from "./app.ts";

const args = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args;
const service = new Service(parseServeArgs(args, (k) => Deno.env.get(k)));
const app = createApp(service);
service.start().catch((e) => {
  console.error(`serve: ${(e as Error).message}`);
  Deno.exit(1);
});

export default { fetch: app.fetch } satisfies Deno.ServeDefaultExport;
