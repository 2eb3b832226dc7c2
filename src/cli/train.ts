/**
 * `kvslim train`: train a model from scratch, or continue a run.
 *
 *   kvslim train --preset tiny-mqa-cla2 --tokens 20M --out runs/cla2
 *   kvslim train --resume runs/cla2                    # continues exactly where it stopped
 *   kvslim train --resume runs/cla2 --max-time 50m     # stop (with a checkpoint) after 50 minutes
 *
 * Progress: a bar with the step, loss, validation loss, tokens/s and ETA on a terminal; otherwise one line
 * per validation. Ctrl-C finishes the current step, writes a checkpoint and exits (a second Ctrl-C exits
 * at once; the last checkpoint stays intact). The run directory loads in `kvslim generate -m`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import cliProgress from "cli-progress";
import type { Command } from "commander";
import { formatBytes, InterruptedError, UsageError } from "../errors.js";
import { resolveThreads } from "../model/model.js";
import { attentionName, kvBytesPerToken } from "../model/config.js";
import { NEEDLE_DEPTHS, RETRIEVAL_SHARE } from "../train/data/retrieval.js";
import { TRAIN_PRESETS, isTrainPreset } from "../train/presets.js";
import {
  resumeRun,
  startRun,
  type RunResult,
  type StepInfo,
  type TrainHooks,
  type TrainOptions,
} from "../train/trainer.js";
import type { RetrievalScore } from "../train/retrieval-eval.js";
import { currentCheckpoint } from "../train/checkpoint.js";
import { floatOption, intOption, pathOption, seedOption, threadsOption } from "./options.js";

interface Flags {
  preset?: string;
  tokens?: number;
  out?: string;
  resume?: string;
  seed: number;
  threads?: number;
  batch?: number;
  seqLen?: number;
  lr?: number;
  warmup: number;
  evalEvery: number;
  evalBatches: number;
  checkpointEvery: number;
  tokenizer?: string;
  maxTime?: number;
  corpusDocuments?: number;
  retrievalShare?: number;
  retrievalChars?: { minChars: number; maxChars: number };
  needleDepths?: [number, number];
  answerWindows?: number;
  repeatMid?: number;
  from?: string;
  ropeTheta?: number;
}

export function registerTrain(program: Command): void {
  const fraction = (flag: string) => floatOption(flag, { min: 0, max: 1, maxOpen: true });
  program
    .command("train")
    .description("train a model from scratch (--preset, --tokens, --out) or continue one (--resume)")
    .option("--preset <name>", `model and batch setup: ${Object.keys(TRAIN_PRESETS).join(", ")}`)
    .option(
      "--tokens <n>",
      "training tokens in all, e.g. 20M (sets the number of steps; with --resume, a larger total extends the run)",
      countOption("--tokens"),
    )
    .option("--out <dir>", "run directory to create", pathOption("--out"))
    .option("--resume <dir>", "continue the run in this directory", pathOption("--resume"))
    .option(...seedOption("seed of the initial weights and the data order"), 1)
    .option(...threadsOption)
    .option("--batch <n>", "sequences per step (default: the preset's)", intOption("--batch", 1))
    .option("--seq-len <n>", "tokens per sequence (default: the preset's)", intOption("--seq-len", 2))
    // Above 1, AdamW moves every weight by more than its typical size each step: no run learns anything.
    .option(
      "--lr <x>",
      "peak learning rate, in (0, 1] (default: the preset's)",
      floatOption("--lr", { min: 0, max: 1, minOpen: true }),
    )
    .option(
      "--retrieval-share <fraction>",
      `share of the training text's characters that are generated retrieval documents (default: ${RETRIEVAL_SHARE})`,
      fraction("--retrieval-share"),
    )
    .option(
      "--retrieval-chars <min-max>",
      "length range of the retrieval documents in characters, e.g. 2000-8000 (default: 300-1200 scaled by --seq-len / 512)",
      charRange,
    )
    .option(
      "--needle-depths <min-max>",
      `where the needle documents' facts sit in their filler, as fractions from 0 (start) to 1 (end), e.g. 0-1 (default: ${NEEDLE_DEPTHS.join("-")})`,
      depthRange,
    )
    .option(
      "--answer-windows <fraction>",
      "share of training windows that end at a retrieval document's end, so that documents nearly as long as --seq-len are seen whole (default: 0, all at random offsets)",
      floatOption("--answer-windows", { min: 0, max: 1 }),
    )
    .option(
      "--repeat-mid <fraction>",
      "share of the repeat documents whose copy is a stretch of their filler from a random word, as in the repetition task, instead of a passage repeated from its start (default: 0)",
      floatOption("--repeat-mid", { min: 0, max: 1 }),
    )
    .option("--warmup <fraction>", "warmup steps as a fraction of all steps", fraction("--warmup"), 0.05)
    .option(
      "--eval-every <steps>",
      "steps between evaluations (validation loss and retrieval scores)",
      intOption("--eval-every", 1),
      100,
    )
    .option(
      "--eval-batches <n>",
      "validation batches (and batch × n held-out retrieval documents)",
      intOption("--eval-batches", 1),
      8,
    )
    .option("--checkpoint-every <steps>", "steps between checkpoints", intOption("--checkpoint-every", 1), 200)
    .option(
      "--tokenizer <dir>",
      "use this tokenizer (default: train one on the corpus into <out>/tokenizer)",
      pathOption("--tokenizer"),
    )
    .option(
      "--max-time <duration>",
      "stop with a checkpoint after this long, e.g. 50m, 2h, 90s",
      durationOption("--max-time"),
    )
    .option(
      "--corpus-documents <n>",
      "use only the first n WordNet documents (for quick trials)",
      intOption("--corpus-documents", 1),
    )
    .option(
      "--from <model>",
      "start from this model's weights instead of random ones (continued training, e.g. at a longer --seq-len); same architecture as --preset",
      pathOption("--from"),
    )
    .option(
      "--rope-theta <x>",
      "RoPE base frequency, ≥ 1 (default: the --from model's, else the preset's; with --from, a larger base than the model's stretches its positions for a longer --seq-len)",
      floatOption("--rope-theta", { min: 1 }),
    )
    .action(async (flags: Flags, command: Command) => {
      const maxSeconds = flags.maxTime ?? Infinity;
      const threads = flags.threads === undefined ? undefined : resolveThreads(flags.threads);
      let run: () => Promise<RunResult>;
      if (flags.resume !== undefined) {
        const given = (key: string) => command.getOptionValueSource(key) === "cli";
        const fixed = Object.entries(FIXED_ON_RESUME)
          .filter(([key]) => given(key))
          .map(([, flag]) => flag);
        if (fixed.length > 0) {
          throw new UsageError(
            `--resume continues a run as it was set up, so it cannot take ${fixed.join(", ")}; ` +
              "it may change --tokens (a larger total), --threads, --max-time, --eval-every and --checkpoint-every",
          );
        }
        if (!fs.existsSync(flags.resume))
          throw new UsageError(`--resume: ${flags.resume} does not exist; expected a kvslim training run directory`);
        if (currentCheckpoint(flags.resume) === null) {
          throw new UsageError(
            `--resume: ${flags.resume} is not a kvslim training run (no "current" checkpoint link); start one with kvslim train --out`,
          );
        }
        const resume = flags.resume;
        const overrides = {
          tokens: flags.tokens,
          threads,
          evalEvery: given("evalEvery") ? flags.evalEvery : undefined,
          checkpointEvery: given("checkpointEvery") ? flags.checkpointEvery : undefined,
        };
        run = () => resumeRun(resume, overrides, progress(maxSeconds));
      } else {
        if (flags.out === undefined || flags.preset === undefined || flags.tokens === undefined) {
          throw new UsageError("a new run needs --preset, --tokens and --out (or --resume DIR to continue one)");
        }
        if (!isTrainPreset(flags.preset))
          throw new UsageError(
            `--preset: unknown preset "${flags.preset}"; expected one of ${Object.keys(TRAIN_PRESETS).join(", ")}`,
          );
        if (flags.from !== undefined && !fs.existsSync(flags.from)) {
          throw new UsageError(
            `--from: ${flags.from} does not exist; expected a model directory or a .gguf file to start from`,
          );
        }
        if (flags.tokenizer !== undefined && !fs.existsSync(path.join(flags.tokenizer, "tokenizer.json"))) {
          throw new UsageError(
            `--tokenizer expects a directory holding tokenizer.json, found none at ${flags.tokenizer}`,
          );
        }
        const options: TrainOptions = {
          preset: flags.preset,
          tokens: flags.tokens,
          seed: flags.seed,
          threads: threads ?? resolveThreads(undefined),
          batch: flags.batch,
          seqLen: flags.seqLen,
          lr: flags.lr,
          warmup: flags.warmup,
          evalEvery: flags.evalEvery,
          evalBatches: flags.evalBatches,
          checkpointEvery: flags.checkpointEvery,
          tokenizer: flags.tokenizer,
          corpusDocuments: flags.corpusDocuments,
          from: flags.from,
          ropeTheta: flags.ropeTheta,
          data: {
            retrievalShare: flags.retrievalShare,
            ...flags.retrievalChars,
            needleDepths: flags.needleDepths,
            answerWindows: flags.answerWindows,
            repeatMid: flags.repeatMid,
          },
        };
        const out = flags.out;
        run = () => startRun(out, options, progress(maxSeconds));
      }
      // Ctrl-C is ours only while the run goes (in process, as in the tests, a finished run must not keep it).
      process.on("SIGINT", onSigint);
      let result: RunResult;
      try {
        result = await run();
      } finally {
        process.off("SIGINT", onSigint);
      }
      const dir = flags.resume ?? flags.out;
      const stopped = `stopped at step ${result.step} of ${result.steps} with a checkpoint; continue with: kvslim train --resume ${dir}`;
      // Ctrl-C exits 130 (the shell's code for it) so a script can tell it from --max-time, which exits 0.
      if (!result.finished && stopRequested) throw new InterruptedError(`Ctrl-C: ${stopped}`);
      process.stderr.write(
        result.finished
          ? `done: ${result.step} steps, loss ${result.lastLoss.toFixed(4)}, validation loss ${result.valLoss?.toFixed(4) ?? "—"}; the model is in ${dir}\n`
          : `${stopped}\n`,
      );
    });
}

/** The flags that set a run up (option key → flag): a resume keeps the run's own. */
const FIXED_ON_RESUME: Partial<Record<keyof Flags, string>> = {
  out: "--out",
  preset: "--preset",
  seed: "--seed",
  batch: "--batch",
  seqLen: "--seq-len",
  lr: "--lr",
  retrievalShare: "--retrieval-share",
  retrievalChars: "--retrieval-chars",
  needleDepths: "--needle-depths",
  answerWindows: "--answer-windows",
  repeatMid: "--repeat-mid",
  warmup: "--warmup",
  evalBatches: "--eval-batches",
  tokenizer: "--tokenizer",
  corpusDocuments: "--corpus-documents",
  from: "--from",
  ropeTheta: "--rope-theta",
};

/** "MIN-MAX": two positive integers, MIN ≤ MAX. */
function charRange(value: string): { minChars: number; maxChars: number } {
  const match = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(value);
  const [minChars, maxChars] = match === null ? [NaN, NaN] : [Number(match[1]), Number(match[2])];
  if (!(minChars > 0 && maxChars >= minChars && Number.isSafeInteger(maxChars))) {
    throw new UsageError(
      `--retrieval-chars expects MIN-MAX with integers 0 < MIN ≤ MAX (e.g. 2000-8000), got "${value}"`,
    );
  }
  return { minChars, maxChars };
}

/** "MIN-MAX": two fractions, 0 ≤ MIN ≤ MAX ≤ 1. */
function depthRange(value: string): [number, number] {
  const match = /^\s*(\d*\.?\d+)\s*-\s*(\d*\.?\d+)\s*$/.exec(value);
  const [min, max] = match === null ? [NaN, NaN] : [Number(match[1]), Number(match[2])];
  if (!(min >= 0 && min <= max && max <= 1)) {
    throw new UsageError(`--needle-depths expects MIN-MAX with numbers 0 ≤ MIN ≤ MAX ≤ 1 (e.g. 0-1), got "${value}"`);
  }
  return [min, max];
}

let stopRequested = false;

function onSigint(): void {
  if (stopRequested) process.exit(130);
  stopRequested = true;
  process.stderr.write("\nstopping after this step (Ctrl-C again to quit without a checkpoint)…\n");
}

/** Hooks that draw the progress and stop on Ctrl-C or after maxSeconds. */
function progress(maxSeconds: number): TrainHooks {
  const tty = process.stderr.isTTY === true;
  const bar = tty
    ? new cliProgress.SingleBar(
        {
          format: "step {value}/{total} |{bar}| loss {loss} · val {val}{retrieval} · {tps} tok/s · ETA {eta_formatted}",
          hideCursor: true,
          etaBuffer: 50,
          stream: process.stderr,
        },
        cliProgress.Presets.shades_classic,
      )
    : null;
  let val = "—";
  let retrieval = "";
  let last: StepInfo | null = null;
  const started = Date.now();
  return {
    onStart({ steps, startStep, parameters, config, trainTokens }) {
      process.stderr.write(
        `${attentionName(config)}: ${(parameters / 1e6).toFixed(2)}M parameters, ${config.nLayers} layers, d_model ${config.dModel}, ` +
          `vocab ${config.vocabSize}, KV ${formatBytes(kvBytesPerToken(config, 2))}/token (16-bit); ${(trainTokens / 1e6).toFixed(1)}M training tokens; ` +
          `steps ${startStep} → ${steps}\n`,
      );
      bar?.start(steps, startStep, { loss: "—", val, retrieval, tps: "—" });
    },
    onStep(info) {
      last = info;
      bar?.update(info.step, { loss: info.loss.toFixed(3), val, tps: info.tokensPerSecond.toFixed(0) });
    },
    onEval({ step, valLoss, retrieval: r }) {
      val = valLoss.toFixed(3);
      retrieval = r === null ? "" : retrievalText(r);
      bar?.update(step, { val, retrieval });
      if (!tty && last !== null) {
        const eta = ((last.steps - step) * (last.tokensSeen / last.step)) / last.tokensPerSecond;
        process.stderr.write(
          `step ${step}/${last.steps} loss ${last.loss.toFixed(4)} val ${val}${retrieval} lr ${last.lr.toExponential(2)} ${last.tokensPerSecond.toFixed(0)} tok/s ETA ${formatDuration(eta)}\n`,
        );
      }
    },
    stop() {
      const stop = stopRequested || (Date.now() - started) / 1000 > maxSeconds;
      if (stop || (last !== null && last.step >= last.steps)) bar?.stop();
      return stop;
    },
  };
}

/**
 * " · recall 3/21 · copy ×0.62 · mid-copy ×0.85": answers recalled, and the loss on repeated passages' second
 * copies over their first, for whole-passage repeats and mid-repeats.
 */
export function retrievalText(r: RetrievalScore): string {
  const ratio = (label: string, first: number, second: number) =>
    Number.isFinite(second) ? ` · ${label} ×${(second / first).toFixed(2)}` : "";
  const recall = r.asked > 0 ? ` · recall ${r.recalled}/${r.asked}` : "";
  return (
    recall +
    ratio("copy", r.firstCopyLoss, r.secondCopyLoss) +
    ratio("mid-copy", r.midFirstCopyLoss, r.midSecondCopyLoss)
  );
}

/** "20M", "1.5k", "300000" → an integer count from 1 to 2^53 − 1. */
export function countOption(flag: string) {
  return (value: string): number => {
    const m = /^\s*([0-9]*\.?[0-9]+)\s*([kKmMgGbB]?)\s*$/.exec(value);
    const n = m ? Math.round(Number(m[1]) * { "": 1, k: 1e3, m: 1e6, g: 1e9, b: 1e9 }[m[2].toLowerCase()]!) : NaN;
    if (!(n >= 1 && n <= Number.MAX_SAFE_INTEGER)) {
      throw new UsageError(`${flag} expects a count like 20M, 500k or 100000 (at least 1, below 2^53), got "${value}"`);
    }
    return n;
  };
}

/** Seconds → "2h 05m", "7m 30s", "12s". */
function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  const two = (n: number) => String(n).padStart(2, "0");
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${two(Math.floor((s % 3600) / 60))}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${two(s % 60)}s`;
  return `${s}s`;
}

/** "50m", "2h", "90s", "1.5h" → seconds, more than 0 (a run stopped before its first step would only be set up). */
function durationOption(flag: string) {
  return (value: string): number => {
    const m = /^\s*([0-9]*\.?[0-9]+)\s*(s|m|h)\s*$/.exec(value);
    const seconds = m ? Number(m[1]) * { s: 1, m: 60, h: 3600 }[m[2] as "s" | "m" | "h"] : NaN;
    if (!(seconds > 0)) throw new UsageError(`${flag} expects a duration above 0 like 90s, 50m or 2h, got "${value}"`);
    return seconds;
  };
}
