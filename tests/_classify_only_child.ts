/**
 * A process that only classifies, as a server on the onnx engine runs: the service started as
 * `deno task serve --model m=<dir> --state-dir <dir>` starts it, one PNG classified through the app, then one
 * JSON line with the answer and whether tfjs was ever loaded (`_tfengine`: the global tfjs-core creates
 * when it loads). tests/onnx_engine_test.ts runs it.
 *
 * Usage: `VIT_BACKEND=onnx deno run -A tests/_classify_only_child.ts <model-dir> <state-dir> <image.png>`
 *
 * @module
 */
import { parseServeArgs } from "../lib/serve/options.ts";
import { startService } from "../routes/start.ts";

const [model, stateDir, image] = Deno.args;
const options = parseServeArgs(["--model", `m=${model}`, "--state-dir", stateDir], (k) => Deno.env.get(k));
const { app, ready, service } = await startService(options);
await ready;
const res = await app.request("/v1/models/m/classify", {
  method: "POST",
  headers: { "content-type": "image/png" },
  body: await Deno.readFile(image),
});
const body = await res.json();
const ms = Math.round(performance.now());
console.log(JSON.stringify({ status: res.status, body, tfjs: "_tfengine" in globalThis, ms }));
await service.close();
