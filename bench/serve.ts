/**
 * `npm run bench -- serve`: the server's batched decoding, measured.
 *
 * 1. Aggregate generated tokens/s with 1, 4 and 8 concurrent streams on the reference model (97M, llama MHA,
 *    random weights), through `kvslim serve`'s HTTP API (in this process, streamed), against llama.cpp
 *    (node-llama-cpp) with the same number of sequences in one context, which it decodes as one batch. Same
 *    threads, same prompts (P tokens each), the same number of tokens generated per stream (greedy). Two
 *    rates: end to end (all streams' tokens over the wall time from the first request to the last token,
 *    prefill included) and decoding (the tokens that arrived while every stream was decoding, from the last
 *    stream's first token to the first stream's last, over that time: the batched steps alone).
 * 2. Concurrent 2,048-token conversations that fit in the same KV memory, for the shipped CLA model and its
 *    twin with f32 and bf16 caches: counted from the cache sizes, then checked by filling the pool with
 *    sessions until it refuses one.
 *
 *   npm run bench -- serve [--streams 1,4,8] [--threads 1] [--prompt 32] [--tokens 64] [--dtype f32] [--memory 256MiB]
 */
import path from "node:path";
import { getLlama, LlamaLogLevel, type Token } from "node-llama-cpp";
import { OutOfMemoryError } from "../src/errors.js";
import type { KvDType } from "../src/kvcache/cache.js";
import type { FileType } from "../src/model/file-types.js";
import { loadModel } from "../src/model/model.js";
import { PRESETS } from "../src/model/presets.js";
import { referenceModelFile } from "./models.js";
import { KvslimServer } from "../src/server/server.js";
import { chooseKernelBuild, describeKernelBuild } from "../src/kernels/wasm.js";

interface Args {
  streams: number[];
  threads: number;
  prompt: number;
  tokens: number;
  dtype: FileType;
  memory: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { streams: [1, 4, 8], threads: 1, prompt: 32, tokens: 64, dtype: "f32", memory: 256 << 20 };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === "--streams") a.streams = value.split(",").map(Number);
    else if (flag === "--threads") a.threads = Number(value);
    else if (flag === "--prompt") a.prompt = Number(value);
    else if (flag === "--tokens") a.tokens = Number(value);
    else if (flag === "--dtype") a.dtype = value as FileType;
    else if (flag === "--memory") a.memory = Number(/^(\d+)MiB$/.exec(value)?.[1] ?? NaN) * 2 ** 20;
    else throw new Error(`unknown flag ${flag}; flags: --streams --threads --prompt --tokens --dtype --memory NMiB`);
  }
  return a;
}

/** The prompt of stream i: P token ids (distinct per stream, no specials). */
function prompt(i: number, P: number, V: number): number[] {
  return Array.from({ length: P }, (_, j) => (i * 7919 + j * 104729 + 13) % (V - 2));
}

interface Rates {
  /** Generated tokens / wall seconds from the first request to the last token. */
  endToEnd: number;
  /** Tokens that arrived while all streams were decoding / that span in seconds. */
  decoding: number;
}

/** The two rates from each stream's token arrival times (ms), the requests sent at t0. */
function rates(t0: number, arrivals: number[][]): Rates {
  const tokens = arrivals.reduce((sum, times) => sum + times.length, 0);
  const end = Math.max(...arrivals.map((times) => times[times.length - 1]));
  const from = Math.max(...arrivals.map((times) => times[0]));
  const to = Math.min(...arrivals.map((times) => times[times.length - 1]));
  const inSpan = arrivals.reduce((sum, times) => sum + times.filter((t) => t > from && t <= to).length, 0);
  return { endToEnd: (tokens / (end - t0)) * 1000, decoding: to > from ? (inSpan / (to - from)) * 1000 : NaN };
}

/** kvslim: N streams through the HTTP API at once, each token's arrival timed. */
async function kvslimRate(file: string, a: Args, n: number): Promise<Rates> {
  const server = new KvslimServer({
    host: "127.0.0.1",
    port: 0,
    modelId: "reference",
    apiKeys: [],
    corsOrigin: null,
    maxBodyBytes: 1 << 20,
    maxTokens: a.tokens,
    parallel: n,
    queue: n,
    prefixCache: false,
    attention: { method: "dense" },
    kvDtype: "f32",
  });
  const address = await server.listen();
  const model = await loadModel(file, { threads: a.threads, contextSize: a.prompt + a.tokens + 1, sessions: n });
  server.ready(model);
  const V = model.config.vocabSize;
  const url = `http://127.0.0.1:${address.port}/v1/completions`;
  const run = async (i: number) => {
    const body = {
      model: "reference",
      prompt: prompt(i, a.prompt, V),
      max_tokens: a.tokens,
      temperature: 0,
      stream: true,
      logprobs: 0, // each chunk lists its tokens, so arrivals are counted per token
    };
    const res = await fetch(url, { method: "POST", body: JSON.stringify(body) });
    const times: number[] = [];
    const decoder = new TextDecoder();
    let buffered = "";
    let finished = false;
    for await (const bytes of res.body!) {
      const now = performance.now();
      buffered += decoder.decode(bytes as Uint8Array, { stream: true });
      let cut: number;
      while ((cut = buffered.indexOf("\n\n")) >= 0) {
        const event = buffered.slice(0, cut).replace(/^data: /, "");
        buffered = buffered.slice(cut + 2);
        if (event === "[DONE]") continue;
        const choice = (JSON.parse(event) as { choices: { logprobs?: { tokens: string[] }; finish_reason: string }[] })
          .choices[0];
        for (let k = 0; k < (choice?.logprobs?.tokens.length ?? 0); k++) times.push(now);
        if (choice?.finish_reason === "length") finished = true;
      }
    }
    if (!finished || times.length !== a.tokens)
      throw new Error(`stream ${i} did not run to its token limit: ${times.length} tokens`);
    return times;
  };
  // One warm-up stream, then the timed N.
  await run(0);
  const t = performance.now();
  const arrivals = await Promise.all(Array.from({ length: n }, (_, i) => run(i)));
  await server.close();
  model.dispose();
  return rates(t, arrivals);
}

/** llama.cpp: N sequences of one context decoded together (node-llama-cpp batches them). */
async function llamaRate(file: string, a: Args, n: number): Promise<Rates> {
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const ctx = await model.createContext({
    contextSize: n * (a.prompt + a.tokens + 8),
    sequences: n,
    threads: a.threads,
    batchSize: 512,
  });
  const V = PRESETS.reference().vocabSize;
  const run = async (i: number) => {
    const seq = ctx.getSequence();
    const times: number[] = [];
    for await (const _ of seq.evaluate(prompt(i, a.prompt, V) as Token[], { temperature: 0 })) {
      times.push(performance.now());
      if (times.length >= a.tokens) break;
    }
    seq.dispose();
    if (times.length !== a.tokens) throw new Error(`llama.cpp sequence ${i} stopped after ${times.length} tokens`);
    return times;
  };
  await run(0);
  const t = performance.now();
  const arrivals = await Promise.all(Array.from({ length: n }, (_, i) => run(i)));
  await ctx.dispose();
  await model.dispose();
  return rates(t, arrivals);
}

/** How many `positions`-token sessions the pool of `bytes` holds: counted from sizes, then by filling it. */
async function capacity(dir: string, kvDtype: KvDType, bytes: number, positions: number) {
  const model = await loadModel(dir, { threads: 1, cacheBytes: bytes, contextSize: positions });
  const sessions = [];
  try {
    for (;;) sessions.push(model.createSession({ contextSize: positions, kvDtype, attention: { method: "dense" } }));
  } catch (e) {
    if (!(e instanceof OutOfMemoryError)) throw e;
  }
  const perSession = sessions[0]?.cache.allocatedBytes ?? NaN;
  const filled = sessions.length;
  for (const s of sessions) s.dispose();
  model.dispose();
  return { perSession, counted: Math.floor(bytes / perSession), filled };
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const file = referenceModelFile(a.dtype);
  console.log(
    `reference model (97M, llama MHA, ${a.dtype}), ${a.threads} thread(s); each stream: ${a.prompt}-token prompt, ${a.tokens} tokens generated greedily`,
  );
  console.log(`kernels: ${describeKernelBuild(chooseKernelBuild())} (KVSLIM_KERNELS=portable|relaxed to choose)`);
  console.log("tokens/s, end to end (prefill included) | decoding (while every stream decodes)");
  console.log("streams  kvslim         llama.cpp      kvslim / llama.cpp  kvslim vs its 1 stream");
  let single: Rates | null = null;
  const pair = (x: number, y: number, digits: number, unit = "") =>
    `${x.toFixed(digits)}${unit} | ${y.toFixed(digits)}${unit}`;
  for (const n of a.streams) {
    const ours = await kvslimRate(file, a, n);
    const theirs = await llamaRate(file, a, n);
    if (n === 1 || single === null) single = ours;
    console.log(
      `${String(n).padStart(7)}  ${pair(ours.endToEnd, ours.decoding, 1).padEnd(13)}  ${pair(theirs.endToEnd, theirs.decoding, 1).padEnd(13)}  ` +
        `${pair(ours.endToEnd / theirs.endToEnd, ours.decoding / theirs.decoding, 2, "×").padEnd(18)}  ` +
        pair(ours.endToEnd / single.endToEnd, ours.decoding / single.decoding, 2, "×"),
    );
  }

  const models = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "..", "models");
  console.log(`\nconcurrent 2,048-token conversations in ${a.memory / 2 ** 20} MiB of KV memory (dense attention)`);
  console.log("model                          KV     per conversation  counted  filled");
  for (const [name, label] of [
    ["kvslim-tiny", "kvslim-tiny (MQA-CLA2)"],
    ["kvslim-tiny-mqa", "kvslim-tiny-mqa (MQA)"],
  ] as const) {
    for (const kv of ["f32", "bf16"] as const) {
      const c = await capacity(path.join(models, name), kv, a.memory, 2048);
      console.log(
        `${label.padEnd(30)} ${kv.padEnd(5)} ${`${(c.perSession / 2 ** 20).toFixed(2)} MiB`.padStart(17)}  ${String(c.counted).padStart(7)}  ${String(c.filled).padStart(6)}`,
      );
    }
  }
}

await main();
