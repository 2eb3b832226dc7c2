/**
 * `kvslim demo`: the shipped default model (models/kvslim-tiny, H64-MQA-CLA2) on long-context retrieval
 * prompts it has never seen (built from the WordNet validation half), answered with dense attention and
 * with SparQ side by side, and, when it is present, the same with its non-CLA twin (models/kvslim-tiny-mqa,
 * twice the KV cache): the answers, tokens/s, KV bytes stored per token and KV bytes read per decode step.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Command } from "commander";
import type { AttentionSpec } from "../attention/method.js";
import { UsageError, formatBytes } from "../errors.js";
import { packageRoot } from "../kernels/wasm.js";
import { prefixMatch } from "../eval/metrics.js";
import { attentionName } from "../model/config.js";
import { loadModel, type Model } from "../model/model.js";
import { Rng } from "../model/sampler.js";
import { answerStart, keyValueDocument, needleDocument, type RetrievalDocument } from "../train/data/retrieval.js";
import { wordnetValidation } from "../train/data/wordnet.js";
import { floatOption, intOption, pathOption, threadsOption } from "./options.js";

const DEFAULT_MODEL = "kvslim-tiny";
const TWIN_MODEL = "kvslim-tiny-mqa";
/** SparQ fetches at least this many positions: k = S/2c alone would be a handful at the demo's ~340 tokens. */
const SPARQ_MIN_K = 32;
/** Tokens generated for an answer (a four-digit code and what follows it). */
const ANSWER_TOKENS = 6;
/**
 * Bounds on the prompts, which are all built (and tokenized) before the first one runs: far beyond what a demo
 * needs (the shipped models read 512 tokens, about 1,100 characters), low enough that building them cannot exhaust
 * the heap, and that tokenizing one stays below what the tokenizer handles in one call (about 10^5 tokens).
 */
const MAX_PROMPTS = 10_000;
const MAX_CHARS = 50_000;

interface Row {
  model: string;
  method: string;
  correct: number;
  total: number;
  tokensPerSecond: number;
  kvPerToken: number; // stored, at the cache's dtype
  readPerStep: number; // KV bytes read + written per decode step
  denseReadPerStep: number;
  answers: string[];
}

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("the default model on long-context retrieval prompts: dense vs SparQ, CLA vs its twin")
    .option("-m, --model <dir>", "model directory (default: the shipped models/kvslim-tiny)", pathOption("--model"))
    .option(
      "--prompts <n>",
      `retrieval prompts to run (at most ${MAX_PROMPTS})`,
      intOption("--prompts", 1, MAX_PROMPTS),
      4,
    )
    .option(
      "--chars <n>",
      `prompt length in characters (at most ${MAX_CHARS}; a prompt must fit the model's context, 2,048 tokens for the shipped models)`,
      intOption("--chars", 200, MAX_CHARS),
      1100,
    )
    .option(
      "--compression <c>",
      `SparQ's target: each decode step reads 1/c of the KV (r = Hd/c, k = S/2c, at least ${SPARQ_MIN_K} positions)`,
      floatOption("--compression", { min: 1 }),
      4,
    )
    .option(...threadsOption)
    .action(
      async (flags: { model?: string; prompts: number; chars: number; compression: number; threads?: number }) => {
        const models = path.join(packageRoot(), "models");
        const main = flags.model ?? path.join(models, DEFAULT_MODEL);
        if (!fs.existsSync(path.join(main, "config.json"))) {
          const given = flags.model === undefined ? "" : "--model: ";
          throw new UsageError(
            `${given}no model at ${main} (expected config.json and model.safetensors there); train one with kvslim train, or pass -m DIR`,
          );
        }
        const twin =
          flags.model === undefined && fs.existsSync(path.join(models, TWIN_MODEL, "config.json"))
            ? path.join(models, TWIN_MODEL)
            : null;
        const prompts = retrievalPrompts(flags.prompts, flags.chars);
        const methods: AttentionSpec[] = [
          { method: "dense" },
          { method: "sparq", compression: flags.compression, minK: SPARQ_MIN_K },
        ];
        const rows: Row[] = [];
        for (const dir of twin ? [main, twin] : [main]) {
          // The cache pool is sized for SparQ's layout (K twice), which also holds a dense cache.
          const model = await loadModel(dir, { threads: flags.threads, kvDtype: "bf16", attention: methods[1] });
          for (const note of model.source.notes) process.stderr.write(`note: ${note}\n`);
          try {
            checkPromptsFit(model, path.basename(dir), prompts, flags.chars);
            for (const spec of methods) rows.push(await run(model, path.basename(dir), spec, prompts));
          } finally {
            model.dispose();
          }
        }
        print(rows, prompts);
        if (twin !== null) {
          // Rows are model by model, method by method: [main dense, main SparQ, twin dense, twin SparQ].
          const [cla, claSparq, plain] = [rows[0], rows[1], rows[methods.length]];
          process.stdout.write(
            `KV cache per token: ${cla.model} ${formatBytes(cla.kvPerToken)}, ${plain.model} ${formatBytes(plain.kvPerToken)}` +
              ` (CLA keeps 1/${(plain.kvPerToken / cla.kvPerToken).toFixed(1)}); with SparQ each decode step reads 1/${(claSparq.denseReadPerStep / claSparq.readPerStep).toFixed(1)} of that\n`,
          );
        }
        if (twin === null && flags.model === undefined)
          process.stdout.write(`(the non-CLA twin ${TWIN_MODEL} is not in models/ yet: no CLA comparison)\n`);
      },
    );
}

/** A UsageError naming --chars if the longest prompt and its answer do not fit the model's context. */
function checkPromptsFit(model: Model, name: string, prompts: RetrievalDocument[], chars: number): void {
  const longest = Math.max(...prompts.map((doc) => model.tokenizer.encode(doc.text).length));
  if (longest + ANSWER_TOKENS <= model.contextSize) return;
  const fits = Math.floor(((model.contextSize - ANSWER_TOKENS) / longest) * chars);
  throw new UsageError(
    `--chars ${chars} makes prompts of up to ${longest} tokens, and with the ${ANSWER_TOKENS} to generate they exceed the ${model.contextSize}-token context of ` +
      `${name}; use --chars ${fits} or less (the prompts grow with it)`,
  );
}

/** Key–value and needle documents from the validation half, cut before the answer. */
function retrievalPrompts(n: number, chars: number): RetrievalDocument[] {
  const rng = new Rng(2024);
  const filler = wordnetValidation();
  return Array.from({ length: n }, (_, i) => {
    const doc = (i % 2 === 0 ? keyValueDocument : needleDocument)(rng, filler, chars);
    // The text ends with "A: the code of the blue door is 4821": the prompt stops before " 4821", which the model should say.
    return { ...doc, text: doc.text.slice(0, answerStart(doc)) };
  });
}

async function run(model: Model, name: string, attention: AttentionSpec, prompts: RetrievalDocument[]): Promise<Row> {
  const row: Row = {
    model: name,
    method: attention.method,
    correct: 0,
    total: prompts.length,
    tokensPerSecond: 0,
    kvPerToken: 0,
    readPerStep: 0,
    denseReadPerStep: 0,
    answers: [],
  };
  let seconds = 0;
  let generated = 0;
  for (const doc of prompts) {
    const session = model.createSession({ attention });
    try {
      const iterator = session.generate(doc.text, { maxTokens: ANSWER_TOKENS, temperature: 0, stop: ["\n"] });
      let text = "";
      let result = await iterator.next();
      while (!result.done) {
        text += result.value.text;
        result = await iterator.next();
      }
      const s = result.value;
      row.answers.push(text.trim().split(/\s+/)[0] ?? "");
      // kvslim eval's needle and qa scoring: the normalised answer opens the output, as whole words.
      row.correct += prefixMatch(text, [doc.answer]);
      seconds += s.generateSeconds;
      generated += s.generatedTokens;
      row.kvPerToken = s.kvBytesInUse / session.tokens.length;
      row.readPerStep += s.kvTraffic.bytesPerStep / prompts.length;
      row.denseReadPerStep += s.kvTraffic.denseBytesPerStep / prompts.length;
    } finally {
      session.dispose();
    }
  }
  row.tokensPerSecond = generated / seconds;
  row.kvPerToken = Math.round(row.kvPerToken);
  row.model = `${name} (${attentionName(model.config)})`;
  return row;
}

function print(rows: Row[], prompts: RetrievalDocument[]): void {
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(
    `${prompts.length} retrieval prompts (${prompts.map((p) => p.kind).join(", ")}), answers: ${prompts.map((p) => p.answer).join(", ")}`,
  );
  out(
    "model                              attention  correct  tok/s  KV stored/token  KV read/step (vs dense)   answers",
  );
  for (const r of rows) {
    const ratio = r.denseReadPerStep > 0 ? ` (1/${(r.denseReadPerStep / r.readPerStep).toFixed(1)})` : "";
    out(
      `${r.model.padEnd(34)} ${r.method.padEnd(9)} ${`${r.correct}/${r.total}`.padStart(7)} ${r.tokensPerSecond.toFixed(0).padStart(6)} ` +
        `${formatBytes(r.kvPerToken).padStart(16)} ${`${formatBytes(r.readPerStep)}${ratio}`.padStart(24)}   ${r.answers.join(" ")}`,
    );
  }
}
