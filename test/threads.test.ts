/**
 * Kernel workers: the same bits on N threads as on one (matrix products split by rows, attention by KV
 * heads, whole models), a worker's failure surfacing in the caller, and a clean process lifecycle.
 * Workers run the built dist/ code (npm run build before npm test).
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, test } from "vitest";
import type { AttentionSpec } from "../src/attention/method.js";
import { WorkerError } from "../src/threads/pool.js";
import { loadWasmKernelsSync } from "../src/kernels/wasm.js";
import { Arena } from "../src/memory/arena.js";
import { encode, type DType } from "../src/memory/dtype.js";
import { llamaConfig } from "../src/model/synthetic.js";
import { loadModel } from "../src/model/model.js";
import { defineJob, FAIL_JOB } from "../src/threads/jobs.js";
import { Parallel } from "../src/threads/parallel.js";
import { Harness } from "./helpers/attention-harness.js";
import { gaussian, makeRandom, weights } from "./helpers/kernels-helpers.js";
import { tempDir, writeTestGguf } from "./helpers/models.js";

const ROOT = path.resolve(import.meta.dirname, "..");

const arena = new Arena(64 << 20, "thread tests");
const kernels = loadWasmKernelsSync(arena.memory);
const serial = Parallel.serial(kernels, arena.memory);
const two = await Parallel.create(kernels, arena.memory, "wasm", 2, 0);
const three = await Parallel.create(kernels, arena.memory, "wasm", 3, 0);
afterAll(() => {
  two.dispose();
  three.dispose();
});

const W = arena.alloc(16 << 20);
const X = arena.alloc(1 << 20);
const XQ = arena.alloc(1 << 20);
const OUT1 = arena.alloc(1 << 20);
const OUT2 = arena.alloc(1 << 20);

const rowBytesOf = (dtype: DType, n: number) => (dtype === "f32" ? 4 * n : dtype === "q8_0" ? (n / 32) * 34 : 2 * n);
const opOf = (dtype: DType) => ({ f32: "F32", f16: "F16", bf16: "Bf16", q8_0: "Q8_0" })[dtype] as "F32";

describe("matrix products split by rows", () => {
  const shapes = [
    { n: 64, d: 37, t: 1 },
    { n: 96, d: 1001, t: 1 },
    { n: 256, d: 130, t: 7 },
    { n: 160, d: 515, t: 64 },
  ];
  for (const dtype of ["f32", "f16", "bf16", "q8_0"] as DType[]) {
    test(`${dtype}: 2 and 3 threads == 1 thread, bit for bit (matvec and matmul, ragged row counts)`, () => {
      const random = makeRandom(3);
      for (const { n, d, t } of shapes) {
        arena.u8.set(encode(dtype, weights(random, n * d)), W);
        const x = gaussian(random, t * n);
        arena.f32.set(x, X >> 2);
        kernels.quantizeQ8_0(XQ, X, t * n);
        const input = dtype === "q8_0" ? XQ : X;
        const run = (par: Parallel, out: number) => {
          arena.f32.fill(NaN, out >> 2, (out >> 2) + t * d);
          if (t === 1) par.matvec(opOf(dtype), out, input, W, n, d, rowBytesOf(dtype, n));
          else par.matmul(opOf(dtype), out, input, W, n, d, t, rowBytesOf(dtype, n));
        };
        run(serial, OUT1);
        const expected = arena.u8.slice(OUT1, OUT1 + 4 * t * d);
        for (const par of [two, three]) {
          run(par, OUT2);
          expect(arena.u8.slice(OUT2, OUT2 + 4 * t * d)).toEqual(expected);
        }
      }
    });
  }
});

describe("training products split by output rows", () => {
  test("matmulBackwardInput (by rows of dX, = and +=) and matmulBackwardWeight (by rows of dW): 2 and 3 threads == 1, bit for bit", () => {
    const random = makeRandom(21);
    for (const { n, d, t, ldy } of [
      { n: 40, d: 37, t: 23, ldy: 37 },
      { n: 96, d: 130, t: 64, ldy: 136 },
      { n: 256, d: 260, t: 130, ldy: 260 },
    ]) {
      const dY = gaussian(random, t * ldy);
      const w = gaussian(random, d * n);
      const x = gaussian(random, t * n);
      const start = gaussian(random, Math.max(t, d) * n);
      arena.f32.set(dY, X >> 2);
      arena.f32.set(w, W >> 2);
      arena.f32.set(x, XQ >> 2);
      const run = (par: Parallel, out: number, kind: "input" | "weight", accumulate: number) => {
        arena.f32.set(start, out >> 2);
        if (kind === "input") par.matmulBackwardInput(out, X, W, n, d, t, ldy, accumulate);
        else par.matmulBackwardWeight(out, X, XQ, n, d, t, ldy);
        return arena.u8.slice(out, out + 4 * (kind === "input" ? t : d) * n);
      };
      for (const [kind, accumulate] of [
        ["input", 0],
        ["input", 1],
        ["weight", 1],
      ] as const) {
        const expected = run(serial, OUT1, kind, accumulate);
        for (const par of [two, three]) expect(run(par, OUT2, kind, accumulate)).toEqual(expected);
      }
    }
  });
});

describe("attention split by KV heads", () => {
  const specs: AttentionSpec[] = [
    { method: "dense" },
    { method: "sparq", r: 8, k: 24 },
    { method: "sparq", r: 6, k: 20, layout: "single", reallocation: true },
    { method: "h2o", budget: 40 },
    { method: "streaming", budget: 40, sinks: 4 },
  ];
  test("reference kernels in the workers too: dense and SparQ on 2 threads == 1 thread, bit for bit", async () => {
    for (const spec of specs.slice(0, 2)) {
      const shape = { H: 4, G: 2, Hd: 16, maxRows: 128, dtype: "f32" as const, kernels: "reference" as const };
      const one = await Harness.create({ ...shape, threads: 1 }, spec);
      const many = await Harness.create({ ...shape, threads: 2 }, spec);
      const random = makeRandom(12);
      for (const T of [60, 1, 1, 1]) {
        const q = gaussian(random, T * shape.H * shape.Hd);
        const k = gaussian(random, T * shape.G * shape.Hd);
        const v = gaussian(random, T * shape.G * shape.Hd);
        expect(many.step(q, k, v)).toEqual(one.step(q, k, v));
      }
      many.parallel.dispose();
    }
  });

  for (const spec of specs) {
    for (const dtype of ["f32", "bf16"] as const) {
      test(`${JSON.stringify(spec)} ${dtype}: 2 threads == 1 thread bit for bit over a prefill and 20 decode steps (GQA, 3 KV heads)`, async () => {
        const shape = { H: 6, G: 3, Hd: 32, maxRows: 256, dtype };
        const one = await Harness.create({ ...shape, threads: 1 }, spec);
        const many = await Harness.create({ ...shape, threads: 2 }, spec);
        const random = makeRandom(11);
        const step = (T: number) => {
          const q = gaussian(random, T * shape.H * shape.Hd);
          const k = gaussian(random, T * shape.G * shape.Hd);
          const v = gaussian(random, T * shape.G * shape.Hd);
          expect(many.step(q, k, v)).toEqual(one.step(q, k, v));
        };
        step(90);
        for (let i = 0; i < 20; i++) step(1);
        expect(many.cache.traffic).toEqual(one.cache.traffic);
        many.parallel.dispose();
      });
    }
  }
});

describe("whole model", () => {
  const dir = tempDir();
  // Wide enough that every projection is split (≥ 65,536 multiply-adds).
  const config = llamaConfig({ dModel: 256, nLayers: 2, nHeads: 8, nKvHeads: 2, ffnDim: 512, vocabSize: 1024 });
  const files = { f32: writeTestGguf(dir, "f32", config, "f32"), q8_0: writeTestGguf(dir, "q8", config, "q8_0") };

  for (const [dtype, file] of Object.entries(files)) {
    for (const attention of [{ method: "dense" }, { method: "sparq", compression: 4, minK: 8 }] as AttentionSpec[]) {
      test(`${dtype} ${attention.method}: threads 2 and 3 give the logits of threads 1, bit for bit (prefill of 150 tokens, then 10 decode steps)`, async () => {
        const logits = async (threads: number) => {
          const model = await loadModel(file.path, { threads, contextSize: 256, attention });
          expect(model.threads).toBe(threads);
          const session = model.createSession();
          const random = makeRandom(5);
          const prompt = Array.from({ length: 150 }, () => Math.floor(random() * 1000));
          const out = [Array.from(session.evaluate(prompt))];
          for (let i = 0; i < 10; i++) out.push(Array.from(session.evaluate([i * 17])));
          session.dispose();
          model.dispose();
          return out;
        };
        const expected = await logits(1);
        expect(await logits(2)).toEqual(expected);
        expect(await logits(3)).toEqual(expected);
      });
    }
  }

  test("a fault in a worker's share of a product rejects generate() with a WorkerError naming the kernel; no hang", async () => {
    const model = await loadModel(files.f32.path, { threads: 2, contextSize: 64 });
    const wq = model.weights.layers[0].wq;
    // The second half of wq's rows now lies past the end of memory: only the worker's share faults.
    wq.ptr = model.arena.size - (wq.rows / 2) * wq.cols * 4;
    const session = model.createSession();
    const run = async () => {
      for await (const _ of session.generate("hello", { maxTokens: 4 })) void _;
    };
    await expect(run()).rejects.toThrow(WorkerError);
    await expect(run()).rejects.toThrow(/kernel worker 1: mat(mul|vec)F32: .*out of bounds/);
    model.dispose();
  });
});

describe("pool", () => {
  test("a task that throws in a worker: WorkerError with the cause; the caller's own tasks still ran; the pool keeps working", () => {
    two.task(0, "add", OUT1, X, X, 4);
    two.job(1, FAIL_JOB, { code: 7 });
    arena.f32.set([1, 2, 3, 4], X >> 2);
    arena.f32.fill(0, OUT1 >> 2, (OUT1 >> 2) + 4);
    expect(() => two.flush()).toThrow(/kernel worker 1: fail: requested failure 7/);
    expect(Array.from(arena.f32.subarray(OUT1 >> 2, (OUT1 >> 2) + 4))).toEqual([2, 4, 6, 8]);
    two.task(1, "add", OUT2, X, X, 4);
    two.flush();
    expect(Array.from(arena.f32.subarray(OUT2 >> 2, (OUT2 >> 2) + 4))).toEqual([2, 4, 6, 8]);
  });

  test("a kernel trap in a worker (out-of-bounds pointer) is a WorkerError, not a crash or a hang", () => {
    two.task(1, "add", arena.size + 4096, X, X, 16);
    expect(() => two.flush()).toThrow(WorkerError);
    two.task(1, "add", OUT2, X, X, 4);
    two.flush();
  });

  test("the caller's own failure is thrown after the workers finish theirs", () => {
    arena.f32.fill(0, OUT2 >> 2, (OUT2 >> 2) + 4);
    two.job(0, FAIL_JOB, { code: 1 });
    two.task(1, "add", OUT2, X, X, 4);
    expect(() => two.flush()).toThrow(/fail: requested failure 1/);
    expect(Array.from(arena.f32.subarray(OUT2 >> 2, (OUT2 >> 2) + 4))).toEqual([2, 4, 6, 8]);
  });
});

describe("tasks and jobs", () => {
  test("a job's struct reaches the worker field by field; a kernel task with more arguments than any kernel takes is refused", () => {
    two.job(1, FAIL_JOB, { code: 12345 });
    expect(() => two.flush()).toThrow(/kernel worker 1: fail: requested failure 12345/);
    const tooMany = Array.from({ length: 13 }, () => 0);
    expect(() => (two.task as (t: number, k: string, ...a: number[]) => void)(0, "add", ...tooMany)).toThrow(
      /add: 13 arguments, more than a task carries \(12\)/,
    );
  });

  test("a job defined after the threads started runs on the caller's thread and is refused, by name, on a worker", () => {
    let ran = 0;
    const late = defineJob("late-test-job", import.meta.url, ["n"], (_env, { n }) => {
      ran += n;
    });
    two.job(0, late, { n: 3 });
    two.flush();
    expect(ran).toBe(3);
    expect(() => two.job(1, late, { n: 1 })).toThrow(
      /job late-test-job was defined after this model's threads started/,
    );
    expect(() => defineJob("late-test-job", import.meta.url, ["n"], () => {})).toThrow(/already defined/);
  });

  test("the thread layer imports nothing above it (no attention, model, cache, training, eval, server or CLI code)", () => {
    const dir = fileURLToPath(new URL("../src/threads/", import.meta.url));
    for (const file of readdirSync(dir)) {
      const text = readFileSync(path.join(dir, file), "utf8");
      const imports = [...text.matchAll(/from "(\.\.\/[^"]+)"/g)].map((m) => m[1]);
      expect(
        imports.filter((i) => !/^\.\.\/(kernels|memory)\/|^\.\.\/errors\.js$/.test(i)),
        file,
      ).toEqual([]);
    }
  });
});

describe("process lifecycle", () => {
  const dir = tempDir();
  const model = writeTestGguf(
    dir,
    "tiny",
    llamaConfig({ dModel: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, ffnDim: 128, vocabSize: 512 }),
  );
  const cli = (args: string[]) =>
    spawn(process.execPath, [path.join(ROOT, "bin/kvslim.js"), ...args], { stdio: ["ignore", "pipe", "pipe"] });

  test("kvslim generate --threads 2 exits on its own when done (workers never keep the process alive)", async () => {
    const child = cli(["generate", "-m", model.path, "-p", "hi", "-n", "8", "--threads", "2", "--seed", "1"]);
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    expect(stderr).toMatch(/tok\/s/);
    expect(code).toBe(0);
  });

  test("Ctrl-C (SIGINT) in the middle of decoding on 2 threads ends the process within 5 s", async () => {
    const script = `
      import { loadModel } from ${JSON.stringify(path.join(ROOT, "dist/src/index.js"))};
      const model = await loadModel(${JSON.stringify(model.path)}, { threads: 2, contextSize: 1024 });
      console.log("decoding");
      for (;;) {
        const session = model.createSession();
        for (let i = 0; i < 1000; i++) session.evaluate([i % 500]);
        session.dispose();
      }`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    await new Promise<void>((resolve, reject) => {
      child.stdout.once("data", () => resolve());
      child.once("exit", (code) => reject(new Error(`exited early with ${code}: ${stderr}`)));
    });
    const started = Date.now();
    child.kill("SIGINT");
    const exited = await new Promise<{ code: number | null; signal: string | null }>((resolve) =>
      child.on("exit", (code, signal) => resolve({ code, signal })),
    );
    expect(Date.now() - started).toBeLessThan(5000);
    expect(exited.code === 130 || exited.signal === "SIGINT").toBe(true);
  });

  test("--threads 0 is a named usage error", async () => {
    const child = cli(["generate", "-m", model.path, "-p", "hi", "--threads", "0"]);
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/--threads expects an integer from 1 to 64, got "0"/);
    expect(stderr).not.toMatch(/\n\s+at /);
  });
});
