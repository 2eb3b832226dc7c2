/**
 * The training loop: a run from scratch (tokenizer, data, initial weights) or resumed from its current
 * checkpoint, step by step: sample a batch, forward, backward, clip, AdamW at the scheduled learning rate;
 * validation loss every evalEvery steps; a checkpoint every checkpointEvery steps, at the end, and when
 * asked to stop. A resumed run continues bit for bit as if it had not stopped: the weights, the AdamW
 * moments, the step and the batch sampler's generator all come back from the checkpoint.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { formatBytes, FormatError, OutOfMemoryError, UsageError } from "../errors.js";
import { loadWasmKernelsSync } from "../kernels/wasm.js";
import { Arena, MAX_MEMORY, RESERVED } from "../memory/arena.js";
import type { ModelConfig } from "../model/config.js";
import { openModelSource } from "../model/source.js";
import { checkTensors, readTensorF32 } from "../model/weights.js";
import { Parallel } from "../threads/parallel.js";
import { hfTokenizer } from "../tokenizer/hf-tokenizer.js";
import { saveTokenizer, trainBpe } from "../tokenizer/train-bpe.js";
import { BatchSampler, streamDigest, tokenizeDocuments, tokenizeStream, validationBatches } from "./data/batches.js";
import {
  NEEDLE_DEPTHS,
  RETRIEVAL_SHARE,
  retrievalLengths,
  trainingDocuments,
  trainingStream,
  type StreamOptions,
} from "./data/retrieval.js";
import { wordnetTrain, wordnetValidation } from "./data/wordnet.js";
import {
  appendLog,
  checkNewRunDir,
  currentCheckpoint,
  loadCheckpoint,
  readTokenizerFiles,
  saveCheckpoint,
  trimLog,
  CHECKPOINT_VERSION,
  type TrainState,
} from "./checkpoint.js";
import { TrainModel } from "./model.js";
import { AdamW, learningRate } from "./optimizer.js";
import { initParams, paramLayout } from "./params.js";
import { TRAIN_PRESETS, isTrainPreset, type TrainPresetName } from "./presets.js";
import { RetrievalScorer, retrievalWindows, type RetrievalScore } from "./retrieval-eval.js";

export interface TrainOptions {
  preset: TrainPresetName;
  tokens: number; // training tokens in all; steps = ceil(tokens / (batch · seqLen))
  seed: number;
  threads: number;
  batch?: number; // default: the preset's
  seqLen?: number;
  lr?: number;
  warmup: number; // fraction of the steps, 0.05
  evalEvery: number; // steps between validation losses
  evalBatches: number;
  checkpointEvery: number; // steps between checkpoints
  /** A tokenizer directory to use; default: train one on the corpus into <run>/tokenizer. */
  tokenizer?: string;
  /** Use only the first n WordNet training documents (tests). */
  corpusDocuments?: number;
  /**
   * A model directory or GGUF file whose weights the run starts from instead of random ones (continued
   * training, e.g. at a longer seqLen); its architecture must be the preset's, its vocabulary the tokenizer's.
   */
  from?: string;
  /**
   * The RoPE base frequency (default: the preset's). A continued run may raise it above its source's to
   * stretch the rotations' wavelengths for a longer --seq-len; the weights are kept as they are.
   */
  ropeTheta?: number;
  /**
   * The data mix, recorded in the run's state so that a resumed run reads the same stream even if the
   * defaults change: share of retrieval characters, their document lengths, the needles' depths, and the
   * share of windows that end at a retrieval document's end. What is not given is RETRIEVAL_SHARE,
   * retrievalLengths(seqLen), NEEDLE_DEPTHS and 0.
   */
  data?: Partial<DataMix>;
}

/** The data a run records: StreamOptions but the seed (the run's), and the sampler's answer-window share. */
export type DataMix = Required<Omit<StreamOptions, "seed">> & { answerWindows: number };

export interface StepInfo {
  step: number; // 1-based, steps done
  steps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokensSeen: number;
  tokensPerSecond: number; // this session's average
  elapsedSeconds: number; // all sessions
}

export interface TrainHooks {
  onStart?(info: {
    steps: number;
    startStep: number;
    parameters: number;
    config: ModelConfig;
    trainTokens: number;
  }): void;
  onStep?(info: StepInfo): void;
  onEval?(info: { step: number; valLoss: number; retrieval: RetrievalScore | null }): void;
  /** Checked after every step: true stops the run (after a checkpoint). */
  stop?(): boolean;
}

export interface RunResult {
  step: number;
  steps: number;
  finished: boolean;
  lastLoss: number;
  valLoss: number | null;
}

/** Starts a new run in runDir (which must be new or empty). */
export async function startRun(runDir: string, options: TrainOptions, hooks: TrainHooks = {}): Promise<RunResult> {
  if (!isTrainPreset(options.preset))
    throw new UsageError(`unknown preset "${options.preset}"; presets: ${Object.keys(TRAIN_PRESETS).join(", ")}`);
  checkNewRunDir(runDir);
  const vocab =
    options.tokenizer === undefined
      ? TRAIN_PRESETS[options.preset]().vocab
      : trainingTokenizer(options.tokenizer).vocabSize;
  const config = runConfig(options, vocab);
  arenaBytes(config, options); // before the directory, the tokenizer and the data
  if (options.from !== undefined) startingWeights(options.from, config, options);
  const created = !fs.existsSync(runDir);
  fs.mkdirSync(runDir, { recursive: true });
  try {
    const tokenizerDir = options.tokenizer ?? path.join(runDir, "tokenizer");
    if (options.tokenizer === undefined) {
      // The default mix, whatever options.data says: what `kvslim tokenizer train --corpus wordnet --seed` learns.
      saveTokenizer(
        trainBpe(trainingStream(corpus(options), { seed: options.seed }), { vocabSize: vocab }),
        tokenizerDir,
      );
    }
    return await run(runDir, options, tokenizerDir, null, hooks);
  } catch (e) {
    // A run that failed before its first checkpoint leaves nothing behind (a retry would find a directory
    // that is neither empty nor a run): the directory was new or empty, so everything in it is this run's.
    if (currentCheckpoint(runDir) === null) {
      if (created) fs.rmSync(runDir, { recursive: true, force: true });
      else
        for (const name of fs.readdirSync(runDir)) fs.rmSync(path.join(runDir, name), { recursive: true, force: true });
    }
    throw e;
  }
}

/**
 * The model a run trains: its preset's, with the tokenizer's vocabulary, a context of at least --seq-len and
 * the RoPE base of --rope-theta, else of the --from model, else the preset's.
 */
function runConfig(o: TrainOptions, vocabSize: number): ModelConfig {
  const model = TRAIN_PRESETS[o.preset]().model;
  return {
    ...model,
    vocabSize,
    contextLength: Math.max(model.contextLength, runShape(o).seqLen),
    ropeTheta: o.ropeTheta ?? (o.from !== undefined ? openModelSource(o.from).config.ropeTheta : model.ropeTheta),
  };
}

/** The bytes of the run's one WebAssembly memory; an OutOfMemoryError naming --batch and --seq-len if too many. */
function arenaBytes(config: ModelConfig, o: TrainOptions): number {
  const shape = runShape(o);
  const bytes = TrainModel.bytesFor(config, paramLayout(config), shape) + (1 << 20);
  if (RESERVED + bytes > MAX_MEMORY) {
    throw new OutOfMemoryError(
      `training ${o.preset} at --batch ${shape.batch} × --seq-len ${shape.seqLen} needs ${formatBytes(RESERVED + bytes)} of memory ` +
        `(weights, AdamW moments and the activations of a batch) but one WebAssembly memory holds at most ${formatBytes(MAX_MEMORY)}; ` +
        "use a smaller --batch or --seq-len",
    );
  }
  return bytes;
}

/** What a resumed run may change: it continues the same run, so only its length and how it is run and watched. */
export interface ResumeOverrides {
  tokens?: number; // a new total, at least the run's
  threads?: number;
  evalEvery?: number;
  checkpointEvery?: number;
}

/**
 * Continues the run in runDir from its current checkpoint, with its tokenizer (the copy in the
 * checkpoint, not the directory the run started from, which may have moved). A UsageError if `tokens`
 * is less than the run's total, or the run is finished and `tokens` does not extend it.
 */
export async function resumeRun(
  runDir: string,
  overrides: ResumeOverrides,
  hooks: TrainHooks = {},
): Promise<RunResult> {
  const { ckpt, dir } = loadCheckpoint(runDir, paramLayout);
  const setUp = ckpt.state.options as unknown as TrainOptions;
  const options = { ...setUp, ...definedOnly(overrides) };
  const { step, tokensSeen } = ckpt.state;
  const done = `${tokensSeen.toLocaleString("en")} tokens (step ${step.toLocaleString("en")})`;
  if (overrides.tokens !== undefined && overrides.tokens < setUp.tokens) {
    throw new UsageError(
      `--tokens ${overrides.tokens.toLocaleString("en")} is less than the ${setUp.tokens.toLocaleString("en")} tokens ${runDir} was set up for ` +
        `(it has trained ${done}); a resume can only make a run longer`,
    );
  }
  if (runShape(options).steps <= step) {
    throw new UsageError(
      `${runDir} is finished: ${done} of ${options.tokens.toLocaleString("en")}; to train it further, give a larger total with --tokens`,
    );
  }
  return run(runDir, options, dir, ckpt, hooks);
}

/** A run's batch and sequence length (the options', else the preset's) and its number of steps. */
export function runShape(o: Pick<TrainOptions, "preset" | "tokens" | "batch" | "seqLen">): {
  batch: number;
  seqLen: number;
  steps: number;
} {
  const preset = TRAIN_PRESETS[o.preset]();
  const batch = o.batch ?? preset.batch;
  const seqLen = o.seqLen ?? preset.seqLen;
  return { batch, seqLen, steps: Math.ceil(o.tokens / (batch * seqLen)) };
}

/**
 * The weights of the model at `from` by tensor name, f32 in the engine's layout, after checking that its
 * architecture is the run's (everything but the context length and the RoPE base, which the run's --seq-len and --rope-theta set).
 */
function startingWeights(from: string, config: ModelConfig, o: TrainOptions): Map<string, Float32Array> {
  const preset = o.preset;
  const source = openModelSource(from);
  const specs = checkTensors(source);
  const theirs = { ...source.config, contextLength: config.contextLength } as Record<string, unknown>;
  if (o.ropeTheta !== undefined) theirs.ropeTheta = config.ropeTheta;
  const ours = config as unknown as Record<string, unknown>;
  const differ = Object.keys(ours).filter((key) => JSON.stringify(ours[key]) !== JSON.stringify(theirs[key]));
  if (differ.length > 0) {
    throw new UsageError(
      `--from ${from}: its architecture is not preset ${preset}'s (` +
        differ
          .map((key) => `${key} ${JSON.stringify(theirs[key])}, the preset's ${JSON.stringify(ours[key])}`)
          .join("; ") +
        `); continue it with the preset it was trained with, and its tokenizer (--tokenizer)`,
    );
  }
  return new Map(specs.map((spec) => [spec.name, readTensorF32(source, spec)]));
}

/** The tokenizer a run trains with: it must have an EOS token, which separates the documents. */
function trainingTokenizer(dir: string): ReturnType<typeof hfTokenizer> {
  const tokenizer = hfTokenizer(dir);
  if (tokenizer.eos === null) {
    throw new FormatError(
      `${dir}: the tokenizer has no EOS token (tokenizer_config.json "eos_token"); training separates documents with it`,
    );
  }
  return tokenizer;
}

async function run(
  runDir: string,
  o: TrainOptions,
  tokenizerDir: string,
  resume: ReturnType<typeof loadCheckpoint>["ckpt"] | null,
  hooks: TrainHooks,
): Promise<RunResult> {
  const preset = TRAIN_PRESETS[o.preset]();
  const tokenizer = trainingTokenizer(tokenizerDir);
  const tokenizerFiles = readTokenizerFiles(tokenizerDir); // a resume's tokenizerDir is a checkpoint that will go
  const shape = runShape(o);
  // A model trained on longer sequences than its preset's context says so in its config.
  const config: ModelConfig = resume?.state.config ?? runConfig(o, tokenizer.vocabSize);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new FormatError(
      `${tokenizerDir}: the tokenizer has ${tokenizer.vocabSize} tokens but the checkpoint's embedding has ` +
        `${config.vocabSize} rows; it is not the tokenizer this run was trained with`,
    );
  }
  const layout = paramLayout(config);
  const bytes = arenaBytes(config, o);
  const data: DataMix = {
    retrievalShare: RETRIEVAL_SHARE,
    ...retrievalLengths(shape.seqLen),
    needleDepths: NEEDLE_DEPTHS,
    repeatMid: 0,
    answerWindows: 0,
    ...definedOnly(o.data ?? {}),
  };
  o = { ...o, data };
  const { answerWindows, ...streamOptions } = data;
  const train = tokenizeDocuments(trainingDocuments(corpus(o), { ...streamOptions, seed: o.seed }), tokenizer);
  const trainStream = train.tokens;
  const answers = { share: answerWindows, ends: train.retrievalEnds };
  if (trainStream.length < shape.seqLen + 2) {
    const cut = o.corpusDocuments === undefined ? "" : ` from --corpus-documents ${o.corpusDocuments}`;
    throw new UsageError(
      `the training data${cut} is ${trainStream.length} tokens, fewer than one window of --seq-len ${shape.seqLen} + 1; use more documents or a shorter --seq-len`,
    );
  }
  const digest = streamDigest(trainStream);
  if (resume?.state.streamDigest !== undefined && resume.state.streamDigest !== digest) {
    throw new UsageError(
      `cannot resume ${runDir}: its training data changed since the run started (token stream digest ${resume.state.streamDigest} in the checkpoint, ${digest} now: ` +
        "a different kvslim version, tokenizer or corpus); start a new run, or use the kvslim version the run began with",
    );
  }
  if (resume !== null) trimLog(runDir, resume.state.step); // log lines after the checkpoint are redone
  const validationDocs = wordnetValidation();
  const validation = validationBatches(
    tokenizeStream(trainingStream(validationDocs, { ...streamOptions, seed: o.seed + 1 }), tokenizer),
    shape.batch,
    shape.seqLen,
    o.evalBatches,
  );
  const retrieval = retrievalWindows(
    validationDocs,
    tokenizer,
    shape.seqLen,
    shape.batch * o.evalBatches,
    data,
    o.seed + 2,
  );

  const arena = new Arena(bytes, `training ${o.preset}`);
  const kernels = loadWasmKernelsSync(arena.memory);
  const par = await Parallel.create(kernels, arena.memory, "wasm", o.threads);
  try {
    const model = new TrainModel(kernels, par, arena, config, layout, shape);
    const optimizer = new AdamW(kernels, par, arena, layout, model, arena.alloc(64));
    const f32 = arena.f32;
    let step = 0;
    let tokensSeen = 0;
    let elapsedBefore = 0;
    let sampler: BatchSampler;
    if (resume === null) {
      if (o.from === undefined) initParams(layout, config, f32, model.params >> 2, o.seed);
      else {
        const from = startingWeights(o.from, config, o);
        for (const t of layout.tensors) f32.set(from.get(t.name)!, (model.params >> 2) + t.offset);
      }
      sampler = new BatchSampler(trainStream, shape.batch, shape.seqLen, o.seed, answers);
    } else {
      f32.set(resume.params, model.params >> 2);
      f32.set(resume.m, model.m >> 2);
      f32.set(resume.v, model.v >> 2);
      ({ step, tokensSeen } = resume.state);
      elapsedBefore = resume.state.elapsedSeconds;
      sampler = new BatchSampler(trainStream, shape.batch, shape.seqLen, resume.state.samplerState, answers);
    }
    const tokensPerStep = shape.batch * shape.seqLen;
    const steps = shape.steps;
    const warmup = Math.max(1, Math.round(o.warmup * steps));
    const lrPeak = o.lr ?? preset.lr;
    hooks.onStart?.({
      steps,
      startStep: step,
      parameters: layout.tensors.reduce((n, t) => n + t.size, 0),
      config,
      trainTokens: trainStream.length,
    });

    const tokens = new Int32Array(tokensPerStep);
    const targets = new Int32Array(tokensPerStep);
    const start = performance.now();
    const startStep = step;
    const elapsed = () => elapsedBefore + (performance.now() - start) / 1000;
    const checkpoint = () =>
      saveCheckpoint(
        runDir,
        layout,
        {
          state: {
            version: CHECKPOINT_VERSION,
            step,
            tokensSeen,
            samplerState: sampler.state,
            elapsedSeconds: elapsed(),
            config,
            options: { ...o } as Record<string, unknown>,
            streamDigest: digest,
          } satisfies TrainState,
          params: f32.slice(model.params >> 2, (model.params >> 2) + layout.total),
          m: f32.slice(model.m >> 2, (model.m >> 2) + layout.total),
          v: f32.slice(model.v >> 2, (model.v >> 2) + layout.total),
        },
        tokenizerFiles,
      );
    const evaluate = () => {
      let sum = 0;
      for (const b of validation) {
        arena.i32.set(b.tokens, model.tokens >> 2);
        arena.i32.set(b.targets, model.targets >> 2);
        sum += model.forward();
      }
      return sum / validation.length;
    };
    /** Retrieval on held-out documents, one per window (retrieval-eval.ts); null if none fits the window. */
    const evaluateRetrieval = (): RetrievalScore | null => {
      if (retrieval.length === 0) return null;
      const scorer = new RetrievalScorer();
      const { batch: B, seqLen: T } = shape;
      const V = config.vocabSize;
      for (let i = 0; i < retrieval.length; i += B) {
        const windows = retrieval.slice(i, i + B);
        // A short last batch is filled with its first window again, not scored.
        for (let s = 0; s < B; s++) arena.i32.set((windows[s] ?? windows[0]).tokens, (model.tokens >> 2) + s * T);
        model.forward(false);
        const logits = model.logitsView();
        windows.forEach((w, s) => scorer.add(w, logits.subarray(s * T * V, (s + 1) * T * V), V));
      }
      return scorer.result();
    };

    let lastLoss = NaN;
    let valLoss: number | null = null;
    while (step < steps) {
      sampler.next(tokens, targets);
      arena.i32.set(tokens, model.tokens >> 2);
      arena.i32.set(targets, model.targets >> 2);
      model.zeroGrads();
      lastLoss = model.forward();
      model.backward();
      const lr = learningRate(step, lrPeak, warmup, steps);
      const gradNorm = optimizer.step(step + 1, lr);
      step++;
      tokensSeen += tokensPerStep;
      const info: StepInfo = {
        step,
        steps,
        loss: lastLoss,
        lr,
        gradNorm,
        tokensSeen,
        tokensPerSecond: ((step - startStep) * tokensPerStep) / ((performance.now() - start) / 1000),
        elapsedSeconds: elapsed(),
      };
      hooks.onStep?.(info);
      const entry: Record<string, unknown> = {
        step,
        loss: lastLoss,
        lr,
        gradNorm,
        tokensSeen,
        tokensPerSecond: info.tokensPerSecond,
        elapsedSeconds: info.elapsedSeconds,
      };
      if (step % o.evalEvery === 0 || step === steps) {
        valLoss = evaluate();
        entry.valLoss = valLoss;
        const scored = evaluateRetrieval();
        if (scored !== null)
          Object.assign(entry, {
            recalled: scored.recalled,
            asked: scored.asked,
            copyLoss: [scored.firstCopyLoss, scored.secondCopyLoss],
            midCopyLoss: [scored.midFirstCopyLoss, scored.midSecondCopyLoss],
          });
        hooks.onEval?.({ step, valLoss, retrieval: scored });
      }
      appendLog(runDir, entry);
      // Let signal handlers (Ctrl-C) and timers run between steps.
      await new Promise<void>((resolve) => setImmediate(resolve));
      const stopping = hooks.stop?.() ?? false;
      if (step % o.checkpointEvery === 0 || step === steps || stopping) checkpoint();
      if (stopping) break;
    }
    return { step, steps, finished: step >= steps, lastLoss, valLoss };
  } finally {
    par.dispose();
  }
}

function corpus(o: TrainOptions): string[] {
  const docs = wordnetTrain();
  return o.corpusDocuments === undefined ? docs : docs.slice(0, o.corpusDocuments);
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
