/**
 * Whole-model speed, kvslim vs llama.cpp (node-llama-cpp, CPU) on the same GGUF file and thread count,
 * both measured in this run: prefill tokens/s and decode tokens/s at a given context.
 *
 *   npm run bench                       # reference shape (97M, llama MHA), f32 and q8_0, contexts 512 and 8192,
 *                                       # at 1 thread and at the machine's cores (--threads 1,2)
 *   npm run bench -- --dtypes q8_0 --contexts 512 --decode 32
 *   npm run bench -- --dtypes f32 --contexts 8192,32768 --kv-dtype bf16 --attention sparq --compression 8 --llama-kv f16
 *   npm run bench -- --dtypes f32 --contexts 32768 --engines llama.cpp --llama-kv f16 --llama-flash on
 *       # one side only; llama.cpp's flash attention (off by default here, as node-llama-cpp's default)
 *       # avoids its (512 × S) score matrices, without which a 32k prefill takes hours on one thread
 *
 * With --attention, kvslim prefills once (a cache laid out for the method), decodes `decode` tokens with
 * dense attention, switches the session to the method and decodes `decode` more: both rows share the
 * prefill and differ only in the attention of the decode steps.
 * Models are written once to bench/.models/ (random weights; speed does not depend on the values).
 * The decode context is filled by a real prefill on both sides, then `decode` tokens are generated
 * greedily and timed. Prints a table and the ratios kvslim / llama.cpp.
 */
import { availableParallelism } from "node:os";
import { getLlama, LlamaLogLevel, type Token } from "node-llama-cpp";
import type { AttentionSpec } from "../src/attention/method.js";
import { KV_DTYPES, type KvDType } from "../src/kvcache/cache.js";
import type { FileType } from "../src/model/file-types.js";
import { loadModel } from "../src/model/model.js";
import { PRESETS } from "../src/model/presets.js";
import { referenceModelFile } from "./models.js";
import { chooseKernelBuild, describeKernelBuild } from "../src/kernels/wasm.js";
import { openModelSource } from "../src/model/source.js";
import { attentionName } from "../src/model/config.js";

/** llama.cpp's KV cache types (a quantised V runs with its flash attention, which it requires). */
const LLAMA_KV = ["F16", "F32", "Q8_0", "Q4_0"] as const;
type LlamaKv = (typeof LLAMA_KV)[number];

interface Args {
  dtypes: FileType[];
  contexts: number[];
  decode: number;
  prefill: number;
  threads: number[];
  kvDtype: KvDType;
  attention: AttentionSpec | null;
  llamaKv: LlamaKv[];
  engines: ("kvslim" | "llama.cpp")[];
  llamaFlash: boolean;
  /** A model file or directory to run instead of the reference model (kvslim only). */
  model: string | null;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    dtypes: ["f32", "q8_0"],
    contexts: [512, 8192],
    decode: 32,
    prefill: 512,
    threads: [...new Set([1, availableParallelism()])],
    kvDtype: "f32",
    attention: null,
    llamaKv: ["F16", "F32"],
    engines: ["kvslim", "llama.cpp"],
    llamaFlash: false,
    model: null,
  };
  let method: string | null = null;
  let compression = 8;
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === "--dtypes") args.dtypes = value.split(",") as FileType[];
    else if (flag === "--kv-dtype") {
      if (!(KV_DTYPES as readonly string[]).includes(value))
        throw new Error(`--kv-dtype expects one of ${KV_DTYPES.join(", ")}, got ${value}`);
      args.kvDtype = value as KvDType;
    } else if (flag === "--attention") method = value;
    else if (flag === "--compression") compression = Number(value);
    else if (flag === "--llama-kv") {
      args.llamaKv = value.toUpperCase().split(",") as LlamaKv[];
      const bad = args.llamaKv.find((kv) => !LLAMA_KV.includes(kv));
      if (bad !== undefined) throw new Error(`--llama-kv expects some of ${LLAMA_KV.join(",")}, got ${bad}`);
    } else if (flag === "--contexts") args.contexts = value.split(",").map(Number);
    else if (flag === "--decode") args.decode = Number(value);
    else if (flag === "--prefill") args.prefill = Number(value);
    else if (flag === "--threads") args.threads = value.split(",").map(Number);
    else if (flag === "--engines") args.engines = value.split(",") as Args["engines"];
    else if (flag === "--llama-flash") args.llamaFlash = value === "on";
    else if (flag === "--model") args.model = value;
    else
      throw new Error(
        `unknown flag ${flag}; flags: --dtypes --contexts --decode --prefill --threads --kv-dtype --attention --compression --llama-kv --engines --llama-flash on|off --model PATH`,
      );
  }
  if (method === "sparq") args.attention = { method, compression };
  else if (method === "h2o" || method === "streaming") args.attention = { method, compression };
  else if (method !== null && method !== "dense") throw new Error(`--attention: unknown method ${method}`);
  return args;
}

function tokens(n: number, V: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7919 + 13) % (V - 2));
}

interface Row {
  engine: string;
  threads: number;
  dtype: string;
  kv: string;
  context: number;
  prefillTps: number;
  decodeTps: number;
  note?: string;
}

async function benchKvslim(file: string, dtype: string, a: Args, context: number, threads: number): Promise<Row[]> {
  const evicting = a.attention !== null && a.attention.method !== "sparq";
  const model = await loadModel(file, {
    threads,
    contextSize: context + 2 * a.decode,
    kvDtype: a.kvDtype,
    attention: evicting ? undefined : (a.attention ?? undefined),
  });
  const V = model.config.vocabSize;
  const rows: Row[] = [];
  const prompt = tokens(context, V);
  const decode = (session: ReturnType<typeof model.createSession>) => {
    let next = 1;
    const t = performance.now();
    for (let i = 0; i < a.decode; i++) next = argmax(session.evaluate([next]));
    return a.decode / ((performance.now() - t) / 1000);
  };
  // Prefill speed: the first `prefill` tokens; then fill the rest of the context.
  const fill = (session: ReturnType<typeof model.createSession>) => {
    const t = performance.now();
    session.evaluate(prompt.slice(0, Math.min(a.prefill, context)));
    const tps = Math.min(a.prefill, context) / ((performance.now() - t) / 1000);
    if (context > a.prefill) session.evaluate(prompt.slice(a.prefill));
    return tps;
  };
  const session = model.createSession();
  const prefillTps = fill(session);
  if (a.attention !== null && !evicting) session.setAttention({ method: "dense" });
  const stored = (s: ReturnType<typeof model.createSession>) =>
    `KV stored ${Math.round(s.cache.usedBytes / s.cache.length)} B/token`;
  rows.push({
    engine: "kvslim",
    threads,
    dtype,
    kv: a.kvDtype,
    context,
    prefillTps,
    decodeTps: decode(session),
    note: stored(session),
  });
  if (a.attention !== null && !evicting) {
    session.setAttention(a.attention);
    const before = { ...session.cache.traffic }; // the dense steps above are not SparQ's
    const decodeTps = decode(session);
    const ratio = session.kvTraffic(before).ratio;
    rows.push({
      engine: `kvslim+${a.attention.method}`,
      threads,
      dtype,
      kv: a.kvDtype,
      context,
      prefillTps,
      decodeTps,
      note: `${stored(session)}, KV transfer 1/${(1 / ratio).toFixed(1)} of dense`,
    });
  }
  session.dispose();
  if (evicting) {
    const other = model.createSession({ attention: a.attention! });
    const tps = fill(other);
    const decodeTps = decode(other);
    rows.push({
      engine: `kvslim+${a.attention!.method}`,
      threads,
      dtype,
      kv: a.kvDtype,
      context,
      prefillTps: tps,
      decodeTps,
      note: `${stored(other)}, KV transfer 1/${(1 / other.kvTraffic().ratio).toFixed(1)} of dense`,
    });
    other.dispose();
  }
  model.dispose();
  return rows;
}

async function benchLlamaCpp(
  file: string,
  dtype: FileType,
  a: Args,
  context: number,
  kv: LlamaKv,
  threads: number,
): Promise<Row> {
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const ctx = await model.createContext({
    contextSize: context + a.decode + 16,
    threads,
    batchSize: 512,
    flashAttention: a.llamaFlash || kv.startsWith("Q"),
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
  return {
    engine: a.llamaFlash || kv.startsWith("Q") ? "llama.cpp (FA)" : "llama.cpp",
    threads,
    dtype,
    kv: kv.toLowerCase(),
    context,
    prefillTps,
    decodeTps,
  };
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const rows: Row[] = [];
  if (a.model !== null) {
    const c = openModelSource(a.model).config;
    console.log(
      `model ${a.model}: ${attentionName(c)}, d_model ${c.dModel}, ${c.nLayers} layers, ${c.nHeads} heads × ${c.headDim}, ${c.nKvHeads} KV heads; kvslim only; threads ${a.threads.join(", ")}`,
    );
    a.engines = ["kvslim"];
  } else
    console.log(
      `reference model: llama, d_model 768, 12 layers, 12 heads (MHA), FFN 2048, vocab 8192; threads ${a.threads.join(", ")}`,
    );
  console.log(`kernels: ${describeKernelBuild(chooseKernelBuild())} (KVSLIM_KERNELS=portable|relaxed to choose)`);
  console.log(`engine          thr dtype  KV   context  prefill tok/s  decode tok/s`);
  const print = (r: Row) =>
    console.log(
      `${r.engine.padEnd(15)} ${String(r.threads).padStart(3)} ${r.dtype.padEnd(6)} ${r.kv.padEnd(4)} ${String(r.context).padStart(7)}  ${r.prefillTps.toFixed(1).padStart(13)}  ${r.decodeTps.toFixed(1).padStart(12)}${r.note ? `  ${r.note}` : ""}`,
    );
  for (const dtype of a.model !== null ? ["model"] : a.dtypes) {
    const file = a.model ?? referenceModelFile(dtype as FileType);
    for (const context of a.contexts) {
      for (const threads of a.threads) {
        const ours = a.engines.includes("kvslim") ? await benchKvslim(file, dtype, a, context, threads) : [];
        ours.forEach(print);
        const refs: Row[] = [];
        for (const kv of a.engines.includes("llama.cpp") ? a.llamaKv : []) {
          const ref = await benchLlamaCpp(file, dtype as FileType, a, context, kv, threads);
          print(ref);
          refs.push(ref);
        }
        rows.push(...ours, ...refs);
        for (const mine of refs.length > 0 ? ours : []) {
          const vs = refs.map((r) => `${(mine.decodeTps / r.decodeTps).toFixed(2)}× vs ${r.kv} KV`).join(", ");
          console.log(
            `  ratio ${mine.engine} / llama.cpp at ${threads} thread(s): prefill ${(mine.prefillTps / refs[0].prefillTps).toFixed(2)}×, decode ${vs}`,
          );
        }
      }
      // What more threads gave each engine, same dtype and context.
      const one = rows.filter((r) => r.dtype === dtype && r.context === context && r.threads === 1);
      for (const r of rows.filter((r) => r.dtype === dtype && r.context === context && r.threads > 1)) {
        const base = one.find((o) => o.engine === r.engine && o.kv === r.kv);
        if (base)
          console.log(
            `  scaling ${r.engine} (${r.kv} KV) ${r.threads} threads vs 1: prefill ${(r.prefillTps / base.prefillTps).toFixed(2)}×, decode ${(r.decodeTps / base.decodeTps).toFixed(2)}×`,
          );
      }
    }
  }
}

await main();
