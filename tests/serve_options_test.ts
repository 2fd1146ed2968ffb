/** Command-line flags and environment variables of `deno task serve`. */
import assert from "node:assert/strict";
import { DEFAULT_LIMITS, parseModelSpec, parseServeArgs } from "../lib/serve/options.ts";

const noEnv = () => undefined;

Deno.test("serve options: defaults serve weights/ on loopback", () => {
  const o = parseServeArgs([], noEnv);
  assert.deepEqual(o.models, [{ location: "weights" }]);
  assert.equal(o.port, 8000);
  assert.equal(o.host, "127.0.0.1");
  assert.equal(o.stateDir, "runs/serve");
  assert.equal(o.token, undefined);
  assert.deepEqual(o.limits, DEFAULT_LIMITS);
});

Deno.test("serve options: flags, id=path models, URLs, env fallbacks", () => {
  const o = parseServeArgs([
    "--model",
    "cifar=weights",
    "--model=https://example.com/models/vit?x=1",
    "--port",
    "9001",
    "--host=0.0.0.0",
    "--max-queue",
    "64",
    "--max-body-mb",
    "8",
    "--access-log",
  ], (k) => ({ VIT_API_TOKEN: "t", VIT_STATE_DIR: "/tmp/s", VIT_PORT: "1" } as Record<string, string>)[k]);
  assert.deepEqual(o.models, [{ id: "cifar", location: "weights" }, {
    location: "https://example.com/models/vit?x=1",
  }]);
  assert.equal(o.port, 9001);
  assert.equal(o.host, "0.0.0.0");
  assert.equal(o.token, "t");
  assert.equal(o.stateDir, "/tmp/s");
  assert.equal(o.limits.maxQueue, 64);
  assert.equal(o.limits.maxBodyBytes, 8 * 2 ** 20);
  assert.equal(o.accessLog, true);
  const env = parseServeArgs([], (k) => (k === "VIT_MODELS" ? "a=x, y" : undefined));
  assert.deepEqual(env.models, [{ id: "a", location: "x" }, { location: "y" }]);
  assert.deepEqual(parseModelSpec("http://h/a=b"), { location: "http://h/a=b" });
});

Deno.test("serve options: bad flags are errors with the usage", () => {
  assert.throws(
    () => parseServeArgs(["--port", "abc"], noEnv),
    /command line: "port" must be an integer, got "abc"/,
  );
  assert.throws(() => parseServeArgs(["--bogus"], noEnv), /unknown option "--bogus"/);
  assert.throws(() => parseServeArgs(["--model"], noEnv), /"--model" needs a value/);
});
