/**
 * `kvslim bench attention`: one layer's decode attention step, per method, against dense in the same run,
 * and against the machine's memory bandwidth measured in the same run.
 *
 * A step is what the model does per layer at decode: store the new token's K/V, attend (method.decode),
 * advance, let the method evict. Caches are filled with random keys and values; queries are random.
 * SparQ's rows share one filled cache; each timed step is rewound after (cache.rewind), so every step
 * attends S rows; an evicting cache holds its budget of rows at every step.
 * Shapes: G = 8 KV heads; MHA has H = 8 query heads, GQA H = 32 (4 per KV head).
 * For each (S, Hd, shape, KV dtype): dense, then SparQ at compression c (r = Hd/c, k = S/2c), H2O and
 * streaming at budget S/c, for each c. Time = median over steps; bytes = what the cache counted as handed
 * to the kernels (KvCache.traffic); transfer = those bytes / dense's at the same S in the same run.
 * Bandwidth: memcpy of 256 MiB (STREAM-style: bytes read + bytes written per second) and a streaming read
 * (matvec over 256 MiB of f32).
 */
import type { Command } from "commander";
import { createAttention, layoutFor, type AttentionMethod, type AttentionSpec } from "../attention/index.js";
import { allocateAttentionScratch, attentionScratchSizes, type AttentionScratch } from "../attention/method.js";
import { UsageError, formatBytes } from "../errors.js";
import { parseFloatIn, parseInteger } from "./options.js";
import type { Kernels } from "../kernels/kernels.js";
import { chooseKernelBuild, describeKernelBuild, loadWasmKernels } from "../kernels/wasm.js";
import { KV_DTYPES, KvCache, type KvDType } from "../kvcache/cache.js";
import { Arena, type Ptr } from "../memory/arena.js";
import { Pool } from "../memory/pool.js";
import { Parallel } from "../threads/parallel.js";
import { MAX_WORKERS } from "../threads/pool.js";
import { availableParallelism } from "node:os";

interface Flags {
  contexts: string;
  headDims: string;
  shapes: string;
  kvDtypes: string;
  ratios: string;
  methods: string;
  seconds: string;
  threads: string;
  json?: boolean;
}

interface Config {
  S: number;
  Hd: number;
  shape: "mha" | "gqa";
  dtype: KvDType;
}

export interface AttentionBenchRow extends Config {
  threads: number;
  method: string;
  compression: number; // target c (1 for dense)
  microseconds: number; // median step time
  bytesPerStep: number; // read + written, counted by the cache
  transferRatio: number; // bytesPerStep / dense bytes per step
  gbPerSecond: number;
  fractionOfCopy: number;
  speedup: number; // dense time / this time, same thread count
}

const G = 8;
const BANDWIDTH_BYTES = 256 << 20;

/** A comma-separated list, each item parsed (and checked) by `parse` with the flag named. */
const list = <T>(value: string, parse: (item: string) => T): T[] => value.split(",").map((item) => parse(item.trim()));
const choices = (flag: string, allowed: readonly string[]) => (item: string) => {
  if (!allowed.includes(item))
    throw new UsageError(`${flag} expects a comma-separated list of ${allowed.join(", ")}, got "${item}"`);
  return item;
};
/** The largest head dimension: the benchmark's query and K/V input buffers hold 128 components per head. */
const MAX_HEAD_DIM = 128;

export function registerBenchAttention(bench: Command): void {
  bench
    .command("attention")
    .description("time one layer's decode attention per method vs dense and vs memory bandwidth (not a test)")
    .option("--contexts <list>", "cached positions S", "1024,4096,16384,65536")
    .option("--head-dims <list>", "head dimensions", "64,128")
    .option("--shapes <list>", "mha (8 query heads over 8 KV heads), gqa (32 over 8)", "mha,gqa")
    .option("--kv-dtypes <list>", `KV storage dtypes: some of ${KV_DTYPES.join(", ")}`, "f32,bf16")
    .option("--ratios <list>", "compression ratios c (transfer 1/c)", "2,4,8")
    .option("--methods <list>", "methods besides dense", "sparq,h2o,streaming")
    .option("--seconds <s>", "time budget per measurement", "0.3")
    .option("--threads <list>", "thread counts to run each measurement at", String(availableParallelism()))
    .option("--json", "print JSON rows instead of a table")
    .action(async (flags: Flags) => {
      const configs = configsFrom(flags);
      const ratios = list(flags.ratios, (item) => parseFloatIn(item, "--ratios", { min: 1, max: 1e6 }));
      const methods = list(flags.methods, choices("--methods", ["dense", "sparq", "h2o", "streaming"])).filter(
        (m) => m !== "dense",
      );
      const seconds = parseFloatIn(flags.seconds, "--seconds", { min: 0, minOpen: true, max: 3600 });
      const threads = list(flags.threads, (item) => parseInteger(item, "--threads", 1, MAX_WORKERS + 1));
      await runBench(configs, ratios, methods, seconds, threads, flags.json === true);
    });
}

function configsFrom(flags: Flags): Config[] {
  // Contexts up to 2^22 positions: far past what one 4 GiB memory holds at G = 8 (checked again when sized).
  const contexts = list(flags.contexts, (item) => parseInteger(item, "--contexts", 1, 1 << 22));
  const headDims = list(flags.headDims, (item) => parseInteger(item, "--head-dims", 1, MAX_HEAD_DIM));
  const shapes = list(flags.shapes, choices("--shapes", ["mha", "gqa"]));
  const dtypes = list(flags.kvDtypes, choices("--kv-dtypes", KV_DTYPES));
  const out: Config[] = [];
  for (const S of contexts)
    for (const Hd of headDims)
      for (const shape of shapes)
        for (const dtype of dtypes) out.push({ S, Hd, shape: shape as Config["shape"], dtype: dtype as KvDType });
  return out;
}

async function runBench(
  configs: Config[],
  ratios: number[],
  methods: string[],
  seconds: number,
  threadCounts: number[],
  json: boolean,
): Promise<void> {
  const maxSteps = 1000;
  // The pool holds SparQ's filled cache and, beside it, the largest evicting cache of the same config.
  const minRatio = Math.min(...ratios);
  const worst = Math.max(
    ...configs.map((c) => {
      const shape = { nSlots: 1, nKvHeads: G, headDim: c.Hd };
      const evicting = KvCache.bytesFor(
        shape,
        layoutFor({ method: "h2o" }, c.dtype, 1),
        Math.round(c.S / minRatio) + 2,
      );
      return (
        KvCache.bytesFor(shape, layoutFor({ method: "sparq", reallocation: true }, c.dtype, 1), c.S + 8) +
        evicting +
        (1 << 16)
      );
    }),
  );
  const maxThreads = Math.max(...threadCounts);
  const scratchMax =
    maxThreads *
    Math.max(
      ...configs.map((c) =>
        Object.values(attentionScratchSizes(32 / G, c.Hd, c.S + 8, 1)).reduce((a, b) => a + b + 128, 0),
      ),
    );
  const poolBytes = Math.max(worst + (1 << 20), 2 * BANDWIDTH_BYTES + (1 << 20));
  const largest = `--contexts ${Math.max(...configs.map((c) => c.S))} and --head-dims ${Math.max(...configs.map((c) => c.Hd))}`;
  const arena = new Arena(poolBytes + scratchMax + (4 << 20), `the attention benchmark at ${largest}`);
  const kernels = await loadWasmKernels(arena.memory);
  const pool = new Pool(arena.alloc(poolBytes), poolBytes);
  const io = {
    q: arena.alloc(4 * 32 * MAX_HEAD_DIM),
    out: arena.alloc(4 * 32 * MAX_HEAD_DIM),
    k: arena.alloc(4 * G * MAX_HEAD_DIM),
    v: arena.alloc(4 * G * MAX_HEAD_DIM),
  };
  const scratchBase = arena.alloc(scratchMax);
  const parallels = new Map<number, Parallel>();
  for (const t of threadCounts) parallels.set(t, await Parallel.create(kernels, arena.memory, "wasm", t));

  const bw = measureBandwidth(arena, kernels, pool);
  const rows: AttentionBenchRow[] = [];
  if (!json) {
    console.log(
      `memory bandwidth (same run): copy ${bw.copy.toFixed(1)} GB/s (read + write), streaming read ${bw.read.toFixed(1)} GB/s`,
    );
    console.log(`kernels: ${describeKernelBuild(chooseKernelBuild())}`);
    console.log(
      `G = ${G} KV heads; MHA: 8 query heads, GQA: 32; one layer, one decode step; median of ≥ 5 steps; speedup vs dense at the same threads`,
    );
    console.log("     S   Hd shape dtype thr  method     c    step µs   bytes/step  transfer   GB/s  %copy  speedup");
  }
  for (const c of configs)
    for (const threads of threadCounts) {
      const H = c.shape === "mha" ? G : 32;
      const scratches = carveScratch(scratchBase, H / G, c.Hd, c.S + 8, threads);
      const parallel = parallels.get(threads)!;
      const ctxFor = (cache: KvCache) => ({
        kernels,
        arena,
        cache,
        nHeads: H,
        nKvHeads: G,
        headDim: c.Hd,
        scale: Math.fround(1 / Math.sqrt(c.Hd)),
        contextSize: c.S + 8,
        parallel,
        scratches,
      });
      const random = xorshift(c.S * 131 + c.Hd);
      const fillIo = () => {
        fillGaussian(arena.f32, io.q >> 2, H * c.Hd, random);
        fillGaussian(arena.f32, io.k >> 2, G * c.Hd, random);
        fillGaussian(arena.f32, io.v >> 2, G * c.Hd, random);
      };
      const filled = (spec: AttentionSpec) => {
        const cache = new KvCache(
          arena,
          pool,
          kernels,
          { nSlots: 1, nKvHeads: G, headDim: c.Hd },
          layoutFor(spec, c.dtype, H / G),
          c.S + 8,
        );
        for (let t = 0; t < c.S; t++) {
          fillIo();
          cache.store(0, 0, io.k, io.v);
          cache.advance(1);
        }
        return cache;
      };
      const time = (method: AttentionMethod, cache: KvCache) => timeSteps(method, cache, io, fillIo, seconds, maxSteps);
      const denseCache = filled({ method: "dense" });
      const dense = time(createAttention(ctxFor(denseCache), { method: "dense" }), denseCache);
      denseCache.free();
      const record = (method: string, compression: number, r: { microseconds: number; bytesPerStep: number }) => {
        const row: AttentionBenchRow = {
          ...c,
          threads,
          method,
          compression,
          microseconds: r.microseconds,
          bytesPerStep: r.bytesPerStep,
          transferRatio: r.bytesPerStep / dense.bytesPerStep,
          gbPerSecond: r.bytesPerStep / r.microseconds / 1e3,
          fractionOfCopy: r.bytesPerStep / r.microseconds / 1e3 / bw.copy,
          speedup: dense.microseconds / r.microseconds,
        };
        rows.push(row);
        if (!json) printRow(row);
      };
      record("dense", 1, dense);
      const shared = methods.includes("sparq") ? filled({ method: "sparq", compression: ratios[0] }) : null;
      for (const ratio of ratios) {
        for (const m of methods) {
          if (m === "sparq") {
            record(
              "sparq",
              ratio,
              time(
                createAttention(ctxFor(shared!), { method: "sparq", compression: ratio, minK: 1, minR: 1 }),
                shared!,
              ),
            );
            continue;
          }
          const budget = Math.max(1, Math.round(c.S / ratio));
          const spec: AttentionSpec =
            m === "h2o" ? { method: "h2o", budget } : { method: "streaming", budget, sinks: Math.min(16, budget - 1) };
          const cache = new KvCache(
            arena,
            pool,
            kernels,
            { nSlots: 1, nKvHeads: G, headDim: c.Hd },
            layoutFor(spec, c.dtype, H / G),
            1,
          );
          const method = createAttention(ctxFor(cache), spec);
          // The cache as it stands after compaction: `budget` rows, then steady-state decode.
          method.beforePrefill(budget + 1); // room for the budget and the step's token: no resize after
          for (let t = 0; t < budget; t++) {
            fillIo();
            cache.store(0, t, io.k, io.v);
          }
          cache.advance(budget);
          method.afterPrefill();
          record(m, ratio, time(method, cache));
          cache.free();
        }
      }
      shared?.free();
    }
  for (const p of parallels.values()) p.dispose();
  if (json) console.log(JSON.stringify({ bandwidth: bw, rows }, null, 2));
  else summarize(rows, bw.copy);
}

/** `threads` sets of scratch buffers, carved from base. */
function carveScratch(base: Ptr, g: number, Hd: number, maxRows: number, threads: number): AttentionScratch[] {
  let at = base;
  const alloc = (bytes: number) => {
    const p = at;
    at += Math.ceil(bytes / 64) * 64 + 64;
    return p;
  };
  return Array.from({ length: threads }, () => allocateAttentionScratch(alloc, g, Hd, maxRows, 1));
}

/** Median step time and per-step bytes (as the cache counted them) over at least 5 steps, until `seconds` or maxSteps. */
function timeSteps(
  method: AttentionMethod,
  cache: KvCache,
  io: { q: Ptr; out: Ptr; k: Ptr; v: Ptr },
  fillIo: () => void,
  seconds: number,
  maxSteps: number,
) {
  const times: number[] = [];
  const step = () => {
    fillIo();
    const t0 = performance.now();
    cache.store(0, 0, io.k, io.v);
    method.decode(0, io.q, io.out);
    cache.advance(1);
    method.endStep(1);
    const elapsed = performance.now() - t0;
    // Every step attends the same rows: a growing cache forgets the step's token; an evicting one holds its budget.
    if (!cache.layout.positions) cache.rewind(1);
    return elapsed;
  };
  step();
  step(); // warm-up
  const t = cache.traffic;
  const before = { ...t };
  const start = performance.now();
  while (times.length < 5 || (performance.now() - start < seconds * 1000 && times.length < maxSteps - 2))
    times.push(step());
  times.sort((a, b) => a - b);
  return {
    microseconds: times[times.length >> 1] * 1000,
    bytesPerStep: (t.read + t.written - before.read - before.written) / (t.steps - before.steps),
  };
}

/** GB/s of a 256 MiB memcpy (read + write bytes) and of a streaming read (matvec over 256 MiB f32). */
function measureBandwidth(arena: Arena, kernels: Kernels, pool: Pool): { copy: number; read: number } {
  const src = pool.take(BANDWIDTH_BYTES, "bandwidth source");
  const dst = pool.take(BANDWIDTH_BYTES, "bandwidth destination");
  const random = xorshift(1);
  fillGaussian(arena.f32, src >> 2, BANDWIDTH_BYTES >> 2, random);
  const median = (f: () => void) => {
    const times: number[] = [];
    for (let i = 0; i < 7; i++) {
      const t0 = performance.now();
      f();
      times.push(performance.now() - t0);
    }
    return times.sort((a, b) => a - b)[3] / 1000;
  };
  const copy = (2 * BANDWIDTH_BYTES) / median(() => arena.u8.copyWithin(dst, src, src + BANDWIDTH_BYTES)) / 1e9;
  const n = 4096;
  const d = BANDWIDTH_BYTES / 4 / n;
  const read = BANDWIDTH_BYTES / median(() => kernels.matvecF32(dst, src, src, n, d)) / 1e9;
  pool.give(dst);
  pool.give(src);
  return { copy, read };
}

function printRow(r: AttentionBenchRow): void {
  const pad = (s: string | number, n: number) => String(s).padStart(n);
  console.log(
    `${pad(r.S, 6)} ${pad(r.Hd, 4)} ${pad(r.shape, 5)} ${pad(r.dtype, 5)} ${pad(r.threads, 3)}  ${r.method.padEnd(9)} ${pad(r.compression, 3)} ` +
      `${pad(r.microseconds.toFixed(1), 10)} ${pad(formatBytes(r.bytesPerStep), 12)} ${pad(`1/${(1 / r.transferRatio).toFixed(2)}`, 9)} ` +
      `${pad(r.gbPerSecond.toFixed(1), 6)} ${pad((100 * r.fractionOfCopy).toFixed(0) + "%", 6)} ${pad(r.speedup.toFixed(2) + "×", 8)}`,
  );
}

/** The targets, read off this run (per thread count), and what more threads gave. */
function summarize(rows: AttentionBenchRow[], copy: number): void {
  const range = (xs: number[], digits: number, unit: string) =>
    `${Math.min(...xs).toFixed(digits)}${unit}–${Math.max(...xs).toFixed(digits)}${unit}`;
  for (const threads of [...new Set(rows.map((r) => r.threads))]) {
    const at = rows.filter((r) => r.threads === threads);
    const dense = at.filter((r) => r.method === "dense" && r.S >= 16384);
    if (dense.length > 0) {
      console.log(
        `${threads} thread(s): dense at S ≥ 16k: ${range(
          dense.map((r) => 100 * r.fractionOfCopy),
          0,
          "%",
        )} of copy bandwidth (${copy.toFixed(1)} GB/s); target ≥ 70%`,
      );
    }
    const sparq = at.filter((r) => r.method === "sparq" && r.compression === 8 && r.S === 16384);
    if (sparq.length > 0)
      console.log(
        `${threads} thread(s): SparQ 1/8 at S = 16k: ${range(
          sparq.map((r) => r.speedup),
          2,
          "×",
        )} faster than dense; target ≥ 4× (≥ 5× at d_h 128)`,
      );
  }
  const key = (r: AttentionBenchRow) => `${r.S} ${r.Hd} ${r.shape} ${r.dtype} ${r.method} ${r.compression}`;
  const one = new Map(rows.filter((r) => r.threads === 1).map((r) => [key(r), r]));
  for (const method of ["dense", "sparq"]) {
    for (const threads of [...new Set(rows.map((r) => r.threads))].filter((t) => t > 1)) {
      const gains = rows
        .filter(
          (r) =>
            r.threads === threads &&
            r.method === method &&
            (method === "dense" || r.compression === 8) &&
            r.S >= 16384 &&
            one.has(key(r)),
        )
        .map((r) => one.get(key(r))!.microseconds / r.microseconds);
      if (gains.length > 0)
        console.log(
          `${method}${method === "sparq" ? " 1/8" : ""} at S ≥ 16k: ${threads} threads are ${range(gains, 2, "×")} as fast as 1`,
        );
    }
  }
}

function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

/** Roughly normal values (sum of two uniforms, centred), fast enough for hundreds of MB. */
function fillGaussian(f32: Float32Array, at: number, n: number, random: () => number): void {
  for (let i = 0; i < n; i++) f32[at + i] = (random() + random() - 1) * 2.4;
}
