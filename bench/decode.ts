/**
 * Whole-model speed, kvslim vs llama.cpp (node-llama-cpp, CPU) on the same GGUF file and thread count,
 * both measured in this run: prefill tokens/s and decode tokens/s at a given context.
 *
 *   npm run bench                       # reference shape (97M, llama MHA), f32 and q8_0, contexts 512 and 8192
 *   npm run bench -- --dtypes q8_0 --contexts 512 --decode 32
 *
 * Models are written once to bench/.models/ (random weights; speed does not depend on the values).
 * The decode context is filled by a real prefill on both sides, then `decode` tokens are generated
 * greedily and timed. Prints a table and the ratios kvslim / llama.cpp.
 */
import fs from "node:fs";
import path from "node:path";
import { getLlama, LlamaLogLevel, type Token } from "node-llama-cpp";
import type { DType } from "../src/memory/dtype.js";
import { loadModel } from "../src/model/model.js";
import { PRESETS } from "../src/model/presets.js";
import { randomWeights, syntheticVocab, writeGgufModel } from "../src/model/synthetic.js";

interface Args {
  dtypes: DType[];
  contexts: number[];
  decode: number;
  prefill: number;
  threads: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { dtypes: ["f32", "q8_0"], contexts: [512, 8192], decode: 32, prefill: 512, threads: 1 };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === "--dtypes") args.dtypes = value.split(",") as DType[];
    else if (flag === "--contexts") args.contexts = value.split(",").map(Number);
    else if (flag === "--decode") args.decode = Number(value);
    else if (flag === "--prefill") args.prefill = Number(value);
    else if (flag === "--threads") args.threads = Number(value);
    else throw new Error(`unknown flag ${flag}; flags: --dtypes --contexts --decode --prefill --threads`);
  }
  return args;
}

function modelFile(dtype: DType): string {
  const dir = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "..", "bench", ".models");
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `reference-${dtype}.gguf`);
  if (!fs.existsSync(file)) {
    const config = PRESETS.reference();
    process.stderr.write(`writing ${file} …\n`);
    writeGgufModel(file, config, randomWeights(config, { seed: 1 }), syntheticVocab(config.vocabSize, 1), dtype);
  }
  return file;
}

function tokens(n: number, V: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7919 + 13) % (V - 2));
}

interface Row {
  engine: string;
  dtype: DType;
  kv: string;
  context: number;
  prefillTps: number;
  decodeTps: number;
}

async function benchKvslim(file: string, dtype: DType, a: Args, context: number): Promise<Row> {
  const model = await loadModel(file, { contextSize: context + a.decode });
  const V = model.config.vocabSize;
  const session = model.createSession();
  const prompt = tokens(context, V);
  // Prefill speed: the first `prefill` tokens; then fill the rest of the context.
  let t = performance.now();
  session.evaluate(prompt.slice(0, Math.min(a.prefill, context)));
  const prefillTps = Math.min(a.prefill, context) / ((performance.now() - t) / 1000);
  if (context > a.prefill) session.evaluate(prompt.slice(a.prefill));
  let next = 1;
  t = performance.now();
  for (let i = 0; i < a.decode; i++) {
    const logits = session.evaluate([next]);
    next = argmax(logits);
  }
  const decodeTps = a.decode / ((performance.now() - t) / 1000);
  session.dispose();
  model.dispose();
  return { engine: "kvslim", dtype, kv: "f32", context, prefillTps, decodeTps };
}

async function benchLlamaCpp(file: string, dtype: DType, a: Args, context: number, kv: "F16" | "F32"): Promise<Row> {
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const ctx = await model.createContext({
    contextSize: context + a.decode + 16,
    threads: a.threads,
    batchSize: 512,
    flashAttention: false,
    experimentalKvCacheKeyType: kv,
    experimentalKvCacheValueType: kv,
  });
  const seq = ctx.getSequence();
  const V = PRESETS.reference().vocabSize;
  const prompt = tokens(context, V) as Token[];
  let t = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, Math.min(a.prefill, context)));
  const prefillTps = Math.min(a.prefill, context) / ((performance.now() - t) / 1000);
  if (context > a.prefill) await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(a.prefill));
  let count = 0;
  t = performance.now();
  for await (const _ of seq.evaluate([1 as Token], { temperature: 0 })) {
    if (++count >= a.decode) break;
  }
  const decodeTps = count / ((performance.now() - t) / 1000);
  await ctx.dispose();
  await model.dispose();
  return { engine: "llama.cpp", dtype, kv: kv.toLowerCase(), context, prefillTps, decodeTps };
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const rows: Row[] = [];
  console.log(`reference model: llama, d_model 768, 12 layers, 12 heads (MHA), FFN 2048, vocab 8192; threads ${a.threads}`);
  console.log(`engine     dtype  KV   context  prefill tok/s  decode tok/s`);
  const print = (r: Row) =>
    console.log(`${r.engine.padEnd(10)} ${r.dtype.padEnd(6)} ${r.kv.padEnd(4)} ${String(r.context).padStart(7)}  ${r.prefillTps.toFixed(1).padStart(13)}  ${r.decodeTps.toFixed(1).padStart(12)}`);
  for (const dtype of a.dtypes) {
    const file = modelFile(dtype);
    for (const context of a.contexts) {
      const ours = await benchKvslim(file, dtype, a, context);
      print(ours);
      const ref16 = await benchLlamaCpp(file, dtype, a, context, "F16");
      print(ref16);
      const ref32 = await benchLlamaCpp(file, dtype, a, context, "F32");
      print(ref32);
      rows.push(ours, ref16, ref32);
      console.log(
        `  ratio kvslim / llama.cpp: prefill ${(ours.prefillTps / ref16.prefillTps).toFixed(2)}×, ` +
          `decode ${(ours.decodeTps / ref16.decodeTps).toFixed(2)}× vs f16 KV, ${(ours.decodeTps / ref32.decodeTps).toFixed(2)}× vs f32 KV`,
      );
    }
  }
}

await main();
