/**
 * The PyTorch anchor: timm's own `vit_base_patch16_224` with the same weights (read from the bench's
 * .safetensors file), timed by a Python child process on the same device, fp32 and fp16/bf16. Meant for the
 * GPU machine, whose image has PyTorch and timm; on a machine without them the bench skips it with a note.
 *
 * UNTESTED on a GPU so far: no session with a GPU has run it yet (see docs/gpu.md).
 *
 * @module
 */
import { runTimed } from "./child.ts";

/** One figure of the PyTorch anchor. */
export interface TorchFigure {
  kind: "forward" | "train";
  dtype: "fp32" | "fp16" | "bf16";
  batch: number;
  medianMs: number;
  runs: number[];
}

/** What the Python side reports. */
export interface TorchReport {
  torch: string;
  timm: string;
  device: string;
  figures: TorchFigure[];
  /** fp32 logits for the golden input, row-major, when a golden file was given. */
  goldenLogits?: number[];
  errors: string[];
}

const PYTHON = String.raw`
import json, struct, sys, time
import numpy as np
import torch, timm

args = json.loads(sys.argv[1])
DT = {"F32": np.float32, "I64": np.int64, "F16": np.float16}

def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(body[a:b], dtype=DT[v["dtype"]]).reshape(v["shape"])
    return out

dev = "cuda" if torch.cuda.is_available() else "cpu"
errors = []
model = timm.create_model("vit_base_patch16_224", pretrained=False)
state = {k: torch.from_numpy(v.copy()) for k, v in read_st(args["weights"]).items()}
model.load_state_dict(state)
model = model.to(dev).eval()

def sync():
    if dev == "cuda":
        torch.cuda.synchronize()

def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        sync()
        ts.append((time.perf_counter() - t) * 1000)
    return float(np.median(ts)), [round(x, 3) for x in ts]

golden = None
if args.get("golden"):
    g = read_st(args["golden"])
    with torch.no_grad():
        golden = model(torch.from_numpy(g["input"].copy()).to(dev)).float().cpu().numpy().ravel().tolist()

figures = []
dtypes = ["fp32", "bf16", "fp16"] if dev == "cuda" else ["fp32"]
TD = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
for name in dtypes:
    m = model.to(TD[name])
    for b in args["batches"]:
        x = torch.sin(torch.arange(b * 3 * 224 * 224, dtype=torch.float32) * 0.001).reshape(b, 3, 224, 224)
        x = x.to(dev).to(TD[name])
        try:
            with torch.no_grad():
                med, runs = timed(lambda: m(x), args["warmup"], args["runs"])
            figures.append({"kind": "forward", "dtype": name, "batch": b, "medianMs": med, "runs": runs})
        except Exception as e:
            errors.append(f"forward {name} b{b}: {e}")
model = model.to(torch.float32).train()
opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
tb = args["trainBatch"]
x = torch.sin(torch.arange(tb * 3 * 224 * 224, dtype=torch.float32) * 0.001).reshape(tb, 3, 224, 224).to(dev)
y = (torch.arange(tb) % 1000).to(dev)
for name in (["fp32", "bf16"] if dev == "cuda" else ["fp32"]):
    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=(name == "bf16")):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    try:
        med, runs = timed(step, args["warmup"], args["runs"])
        figures.append({"kind": "train", "dtype": name, "batch": tb, "medianMs": med, "runs": runs})
    except Exception as e:
        errors.append(f"train {name}: {e}")

dev_name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
print(json.dumps({"torch": torch.__version__, "timm": timm.__version__, "device": dev_name,
                  "figures": figures, "goldenLogits": golden, "errors": errors}))
`;

/** Whether `python3` can import torch and timm here. */
export async function torchAvailable(python = "python3"): Promise<string | undefined> {
  try {
    const out = await new Deno.Command(python, { args: ["-c", "import torch, timm"], stderr: "piped" })
      .output();
    if (out.success) return undefined;
    return new TextDecoder().decode(out.stderr).trim().split("\n").pop();
  } catch (e) {
    return `${python} could not be run (${(e as Error).message})`;
  }
}

/** Runs the anchor; throws with the Python error when it fails. */
export async function runTorchAnchor(options: {
  weights: string;
  golden?: string;
  batches: number[];
  trainBatch: number;
  warmup: number;
  runs: number;
  python?: string;
}): Promise<TorchReport> {
  const { python = "python3", ...args } = options;
  const out = await runTimed(python, ["-c", PYTHON, JSON.stringify(args)]);
  if (out.code !== 0) throw new Error(`PyTorch anchor failed (exit ${out.code}): ${out.stderr.slice(-2000)}`);
  return JSON.parse(out.stdout.trim().split("\n").pop()!) as TorchReport;
}
