/**
 * Plain SVG charts, no dependencies: the training curves (train loss and eval loss against epochs on the
 * left, eval top-1/top-5 accuracy on the right) and a confusion-matrix heat map.
 *
 * @module
 */
import type { MetricsRecord } from "./metrics.ts";

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);
}

interface Series {
  name: string;
  color: string;
  points: Array<[number, number]>;
}

function panel(
  x0: number,
  y0: number,
  w: number,
  h: number,
  title: string,
  series: Series[],
  yFixed?: [number, number],
): string {
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const xMax = Math.max(1, ...xs);
  let [yMin, yMax] = yFixed ?? [Math.min(0, ...ys), Math.max(1e-9, ...ys)];
  if (!(yMax > yMin)) [yMin, yMax] = [0, 1];
  const px = (x: number) => x0 + 50 + ((w - 60) * x) / xMax;
  const py = (y: number) => y0 + h - 30 - ((h - 60) * (y - yMin)) / (yMax - yMin);
  const out: string[] = [
    `<text x="${x0 + w / 2}" y="${y0 + 18}" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    `<line x1="${px(0)}" y1="${py(yMin)}" x2="${px(xMax)}" y2="${py(yMin)}" stroke="#333"/>`,
    `<line x1="${px(0)}" y1="${py(yMin)}" x2="${px(0)}" y2="${py(yMax)}" stroke="#333"/>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const y = yMin + ((yMax - yMin) * i) / 4;
    out.push(
      `<line x1="${px(0)}" y1="${py(y)}" x2="${px(xMax)}" y2="${py(y)}" stroke="#ddd"/>`,
      `<text x="${px(0) - 4}" y="${py(y) + 4}" text-anchor="end" font-size="10">${+y.toPrecision(3)}</text>`,
    );
  }
  const xStep = Math.max(1, Math.ceil(xMax / 10));
  for (let x = 0; x <= xMax; x += xStep) {
    out.push(`<text x="${px(x)}" y="${py(yMin) + 14}" text-anchor="middle" font-size="10">${x}</text>`);
  }
  out.push(`<text x="${px(xMax / 2)}" y="${y0 + h - 2}" text-anchor="middle" font-size="11">epoch</text>`);
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const d = s.points.map(([x, y], j) => `${j ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join("");
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.5"/>`);
    if (s.points.length < 40) {
      for (const [x, y] of s.points) {
        out.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="2.5" fill="${s.color}"/>`);
      }
    }
    out.push(
      `<rect x="${x0 + w - 140}" y="${y0 + 28 + i * 16}" width="10" height="10" fill="${s.color}"/>`,
      `<text x="${x0 + w - 125}" y="${y0 + 37 + i * 16}" font-size="11">${esc(s.name)}</text>`,
    );
  });
  return out.join("\n");
}

/** The loss and accuracy curves of a run's metrics as an SVG document. */
export function curvesSvg(records: readonly MetricsRecord[]): string {
  const train = records.filter((r) => r.type === "train");
  const ev = records.filter((r) => r.type === "eval");
  const ema = records.filter((r) => r.type === "eval_ema");
  const pts = (rs: MetricsRecord[], key: string, scale = 1) =>
    rs.filter((r) => typeof r[key] === "number").map((r) =>
      [r.epoch as number, (r[key] as number) * scale] as [number, number]
    );
  const W = 900, H = 360;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    panel(0, 0, W / 2, H, "loss", [
      { name: "train loss", color: "#1f77b4", points: pts(train, "loss") },
      { name: "eval loss", color: "#d62728", points: pts(ev, "loss") },
    ]),
    panel(W / 2, 0, W / 2, H, "eval accuracy (%)", [
      { name: "top-1", color: "#2ca02c", points: pts(ev, "top1", 100) },
      { name: "top-5", color: "#ff7f0e", points: pts(ev, "top5", 100) },
      ...(ema.length ? [{ name: "EMA top-1", color: "#9467bd", points: pts(ema, "top1", 100) }] : []),
    ], [0, 100]),
    `</svg>`,
    "",
  ].join("\n");
}

/** A confusion matrix (`[k * k]`, rows = true class) as an SVG heat map with counts. */
export function confusionSvg(
  confusion: ArrayLike<number>,
  labels: readonly string[],
  title = "confusion matrix",
): string {
  const k = labels.length;
  const cell = 44, left = 110, top = 60;
  const W = left + k * cell + 20, H = top + k * cell + 90;
  const rows = Array.from({ length: k }, (_, t) => {
    let s = 0;
    for (let p = 0; p < k; p++) s += confusion[t * k + p];
    return s;
  });
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`,
    `<text x="${left + (k * cell) / 2}" y="${
      top + k * cell + 80
    }" text-anchor="middle" font-size="12">predicted</text>`,
    `<text x="14" y="${top + (k * cell) / 2}" font-size="12" transform="rotate(-90 14 ${
      top + (k * cell) / 2
    })" text-anchor="middle">true</text>`,
  ];
  for (let t = 0; t < k; t++) {
    out.push(
      `<text x="${left - 6}" y="${top + t * cell + cell / 2 + 4}" text-anchor="end" font-size="11">${
        esc(labels[t])
      }</text>`,
    );
    out.push(
      `<text x="${left + t * cell + cell / 2}" y="${
        top + k * cell + 12
      }" font-size="11" text-anchor="end" transform="rotate(-45 ${left + t * cell + cell / 2} ${
        top + k * cell + 12
      })">${esc(labels[t])}</text>`,
    );
    for (let p = 0; p < k; p++) {
      const v = confusion[t * k + p];
      const f = rows[t] ? v / rows[t] : 0;
      const shade = Math.round(255 * (1 - f));
      const fillColor = t === p
        ? `rgb(${shade},${Math.round(255 - 0.45 * (255 - shade))},${shade})`
        : `rgb(255,${shade},${shade})`;
      out.push(
        `<rect x="${left + p * cell}" y="${
          top + t * cell
        }" width="${cell}" height="${cell}" fill="${fillColor}" stroke="#eee"/>`,
        `<text x="${left + p * cell + cell / 2}" y="${
          top + t * cell + cell / 2 + 4
        }" text-anchor="middle" font-size="11" fill="${f > 0.6 ? "white" : "black"}">${v}</text>`,
      );
    }
  }
  out.push("</svg>", "");
  return out.join("\n");
}
