/**
 * The grid: tasks × methods × compression ratios on one model, at matched KV bytes read per decode step —
 * SparQ by its compression (r = Hd/c, k = S/2c), H2O and StreamingLLM with the budget that keeps 1/c of the
 * prompt (each decode step then reads 1/c of dense's K and V rows). Dense runs once per task. Cells run in
 * a fixed order; a shard i/n runs every n-th; a cell already in results.jsonl (same key) is skipped.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { AttentionSpec, SparqGroupRanking } from "../attention/method.js";
import { rotates, type Model } from "../model/model.js";
import { attentionName } from "../model/config.js";
import { interval } from "./metrics.js";
import { appendResult, readResults, type CellRecord } from "./results.js";
import { runCell } from "./run.js";
import type { TaskContext, TaskSamples } from "./task.js";
import { useText, type TextSource } from "./text.js";
import { bpcSamples } from "./tasks/bpc.js";
import { dataSamples } from "./tasks/data.js";
import { needleSamples } from "./tasks/needle.js";
import { qaSamples } from "./tasks/qa.js";
import { RULER_TASKS, rulerSamples } from "./tasks/ruler.js";
import { repetitionSamples } from "./tasks/repetition.js";

/** The SparQ paper's tasks (the default), then RULER's synthetic ones. */
export const PAPER_TASKS = ["repetition", "needle", "qa", "bpc"] as const;
export const TASKS = [...PAPER_TASKS, ...RULER_TASKS] as const;
export type TaskName = (typeof TASKS)[number] | "data";
export const EVAL_METHODS = ["dense", "sparq", "h2o", "streaming"] as const;
export type EvalMethod = (typeof EVAL_METHODS)[number];

export interface GridOptions {
  tasks: TaskName[];
  methods: EvalMethod[];
  compressions: number[];
  samples: number;
  seed: number;
  /** needle: context lengths in tokens and the number of depths; repetition and bpc: their context length. */
  lengths: number[];
  depths: number;
  /** --data FILE.jsonl */
  data?: string;
  /** Where filler and held-out text come from. */
  text: TextSource;
  /** 1-based shard index and count. */
  shard: { index: number; count: number };
  out: string;
  /** The command's flags as given, recorded in every cell. */
  flags: Record<string, unknown>;
  kvslimVersion: string;
  /** SparQ cells of a GQA/MQA model: rank positions by the group's summed logits (default) or probabilities. */
  sparqGroupRanking?: SparqGroupRanking;
  /** Called as cells finish or are found done, and after each sample (progress). */
  onCell?: (event: { done: number; total: number; cell: string; skipped: boolean; seconds?: number }) => void;
  onStart?: (work: { cells: number; samples: number; skippedCells: number }) => void;
  onSample?: (cell: string) => void;
}

export interface Cell {
  task: TaskName;
  method: EvalMethod;
  compression: number;
}

/** The cells of the grid in their fixed order: per task, dense first, then each method at each ratio above 1. */
export function gridCells(o: Pick<GridOptions, "tasks" | "methods" | "compressions">): Cell[] {
  const cells: Cell[] = [];
  for (const task of o.tasks) {
    if (o.methods.includes("dense") || o.compressions.includes(1))
      cells.push({ task, method: "dense", compression: 1 });
    for (const c of o.compressions) {
      if (c === 1) continue;
      for (const method of o.methods) if (method !== "dense") cells.push({ task, method, compression: c });
    }
  }
  return cells;
}

/**
 * The attention spec of a cell for a sample whose prompt is `promptTokens` long: each decode step reads 1/c
 * of what dense reads over the prompt. SparQ: r = Hd/c, k = S/2c with no floors (the defaults' floors would
 * read more at short contexts); H2O and StreamingLLM: a budget of prompt/c rows (at least 4), StreamingLLM
 * keeping 16 sink tokens or a quarter of a smaller budget.
 */
export function cellSpec(cell: Cell, promptTokens: number, groupRanking?: SparqGroupRanking): AttentionSpec {
  const budget = Math.max(4, Math.round(promptTokens / cell.compression));
  switch (cell.method) {
    case "dense":
      return { method: "dense" };
    case "sparq":
      return {
        method: "sparq",
        compression: cell.compression,
        minK: 1,
        minR: 1,
        ...(groupRanking && { groupRanking }),
      };
    case "h2o":
      return { method: "h2o", budget };
    case "streaming":
      return { method: "streaming", budget, sinks: Math.min(16, Math.floor(budget / 4)) };
    default:
      return cell.method satisfies never;
  }
}

/** The cell's method as results.jsonl records it: the spec, with budgets stated as the rule that sets them per prompt. */
function describeSpec(cell: Cell, groupRanking?: SparqGroupRanking): Record<string, unknown> {
  const spec = cellSpec(cell, 1000 * cell.compression, groupRanking) as unknown as Record<string, unknown>;
  if ("budget" in spec) spec.budget = `max(4, round(prompt tokens / ${cell.compression}))`;
  if ("sinks" in spec) spec.sinks = "min(16, floor(budget / 4))";
  return spec;
}

/** sha256 of the model's files (a .gguf, or a directory's config and weights), streamed. */
export function modelDigest(modelPath: string): string {
  const files = fs.statSync(modelPath).isDirectory()
    ? fs
        .readdirSync(modelPath)
        .filter((f) => f === "config.json" || f.endsWith(".safetensors") || f === "tokenizer.json")
        .sort()
        .map((f) => path.join(modelPath, f))
    : [modelPath];
  const hash = crypto.createHash("sha256");
  const buf = Buffer.alloc(1 << 20);
  for (const file of files) {
    hash.update(path.basename(file));
    const fd = fs.openSync(file, "r");
    try {
      let n: number;
      while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) hash.update(buf.subarray(0, n));
    } finally {
      fs.closeSync(fd);
    }
  }
  return `sha256:${hash.digest("hex")}`;
}

function taskSamples(task: TaskName, ctx: TaskContext, o: GridOptions): TaskSamples {
  switch (task) {
    case "needle":
      return needleSamples(ctx, { lengths: o.lengths, depths: o.depths });
    case "repetition":
      return repetitionSamples(ctx, { length: Math.max(...o.lengths) });
    case "bpc":
      return bpcSamples(ctx, { length: Math.max(...o.lengths) });
    case "qa":
      return qaSamples(ctx, { length: Math.max(...o.lengths) });
    case "niah-single":
    case "niah-multikey":
    case "niah-multivalue":
    case "niah-multiquery":
    case "vt":
    case "cwe":
      return rulerSamples(task, ctx, { length: Math.max(...o.lengths) });
    case "data":
      return dataSamples(ctx, o.data!);
    default:
      return task satisfies never;
  }
}

/** The options a task's samples depend on (part of its cells' keys). */
function taskParams(task: TaskName, o: GridOptions): Record<string, unknown> {
  if (task === "needle") return { lengths: o.lengths, depths: o.depths, text: o.text };
  if (task === "data")
    return {
      data: path.resolve(o.data!),
      digest: crypto.createHash("sha256").update(fs.readFileSync(o.data!)).digest("hex"),
    };
  return { length: Math.max(...o.lengths), text: o.text };
}

/** Runs the grid's missing cells of this shard on `model`, appending each to out/results.jsonl. */
export async function runGrid(
  model: Model,
  modelPath: string,
  o: GridOptions,
): Promise<{ ran: number; skipped: number; total: number }> {
  const file = path.join(o.out, "results.jsonl");
  const done = new Set(readResults(file).map((r) => r.key));
  const digest = modelDigest(modelPath);
  const cells = gridCells(o).filter((_, i) => i % o.shard.count === o.shard.index - 1);
  const ctx: TaskContext = {
    tokenizer: model.tokenizer,
    contextSize: model.contextSize,
    seed: o.seed,
    samples: o.samples,
  };
  // Every task's samples are made (and --data checked) before the first cell runs.
  useText(o.text);
  const samples = new Map(o.tasks.map((task) => [task, taskSamples(task, ctx, o)]));
  let ran = 0;
  let skipped = 0;
  // A task's parameters once (--data's digest reads the whole file).
  const paramsOf = new Map(o.tasks.map((task) => [task, taskParams(task, o)]));
  // The cache's storage as results name it: the dtype, "+hadamard" when a quantised cache is rotated.
  const { kvDtype, kvRotation } = model.defaults;
  const cacheName = kvDtype + (rotates(kvRotation, kvDtype, model.config.headDim) ? "+hadamard" : "");
  const keyOf = (cell: Cell) =>
    JSON.stringify({
      task: cell.task,
      params: paramsOf.get(cell.task),
      method: cell.method,
      compression: cell.compression,
      samples: o.samples,
      seed: o.seed,
      digest,
      kvDtype: cacheName,
      // Only when set, so that the keys of results made without it stay as they were.
      ...(cell.method === "sparq" && o.sparqGroupRanking && { sparqGroupRanking: o.sparqGroupRanking }),
    });
  const todo = cells.filter((cell) => !done.has(keyOf(cell)));
  o.onStart?.({
    cells: cells.length,
    samples: todo.reduce((n, cell) => n + samples.get(cell.task)!.samples.length, 0),
    skippedCells: cells.length - todo.length,
  });
  for (const [i, cell] of cells.entries()) {
    const params = paramsOf.get(cell.task)!;
    const key = keyOf(cell);
    const name = `${cell.task} ${cell.method}${cell.method === "dense" ? "" : ` 1/${cell.compression}`}`;
    if (done.has(key)) {
      skipped++;
      o.onCell?.({ done: i + 1, total: cells.length, cell: name, skipped: true });
      continue;
    }
    const task = samples.get(cell.task)!;
    const t0 = performance.now();
    const m = await runCell(
      model,
      (promptTokens) => cellSpec(cell, promptTokens, o.sparqGroupRanking),
      task.samples,
      () => o.onSample?.(name),
    );
    const seconds = (performance.now() - t0) / 1000;
    const record: CellRecord = {
      key,
      task: cell.task,
      params,
      method: cell.method,
      compression: cell.compression,
      spec: describeSpec(cell, o.sparqGroupRanking),
      kvDtype: cacheName,
      seed: o.seed,
      model: { path: modelPath, name: model.name, digest, architecture: attentionName(model.config) },
      score: interval(m.results.map((r) => r.score)),
      samples: m.results,
      skipped: task.skipped,
      kvBytesPerStep: m.kvBytesPerStep,
      denseBytesPerStep: m.denseBytesPerStep,
      transfer: m.denseBytesPerStep > 0 ? m.kvBytesPerStep / m.denseBytesPerStep : 1,
      kvStoredPerToken: m.kvStoredPerToken,
      decodeTokensPerSecond: m.decodeTokensPerSecond,
      seconds,
      flags: o.flags,
      kvslim: o.kvslimVersion,
      date: new Date().toISOString(),
    };
    appendResult(file, record);
    ran++;
    o.onCell?.({ done: i + 1, total: cells.length, cell: name, skipped: false, seconds });
  }
  return { ran, skipped, total: cells.length };
}
