/**
 * Numerics against timm (../shared/fixtures/vit): logits, loss and gradients on WebGPU and on wasm, within
 * the fixtures' README tolerances, with the kernels `initBackend` installs on each.
 */
import { type BackendName, initBackend } from "../lib/backend/backend.ts";
import { haveFixtures } from "./_fixtures.ts";
import { checkBase, checkMicro, checkTiny } from "./_timm_oracle.ts";

async function webgpuAvailable(): Promise<boolean> {
  return typeof navigator !== "undefined" && "gpu" in navigator &&
    (await navigator.gpu.requestAdapter()) !== null;
}

const backends: BackendName[] = (await webgpuAvailable()) ? ["webgpu", "wasm"] : ["wasm"];
if (!backends.includes("webgpu")) console.warn("SKIP webgpu parity: no WebGPU adapter on this machine");

for (const backend of backends) {
  Deno.test({
    name: `[${backend}] micro: logits, loss and every gradient match timm`,
    ignore: !haveFixtures,
    async fn() {
      await initBackend(backend);
      await checkMicro({ grads: true });
    },
  });

  Deno.test({
    name: `[${backend}] tiny (F16 weights widened): logits and loss match timm`,
    ignore: !haveFixtures,
    async fn() {
      await initBackend(backend);
      await checkTiny();
    },
  });

  Deno.test({
    name: `[${backend}] ViT-B/16 (formula weights): logits, loss and the listed gradients match timm`,
    ignore: !haveFixtures,
    async fn() {
      await initBackend(backend);
      await checkBase({ grads: true });
    },
  });
}
