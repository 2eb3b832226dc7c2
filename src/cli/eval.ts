/**
 * `kvslim eval`: quality against KV bytes. `eval` (run) runs a grid of tasks × attention methods × compression
 * ratios on a model and appends one line per cell to OUT/results.jsonl (re-running resumes; --shard i/n runs
 * every n-th cell); `eval merge` joins shards' results; `eval report` writes OUT/report.md from them.
 */
import fs from "node:fs";
import path from "node:path";
import cliProgress from "cli-progress";
import type { Command } from "commander";
import { SPARQ_GROUP_RANKINGS, type SparqGroupRanking } from "../attention/method.js";
import { UsageError } from "../errors.js";
import { EVAL_METHODS, PAPER_TASKS, TASKS, gridCells, runGrid, type EvalMethod, type TaskName } from "../eval/grid.js";
import { RULER_TASKS } from "../eval/tasks/ruler.js";
import { mergeResults } from "../eval/merge.js";
import { TEXT_SOURCES, type TextSource } from "../eval/text.js";
import { writeReport } from "../eval/report.js";
import { packageRoot } from "../kernels/wasm.js";
import { KV_ROTATIONS, loadModel, type KvRotation } from "../model/model.js";
import { KV_DTYPES, type KvDType } from "../kvcache/cache.js";
import { choiceOption, intOption, parseFloatIn, pathOption, seedOption, threadsOption } from "./options.js";

interface RunFlags {
  model?: string;
  tasks?: string;
  methods: string;
  compression: string;
  samples: number;
  seed: number;
  lengths: string;
  depths: number;
  data?: string;
  text: string;
  shard: string;
  out?: string;
  kvDtype: string;
  kvRotation: string;
  sparqGroupRanking?: string;
  threads?: number;
}

const list = (value: string) => value.split(",").map((s) => s.trim());

/** "1k" → 1024, "2048" → 2048: token counts. */
function tokensOf(item: string, flag: string): number {
  const m = /^(\d+)(k?)$/i.exec(item);
  const n = m ? Number(m[1]) * (m[2] ? 1024 : 1) : NaN;
  if (!Number.isSafeInteger(n) || n < 16 || n > 1 << 24)
    throw new UsageError(`${flag} expects token counts from 16 to 16M such as 1k,2k,4k, got "${item}"`);
  return n;
}

export function registerEval(program: Command): void {
  const evalCommand = program
    .command("eval")
    .description("quality vs KV bytes: a grid of tasks × methods × compression ratios (run, merge, report)");
  evalCommand
    .command("run", { isDefault: true })
    .description("run the grid's cells on a model, appending each to OUT/results.jsonl (re-running resumes)")
    .option("-m, --model <path>", "a .gguf file or a model directory", pathOption("--model"))
    .option(
      "--tasks <list>",
      `tasks: ${TASKS.join(", ")}, or ruler for RULER's six (default: ${PAPER_TASKS.join(",")}; with --data, none unless given)`,
    )
    .option(
      "--data <file>",
      "your own tasks: JSON lines with context, question, answer_prefix, answer, max_new_tokens, metric",
      pathOption("--data"),
    )
    .option("--methods <list>", `attention methods: ${EVAL_METHODS.join(", ")}`, EVAL_METHODS.join(","))
    .option(
      "--compression <list>",
      "compression ratios c (each decode step reads 1/c of dense's KV); 1 = dense",
      "1,2,4,8",
    )
    .option("--samples <n>", "samples per cell", intOption("--samples", 1, 100_000), 100)
    .option(...seedOption("seed of the task generators"), 1)
    .option("--lengths <list>", "context lengths in tokens (needle: each; repetition, bpc: the largest)", "512,1k,2k")
    .option("--depths <n>", "needle depths, evenly spaced from the start to the end", intOption("--depths", 1, 100), 10)
    .option(
      "--text <source>",
      "filler and held-out text: wordnet (the WordNet half kvslim's models never trained on) or brown (the Brown corpus's prose)",
      choiceOption("--text", TEXT_SOURCES),
      "wordnet",
    )
    .option(
      "--shard <i/n>",
      "run only shard i of n (every n-th cell); merge the shards' results with eval merge",
      "1/1",
    )
    .option("-o, --out <dir>", "directory for results.jsonl (created if missing)", pathOption("--out"))
    .option("--kv-dtype <dtype>", "KV cache storage", choiceOption("--kv-dtype", KV_DTYPES), "f32")
    .option(
      "--kv-rotation <how>",
      "q8_0 / q4_0 caches: auto (Hadamard-rotate when the head dim is a multiple of 64, as llama.cpp does), hadamard, none",
      choiceOption("--kv-rotation", KV_ROTATIONS),
      "auto",
    )
    .option(
      "--sparq-group-ranking <how>",
      "sparq cells on a GQA/MQA model: rank positions by the group's summed approximate logits (the authors' harness) or probabilities (the paper's listing)",
      choiceOption("--sparq-group-ranking", SPARQ_GROUP_RANKINGS),
    )
    .option(...threadsOption)
    .action(async (flags: RunFlags, command: Command) => {
      if (flags.model === undefined) throw new UsageError("eval needs a model: -m FILE.gguf or -m DIR");
      if (flags.out === undefined) throw new UsageError("eval needs --out DIR for results.jsonl");
      if (!fs.existsSync(flags.model))
        throw new UsageError(`--model: ${flags.model} does not exist; expected a .gguf file or a model directory`);
      if (flags.data !== undefined && !fs.existsSync(flags.data))
        throw new UsageError(`--data: ${flags.data} does not exist`);
      const named =
        flags.tasks === undefined
          ? []
          : list(flags.tasks).flatMap((t) =>
              t === "ruler" ? [...RULER_TASKS] : [choiceOption("--tasks", [...TASKS, "ruler"])(t) as TaskName],
            );
      const tasks: TaskName[] =
        flags.tasks !== undefined ? [...new Set(named)] : flags.data !== undefined ? [] : [...PAPER_TASKS];
      if (flags.data !== undefined) tasks.push("data");
      const methods = list(flags.methods).map((m) => choiceOption("--methods", EVAL_METHODS)(m) as EvalMethod);
      const compressions = list(flags.compression).map((c) => parseFloatIn(c, "--compression", { min: 1, max: 1e6 }));
      const lengths = list(flags.lengths).map((l) => tokensOf(l, "--lengths"));
      const shard = /^(\d{1,7})\/(\d{1,7})$/.exec(flags.shard);
      const index = shard ? Number(shard[1]) : NaN;
      const count = shard ? Number(shard[2]) : NaN;
      if (!(index >= 1 && index <= count))
        throw new UsageError(`--shard expects i/n with 1 ≤ i ≤ n, such as 3/16, got "${flags.shard}"`);
      const cells = gridCells({ tasks, methods, compressions });
      if (cells.length === 0) throw new UsageError("--methods and --compression give no cells to run");
      if (flags.sparqGroupRanking !== undefined && !cells.some((cell) => cell.method === "sparq"))
        throw new UsageError("--sparq-group-ranking applies to sparq cells, and --methods and --compression give none");
      // The cache pool fits SparQ's layout (K twice, the mean of V), the largest any cell needs.
      const model = await loadModel(flags.model, {
        kvDtype: flags.kvDtype as KvDType,
        kvRotation: flags.kvRotation as KvRotation,
        attention: { method: "sparq", compression: 8, reallocation: true },
        threads: flags.threads,
      });
      try {
        const start = performance.now();
        // A bar over every sample of the cells left, with an ETA, on a terminal; a line per cell otherwise.
        const bar = process.stderr.isTTY
          ? new cliProgress.SingleBar(
              {
                format: "{cell} |{bar}| {value}/{total} samples · cell {done}/{cells} · ETA {eta_formatted}",
                hideCursor: true,
                etaBuffer: 200,
                stream: process.stderr,
              },
              cliProgress.Presets.shades_classic,
            )
          : null;
        let ranSeconds = 0;
        let ran = 0;
        let cellsTotal = 0;
        const result = await runGrid(model, flags.model, {
          tasks,
          methods,
          compressions,
          samples: flags.samples,
          seed: flags.seed,
          lengths,
          depths: flags.depths,
          data: flags.data,
          text: flags.text as TextSource,
          shard: { index, count },
          out: flags.out,
          flags: { ...command.opts() },
          kvslimVersion: version(),
          sparqGroupRanking: flags.sparqGroupRanking as SparqGroupRanking | undefined,
          onStart: ({ cells, samples, skippedCells }) => {
            cellsTotal = cells;
            if (skippedCells > 0)
              process.stderr.write(`eval: ${skippedCells} of ${cells} cells already in results.jsonl\n`);
            bar?.start(samples, 0, { cell: "", done: skippedCells, cells });
          },
          onSample: (cell) => bar?.increment({ cell }),
          onCell: ({ done, total: n, cell, skipped, seconds }) => {
            if (skipped) return;
            ran++;
            ranSeconds += seconds!;
            bar?.update({ done, cells: cellsTotal });
            if (bar) return;
            const left = n - done;
            const eta = left > 0 ? `, about ${formatDuration((ranSeconds / ran) * left)} left` : "";
            process.stderr.write(`[${done}/${n}] ${cell}: ${seconds!.toFixed(1)} s${eta}\n`);
          },
        });
        bar?.stop();
        process.stderr.write(
          `eval: ${result.ran} cells run, ${result.skipped} already done, in ${formatDuration((performance.now() - start) / 1000)}; results in ${path.join(flags.out, "results.jsonl")}\n`,
        );
      } finally {
        model.dispose();
      }
    });
  evalCommand
    .command("merge")
    .description("join the results.jsonl of several runs (shards) into one, each cell once")
    .argument("<dirs...>", "directories holding results.jsonl")
    .option(
      "-o, --out <dir>",
      "where to write results.jsonl (default: the directories' common parent)",
      pathOption("--out"),
    )
    .action((dirs: string[], flags: { out?: string }) => {
      const out = flags.out ?? commonParent(dirs);
      const { cells, duplicates } = mergeResults(dirs, out);
      process.stderr.write(
        `eval merge: ${cells} cells into ${path.join(out, "results.jsonl")}${duplicates > 0 ? ` (${duplicates} repeated cells kept once)` : ""}\n`,
      );
    });
  evalCommand
    .command("report")
    .description(
      "write DIR/report.md (tables per task: method × compression, with 95% intervals) and SVG plots in DIR/plots from DIR/results.jsonl",
    )
    .argument("<dir>", "a directory holding results.jsonl")
    .action(async (dir: string) => {
      if (!fs.existsSync(path.join(dir, "results.jsonl")))
        throw new UsageError(`eval report: ${dir} has no results.jsonl; run kvslim eval --out ${dir} first`);
      const file = await writeReport(dir);
      process.stdout.write(`${file}\n`);
    });
}

function commonParent(dirs: string[]): string {
  const parts = dirs.map((d) => path.resolve(d).split(path.sep));
  const first = parts[0];
  let n = 0;
  while (n < first.length && parts.every((p) => p[n] === first[n])) n++;
  const common = first.slice(0, n).join(path.sep) || path.sep;
  // One directory: its own results are already merged; write beside them.
  return dirs.length === 1 ? path.resolve(dirs[0]) : common;
}

function formatDuration(seconds: number): string {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function version(): string {
  const pkg = path.join(packageRoot(), "package.json");
  try {
    return (JSON.parse(fs.readFileSync(pkg, "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}
