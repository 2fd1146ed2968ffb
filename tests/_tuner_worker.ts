/**
 * A training worker process for tests (see lib/serve/finetune_host.ts) that reports step 1 and then, in
 * its second step, does what its argument says: `spin` writes its pid to the file given second and spins in
 * a synchronous loop as a stuck tfjs kernel would (only killing it ends it); `crash` dies with an uncaught
 * error naming a server path, as a crash inside a native or wasm kernel surfaces.
 */
import {
  eachLine,
  type HostMessage,
  MESSAGE_PREFIX,
  type WorkerMessage,
} from "../lib/serve/finetune_host.ts";

const [mode, pidFile] = Deno.args;
const send = (m: WorkerMessage) => console.log(MESSAGE_PREFIX + JSON.stringify(m));
eachLine(Deno.stdin.readable, (line) => {
  if (!line.trim()) return;
  const m = JSON.parse(line) as HostMessage;
  if (m.type === "start") {
    send({
      type: "progress",
      progress: { step: 1, steps: m.spec.steps, epoch: 0, loss: 1, lr: m.spec.lr, imgPerSec: 1 },
    });
  } else if (mode === "spin") {
    Deno.writeTextFileSync(pidFile, String(Deno.pid));
    for (;;) { /* a step that never returns */ }
  } else {
    throw new Error(`memory access out of bounds in ${Deno.cwd()}/node_modules/kernel.wasm`);
  }
});
