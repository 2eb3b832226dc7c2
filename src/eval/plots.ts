/**
 * The report's plots, as Vega-Lite specs compiled and rendered to SVG headless (vega's View with no
 * renderer writes SVG without a browser or canvas):
 *   - per task, score against the KV bytes each decode step read (as a fraction of dense's, log scale), one
 *     line per method with its 95% intervals, dense as the reference point;
 *   - for the needle task, accuracy by context length × depth, one panel per method and ratio.
 */
import * as vega from "vega";
import * as vegaLite from "vega-lite";
import type { CellRecord } from "./results.js";

const METHOD_COLORS = {
  domain: ["dense", "sparq", "h2o", "streaming"],
  range: ["#333333", "#1f77b4", "#d62728", "#ff7f0e"],
};
const LOWER_IS_BETTER = new Set(["bpc"]);

async function render(spec: vegaLite.TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Score vs KV bytes read per decode step (fraction of dense's), one line per method, 95% intervals as bars. */
export function scoreVsBytesSvg(task: string, cells: readonly CellRecord[], unit: string): Promise<string> {
  const dense = cells.find((c) => c.method === "dense");
  const rows = cells.flatMap((c) => {
    const methods =
      c.method === "dense"
        ? ["sparq", "h2o", "streaming"].filter((m) => cells.some((x) => x.method === m))
        : [c.method];
    // Dense is every method's starting point (ratio 1), so each line starts there.
    return (methods.length > 0 ? methods : ["dense"]).map((method) => ({
      method: c.method === "dense" ? method : c.method,
      kind: c.method,
      fraction: c.transfer,
      score: c.score.mean,
      low: c.score.low,
      high: c.score.high,
      label: c.method === "dense" ? "dense" : `1/${c.compression}`,
    }));
  });
  const yTitle = `${unit}${LOWER_IS_BETTER.has(task) ? " (lower is better)" : ""}`;
  // The axis spans the fractions measured and the 1/2^n tick nearest the smallest (a log scale left to round
  // its ends would stretch 1/8.1 to 1/16; one ending at 1/7.9 would drop the 1/8 tick).
  const fractions = rows.map((r) => r.fraction);
  const smallest = Math.min(1, ...fractions);
  const domain = [Math.min(smallest, 2 ** Math.round(Math.log2(smallest))), Math.max(1, ...fractions)];
  const spec: vegaLite.TopLevelSpec = {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: {
      text: `${task}: ${unit} vs KV bytes read per decode step`,
      subtitle: dense ? `${dense.model.name}, ${dense.score.n} samples per point, 95% intervals` : "",
    },
    width: 420,
    height: 260,
    background: "white",
    data: { values: rows },
    encoding: {
      x: {
        field: "fraction",
        type: "quantitative",
        title: "KV bytes read + written per decode step, as a fraction of dense's (log scale)",
        scale: { type: "log", base: 2, reverse: true, domain, nice: false },
        axis: {
          values: [1, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32],
          labelExpr: "datum.value >= 0.99 ? '1 (dense)' : '1/' + format(1 / datum.value, '.0f')",
        },
      },
      color: { field: "method", type: "nominal", scale: METHOD_COLORS, title: "method" },
    },
    layer: [
      {
        mark: { type: "line", point: true },
        encoding: { y: { field: "score", type: "quantitative", title: yTitle, scale: { zero: false } } },
      },
      {
        mark: { type: "errorbar", ticks: true },
        encoding: { y: { field: "low", type: "quantitative", title: yTitle }, y2: { field: "high" } },
      },
    ],
  };
  return render(spec);
}

/** Needle accuracy by length (rows) and depth (columns), one panel per method and ratio. */
export function needleHeatmapSvg(cells: readonly CellRecord[]): Promise<string> {
  const rows: Record<string, unknown>[] = [];
  for (const c of cells) {
    const ratio = c.method === "dense" ? "1 (dense)" : `1/${c.compression}`;
    const groups = new Map<string, { length: number; depth: number; sum: number; n: number }>();
    for (const s of c.samples) {
      const key = `${s.meta.length} ${s.meta.depth}`;
      const g = groups.get(key) ?? { length: Number(s.meta.length), depth: Number(s.meta.depth), sum: 0, n: 0 };
      g.sum += s.score;
      g.n++;
      groups.set(key, g);
    }
    for (const g of groups.values()) {
      rows.push({
        method: c.method,
        methodOrder: METHOD_COLORS.domain.indexOf(c.method),
        ratio,
        ratioValue: c.compression,
        length: g.length,
        depth: `${Math.round(g.depth * 100)}%`,
        depthValue: g.depth,
        accuracy: g.sum / g.n,
        n: g.n,
      });
    }
  }
  // One row of panels per method, one column per ratio: dense alone in the first column. Every (method,
  // ratio) pair gets a row of data (an empty one where there is no cell): vega places facet panels in
  // order, so a missing pair would shift the panels after it.
  const present = new Set(rows.map((r) => `${r.method} ${r.ratio}`));
  const first = rows[0];
  for (const method of new Set(cells.map((c) => c.method))) {
    for (const c of new Set(cells.map((x) => x.compression))) {
      const ratio = c === 1 ? "1 (dense)" : `1/${c}`;
      if (!present.has(`${method} ${ratio}`) && first) {
        rows.push({
          ...first,
          method,
          methodOrder: METHOD_COLORS.domain.indexOf(method),
          ratio,
          ratioValue: c,
          accuracy: null,
          n: 0,
        });
      }
    }
  }
  const spec: vegaLite.TopLevelSpec = {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: {
      text: "needle: fraction answered by context length × depth of the fact",
      subtitle: cells[0] ? `${cells[0].model.name}; rows: method, columns: KV bytes read per step` : "",
    },
    background: "white",
    data: { values: rows },
    facet: {
      row: {
        field: "method",
        type: "nominal",
        sort: { field: "methodOrder" },
        title: null,
        header: { labelFontSize: 12, labelAngle: 0, labelAlign: "left" },
      },
      column: {
        field: "ratio",
        type: "ordinal",
        sort: { field: "ratioValue" },
        title: null,
        header: { labelFontSize: 12 },
      },
    },
    spec: {
      width: 140,
      height: 80,
      mark: "rect",
      encoding: {
        x: { field: "depth", type: "ordinal", sort: { field: "depthValue" }, title: "depth of the fact" },
        y: { field: "length", type: "ordinal", sort: "descending", title: "tokens" },
        color: {
          field: "accuracy",
          type: "quantitative",
          scale: { domain: [0, 1], scheme: "redyellowgreen" },
          title: "answered",
        },
      },
    },
  };
  return render(spec);
}
