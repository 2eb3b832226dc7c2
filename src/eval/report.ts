/**
 * report.md from results.jsonl: per task, a table of methods × compression ratios (the SparQ paper's Table 2
 * shape) with each cell's mean score, its 95% interval, and the KV bytes each decode step read against
 * dense's; the needle task also by length and depth; what a task skipped, and why.
 */
import fs from "node:fs";
import path from "node:path";
import { formatBytes } from "../errors.js";
import { needleHeatmapSvg, scoreVsBytesSvg } from "./plots.js";
import { RESULTS_FILE, readResults, type CellRecord } from "./results.js";

const HIGHER_IS_BETTER: Record<string, boolean> = { bpc: false };
const UNITS: Record<string, string> = {
  needle: "fraction answered",
  repetition: "characters copied",
  bpc: "bits per character",
  qa: "fraction answered",
  data: "score",
  "niah-single": "fraction found",
  "niah-multikey": "fraction found",
  "niah-multivalue": "fraction of values found",
  "niah-multiquery": "fraction of values found",
  vt: "fraction of variables found",
  cwe: "fraction of words found",
};

export async function writeReport(dir: string): Promise<string> {
  const records = readResults(path.join(dir, RESULTS_FILE));
  const plots = path.join(dir, "plots");
  const lines: string[] = ["# kvslim eval report", ""];
  if (records.length === 0) lines.push(`No cells in ${path.join(dir, RESULTS_FILE)} yet.`);
  const byModel = groupBy(
    records,
    (r) => `${r.model.name} (${r.model.architecture}, ${r.kvDtype} KV, ${r.model.digest.slice(0, 19)}…)`,
  );
  let modelIndex = 0;
  for (const [model, cells] of byModel) {
    lines.push(`## ${model}`, "", ...summaryTable(cells), "");
    const prefix = byModel.size > 1 ? `m${++modelIndex}-` : "";
    for (const [task, taskCells] of groupBy(cells, (r) => r.task)) {
      const better = HIGHER_IS_BETTER[task] === false ? "lower is better" : "higher is better";
      lines.push(
        `### ${task} (${UNITS[task] ?? "score"}, ${better}; ${taskCells[0].score.n} samples per cell, 95% intervals)`,
        "",
      );
      fs.mkdirSync(plots, { recursive: true });
      const plot = `${prefix}${task}.svg`;
      fs.writeFileSync(path.join(plots, plot), await scoreVsBytesSvg(task, taskCells, UNITS[task] ?? "score"));
      lines.push(`![${task}: score vs KV bytes read](plots/${plot})`, "");
      lines.push(
        "| method | compression | score | 95% interval | KV read+written / step | vs dense | KV stored / token | decode tok/s |",
      );
      lines.push("|---|---|---|---|---|---|---|---|");
      for (const r of [...taskCells].sort(
        (a, b) => a.method.localeCompare(b.method) || a.compression - b.compression,
      )) {
        lines.push(
          `| ${methodLabel(r)} | ${r.method === "dense" ? "—" : `1/${r.compression}`} | ${fmt(r.score.mean)} | ${fmt(r.score.low)}–${fmt(r.score.high)} | ` +
            `${formatBytes(Math.round(r.kvBytesPerStep))} | ${r.transfer > 0 ? `1/${(1 / r.transfer).toFixed(1)}` : "—"} | ${formatBytes(Math.round(r.kvStoredPerToken))} | ${r.decodeTokensPerSecond.toFixed(1)} |`,
        );
      }
      const skipped = [...new Set(taskCells.flatMap((r) => r.skipped))];
      if (skipped.length > 0) lines.push("", `Fitted to the model: ${skipped.join("; ")}.`);
      if (task === "needle") {
        const heatmap = `${prefix}needle-heatmap.svg`;
        fs.writeFileSync(path.join(plots, heatmap), await needleHeatmapSvg(taskCells));
        lines.push("", ...needleByLength(taskCells), "", `![needle: length × depth](plots/${heatmap})`);
      }
      lines.push("");
    }
  }
  const file = path.join(dir, "report.md");
  fs.writeFileSync(file, lines.join("\n"));
  return file;
}

/** A cell's method as the tables name it: SparQ ranked by probabilities is "sparq(probabilities)". */
function methodLabel(c: CellRecord): string {
  const ranking = (c.spec as { groupRanking?: string }).groupRanking;
  return ranking ? `${c.method}(${ranking})` : c.method;
}

/**
 * The SparQ paper's Table 2 shape: one row per method and ratio, one column per task (its mean score), and
 * the KV bytes read per decode step as a fraction of dense's, averaged over the tasks.
 */
function summaryTable(cells: CellRecord[]): string[] {
  const tasks = [...new Set(cells.map((c) => c.task))];
  const rows = groupBy(cells, (c) => (c.method === "dense" ? "dense —" : `${methodLabel(c)} 1/${c.compression}`));
  const order = [...rows.keys()].sort((a, b) => {
    const [ma, ca] = a.split(" ");
    const [mb, cb] = b.split(" ");
    const rank = (m: string) => ["dense", "sparq", "h2o", "streaming"].indexOf(m.replace(/\(.*\)$/, ""));
    return rank(ma) - rank(mb) || (Number(ca.slice(2)) || 0) - (Number(cb.slice(2)) || 0);
  });
  const header = tasks.map((t) => `${t} (${HIGHER_IS_BETTER[t] === false ? "↓" : "↑"})`);
  const out = [
    `| method | compression | ${header.join(" | ")} | KV read / step vs dense |`,
    `|---|---|${tasks.map(() => "---").join("|")}|---|`,
  ];
  for (const name of order) {
    const group = rows.get(name)!;
    const [method, ratio] = name.split(" ");
    const byTask = new Map(group.map((c) => [c.task, c]));
    const transfer = group.reduce((a, c) => a + c.transfer, 0) / group.length;
    out.push(
      `| ${method} | ${ratio} | ${tasks.map((t) => (byTask.has(t) ? fmt(byTask.get(t)!.score.mean) : "—")).join(" | ")} | ${method === "dense" ? "1" : `1/${(1 / transfer).toFixed(1)}`} |`,
    );
  }
  return out;
}

/** Needle accuracy by context length (rows) for each method and ratio (columns). */
function needleByLength(cells: CellRecord[]): string[] {
  const lengths = [...new Set(cells.flatMap((r) => r.samples.map((s) => Number(s.meta.length))))].sort((a, b) => a - b);
  const columns = cells.map((r) => `${methodLabel(r)}${r.method === "dense" ? "" : ` 1/${r.compression}`}`);
  const out = [`| length (tokens) | ${columns.join(" | ")} |`, `|---|${columns.map(() => "---").join("|")}|`];
  for (const length of lengths) {
    const row = cells.map((r) => {
      const s = r.samples.filter((x) => Number(x.meta.length) === length);
      return s.length === 0 ? "—" : fmt(s.reduce((a, x) => a + x.score, 0) / s.length);
    });
    out.push(`| ${length} | ${row.join(" | ")} |`);
  }
  return out;
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return "—";
  return Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(3);
}

function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const list = out.get(k) ?? [];
    list.push(item);
    out.set(k, list);
  }
  return out;
}
