/**
 * Training runs on disk. A run directory is also a model directory: `kvslim generate -m runs/x` loads it.
 *
 *   runs/x/
 *     ckpt-000120/            one complete checkpoint (written as ckpt-000120.tmp, then renamed)
 *       config.json           the model (HF style; model_type "kvslim" for CLA models)
 *       model.safetensors     the weights, f32, HF names and row order (what generate loads)
 *       tokenizer.json (+ tokenizer_config.json, generation_config.json, chat_template.jinja: those the run's tokenizer has)
 *       training.safetensors  params, AdamW m and v (f32, kvslim's names "param.", "m.", "v." + GGUF name)
 *       state.json            step, tokens seen, the batch sampler's generator state, options (TrainState)
 *     current -> ckpt-000120  symlink, replaced atomically (a new link renamed over it)
 *     config.json, model.safetensors, tokenizer.json, … -> current/…
 *     log.jsonl               one JSON object per logged step (appended; trimmed to the checkpoint on resume)
 *
 * A kill at any moment leaves `current` pointing at a complete checkpoint: the new one is complete
 * before the link moves, and the old one is removed only after.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { FileExistsError, FormatError, UsageError, shownValue } from "../errors.js";
import { writeFileAtomic } from "../io/atomic.js";
import { readTensorBytes } from "../io/tensor-file.js";
import { readSafetensors, writeSafetensors } from "../io/safetensors.js";
import { encode } from "../memory/dtype.js";
import { hfConfigFor } from "../model/files.js";
import { HF_TOKENIZER_FILES } from "../tokenizer/hf-tokenizer.js";
import { validateConfig, type ModelConfig } from "../model/config.js";
import { tensorsToWrite } from "../model/synthetic.js";
import type { ParamLayout } from "./params.js";

export const CHECKPOINT_VERSION = 1;
const LINKED = ["config.json", "model.safetensors", ...HF_TOKENIZER_FILES];

/** What a run needs to continue exactly where it stopped (besides the tensors). */
export interface TrainState {
  version: number;
  step: number; // optimizer steps done
  tokensSeen: number;
  samplerState: number[];
  elapsedSeconds: number;
  config: ModelConfig;
  options: Record<string, unknown>; // the run's TrainOptions (trainer.ts), as JSON
  /** FNV-1a of the training token stream (8 hex digits): a resumed run must read the same stream. Absent in older runs. */
  streamDigest?: string;
}

export interface Checkpoint {
  state: TrainState;
  params: Float32Array; // (P) in the layout's order
  m: Float32Array;
  v: Float32Array;
}

/** A tokenizer directory's files, name → contents, for the checkpoints (the directory may go while a run lasts). */
export function readTokenizerFiles(dir: string): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  for (const file of HF_TOKENIZER_FILES) {
    if (fs.existsSync(path.join(dir, file))) files.set(file, fs.readFileSync(path.join(dir, file)));
  }
  return files;
}

/** Writes a checkpoint of `step` into runDir, with the tokenizer's files (readTokenizerFiles), and makes it current. */
export function saveCheckpoint(
  runDir: string,
  layout: ParamLayout,
  ckpt: Checkpoint,
  tokenizerFiles: ReadonlyMap<string, Uint8Array>,
): void {
  fs.mkdirSync(runDir, { recursive: true });
  const name = `ckpt-${String(ckpt.state.step).padStart(6, "0")}`;
  const dir = path.join(runDir, name);
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  const config = ckpt.state.config;
  const weights = new Map(
    layout.tensors.map((t) => [t.name, { shape: t.shape, values: ckpt.params.subarray(t.offset, t.offset + t.size) }]),
  );
  writeSafetensors(path.join(tmp, "model.safetensors"), tensorsToWrite(config, weights, "f32", true), { format: "pt" });
  const training = (["param", "m", "v"] as const).flatMap((kind) => {
    const region = kind === "param" ? ckpt.params : kind === "m" ? ckpt.m : ckpt.v;
    return layout.tensors.map((t) => ({
      name: `${kind}.${t.name}`,
      dtype: "f32" as const,
      shape: t.shape,
      data: encode("f32", region.subarray(t.offset, t.offset + t.size)),
    }));
  });
  writeSafetensors(path.join(tmp, "training.safetensors"), training, { format: "kvslim-training" });
  writeJson(path.join(tmp, "config.json"), hfConfigFor(config, "f32"));
  for (const [file, bytes] of tokenizerFiles)
    writeFileAtomic(path.join(tmp, file), (fd) => fs.writeFileSync(fd, bytes));
  writeJson(path.join(tmp, "state.json"), ckpt.state);
  syncDir(tmp);
  fs.rmSync(dir, { recursive: true, force: true }); // a checkpoint of the same step from a crashed run
  fs.renameSync(tmp, dir);
  syncDir(runDir);
  // Move `current` to the new checkpoint atomically, then make sure the top-level links exist.
  const link = path.join(runDir, "current");
  const linkTmp = path.join(runDir, `current.${process.pid}.tmp`);
  fs.rmSync(linkTmp, { force: true });
  fs.symlinkSync(name, linkTmp);
  fs.renameSync(linkTmp, link);
  syncDir(runDir);
  for (const file of LINKED) {
    const at = path.join(runDir, file);
    if (!isLink(at) && fs.existsSync(path.join(dir, file))) fs.symlinkSync(path.join("current", file), at);
  }
  // Only now may older checkpoints go (and what a killed save left behind: temp directories and links).
  for (const entry of fs.readdirSync(runDir)) {
    if ((entry.startsWith("ckpt-") && entry !== name) || /^current\..*\.tmp$/.test(entry))
      fs.rmSync(path.join(runDir, entry), { recursive: true, force: true });
  }
}

/** The current checkpoint's directory name, or null for a directory without one. */
export function currentCheckpoint(runDir: string): string | null {
  const link = path.join(runDir, "current");
  if (!isLink(link)) return null;
  return fs.readlinkSync(link);
}

/** Reads the current checkpoint of a run: a UsageError if there is none, a FormatError if it is incomplete or unreadable. */
export function loadCheckpoint(
  runDir: string,
  layout: (config: ModelConfig) => ParamLayout,
): { ckpt: Checkpoint; layout: ParamLayout; dir: string } {
  const name = currentCheckpoint(runDir);
  if (name === null)
    throw new UsageError(
      `${runDir} is not a kvslim training run (no "current" checkpoint link); start one with kvslim train --out`,
    );
  const dir = path.join(runDir, name);
  const restore = "put the checkpoint back as it was written, or start a new run with kvslim train --out";
  if (!fs.existsSync(dir))
    throw new FormatError(
      `${runDir}: "current" points at ${name}, which does not exist (the run directory was changed by hand); ${restore}`,
    );
  const missing = ["state.json", "training.safetensors", "tokenizer.json"].filter(
    (file) => !fs.existsSync(path.join(dir, file)),
  );
  if (missing.length > 0)
    throw new FormatError(`${dir}: the checkpoint has no ${missing.join(", ")} (it was changed by hand); ${restore}`);
  const state = readState(dir);
  const l = layout(state.config);
  const file = readSafetensors(path.join(dir, "training.safetensors"));
  const byName = new Map(file.tensors.map((t) => [t.name, t]));
  const read = (kind: string) => {
    const out = new Float32Array(l.total);
    for (const t of l.tensors) {
      const info = byName.get(`${kind}.${t.name}`);
      if (info === undefined || info.dtype !== "f32" || info.shape.join() !== t.shape.join()) {
        throw new FormatError(
          `${dir}/training.safetensors: ${kind}.${t.name} missing or not f32 of shape [${t.shape}]`,
        );
      }
      readTensorBytes(info, new Uint8Array(out.buffer, 4 * t.offset, 4 * t.size));
    }
    return out;
  };
  return { ckpt: { state, params: read("param"), m: read("m"), v: read("v") }, layout: l, dir };
}

/** One evaluation from a run's log.jsonl. */
export interface EvalRecord {
  step: number;
  tokensSeen: number;
  valLoss: number;
  /** Retrieval scores (retrieval-eval.ts), absent in logs of runs older than them or with none that fit. */
  recalled?: number;
  asked?: number;
  copyLoss?: [number | null, number | null]; // null: no repeated passage fit the window (NaN in JSON)
  midCopyLoss?: [number | null, number | null]; // the same for mid-repeats; absent in older logs
}

/** What a run directory says about its training: where it stands and every evaluation so far. */
export interface TrainingRecord {
  runDir: string;
  checkpoint: string; // the checkpoint directory name the record is for
  state: TrainState;
  evals: EvalRecord[]; // the log's evaluations up to the checkpoint's step
}

/**
 * The training record of a run directory, or of one of its checkpoint directories; null for a directory
 * that is not part of a run (a plain model directory). A checkpoint's record holds the evaluations up to its step.
 */
export function trainingRecord(dir: string): TrainingRecord | null {
  let runDir = dir;
  let name = currentCheckpoint(dir);
  if (name === null) {
    if (!fs.existsSync(path.join(dir, "state.json"))) return null;
    const real = fs.realpathSync(dir); // runs/x/current is a link to the checkpoint
    runDir = path.dirname(real);
    name = path.basename(real);
  }
  const state = readState(path.join(runDir, name));
  const evals: EvalRecord[] = [];
  for (const entry of readLog(runDir) as (Partial<EvalRecord> & { step: number })[]) {
    if (typeof entry.valLoss !== "number" || entry.step > state.step) continue;
    const { step, tokensSeen, valLoss, recalled, asked, copyLoss, midCopyLoss } = entry as EvalRecord;
    evals.push({
      step,
      tokensSeen,
      valLoss,
      ...(asked === undefined ? {} : { recalled, asked }),
      ...(copyLoss === undefined ? {} : { copyLoss }),
      ...(midCopyLoss === undefined ? {} : { midCopyLoss }),
    });
  }
  return { runDir, checkpoint: name, state, evals };
}

/** A checkpoint directory's state.json (a FormatError if it is unreadable or of another version). */
function readState(dir: string): TrainState {
  const file = path.join(dir, "state.json");
  let state: unknown;
  try {
    state = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new FormatError(`${file}: not a readable training state (${(e as Error).message})`);
  }
  return checkState(state, file);
}

/** state.json checked field by field: every value a resume or `kvslim info` reads has its type and range. */
function checkState(value: unknown, file: string): TrainState {
  const fail = (key: string, expected: string, found: unknown): never => {
    throw new FormatError(
      `${file}: ${key} must be ${expected}, found ${shownValue(found)}; this checkpoint is damaged (an earlier ckpt-* may be whole)`,
    );
  };
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  if (!isObject(value)) return fail("the file", "a JSON object", value);
  if (value.version !== CHECKPOINT_VERSION) fail('"version"', String(CHECKPOINT_VERSION), value.version);
  const count = (key: string) => {
    const v = value[key];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) fail(`"${key}"`, "an integer ≥ 0", v);
  };
  count("step");
  count("tokensSeen");
  const elapsed = value.elapsedSeconds;
  if (typeof elapsed !== "number" || !(elapsed >= 0) || !Number.isFinite(elapsed))
    fail('"elapsedSeconds"', "a number ≥ 0", elapsed);
  const sampler = value.samplerState;
  if (
    !Array.isArray(sampler) ||
    sampler.length === 0 ||
    !sampler.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32)
  ) {
    fail('"samplerState"', "a list of unsigned 32-bit integers", sampler);
  }
  if (!isObject(value.config)) fail('"config"', "an object (the model's configuration)", value.config);
  validateConfig(value.config as unknown as ModelConfig, `${file}: config`);
  if (!isObject(value.options)) fail('"options"', "an object (the run's settings)", value.options);
  if (value.streamDigest !== undefined && typeof value.streamDigest !== "string")
    fail('"streamDigest"', "a string", value.streamDigest);
  return value as unknown as TrainState;
}

/** The entries of a run's log.jsonl, in order; a line cut short by a kill mid-write is left out (the checkpoint is what counts). */
function readLog(runDir: string): { step: number }[] {
  const file = path.join(runDir, "log.jsonl");
  if (!fs.existsSync(file)) return [];
  const entries: { step: number }[] = [];
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    try {
      const entry = JSON.parse(line) as { step?: unknown };
      if (typeof entry.step === "number") entries.push(entry as { step: number });
    } catch {
      // an empty line, or one cut short
    }
  }
  return entries;
}

/** Refuses to start a run in a directory that already holds one (or other files), unless it is empty. */
export function checkNewRunDir(runDir: string): void {
  if (fs.existsSync(runDir) && fs.readdirSync(runDir).length > 0) {
    throw new FileExistsError(
      `${runDir} already exists and is not empty; continue it with --resume ${runDir}, or choose another --out`,
    );
  }
}

/** Appends one JSON line to the run's log. */
export function appendLog(runDir: string, entry: Record<string, unknown>): void {
  fs.appendFileSync(path.join(runDir, "log.jsonl"), `${JSON.stringify(entry)}\n`);
}

/** Drops log lines of steps after `step` (written after the checkpoint a resume starts from). */
export function trimLog(runDir: string, step: number): void {
  const file = path.join(runDir, "log.jsonl");
  if (!fs.existsSync(file)) return;
  const kept = readLog(runDir).filter((entry) => entry.step <= step);
  fs.writeFileSync(`${file}.tmp`, kept.map((entry) => `${JSON.stringify(entry)}\n`).join(""));
  fs.renameSync(`${file}.tmp`, file); // a kill leaves the old log or the new one, never half of one
}

/** Writes a JSON file, flushed to the disk (a checkpoint is complete before `current` moves to it). */
function writeJson(file: string, value: unknown): void {
  writeFileAtomic(file, (fd) => fs.writeFileSync(fd, `${JSON.stringify(value, null, 2)}\n`));
}

function isLink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

function syncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, "r");
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // Not every platform can fsync a directory; best effort.
  }
}
