/**
 * Kernel workers: node:worker_threads that instantiate the kernels over the same shared WebAssembly.Memory
 * as the main thread (no copy of weights or cache) and run task lists on request (protocol.ts).
 *
 * One pool per process, started on first use and grown when a model asks for more threads; stopped when
 * the last model using it is disposed, or by shutdownKernelWorkers(). Workers are unref'd, so they never
 * keep the process alive, and end with it (exit, Ctrl-C). A job is synchronous for the caller: it
 * returns when every thread is done, and a task that throws in a worker comes back as a WorkerError
 * naming the worker and the op. The same design maps onto Web Workers (SharedArrayBuffer, Atomics, the
 * engine itself in a worker, since a browser's main thread may not Atomics.wait).
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { MessageChannel, Worker, type MessagePort } from "node:worker_threads";
import { KvslimError } from "../errors.js";
import type { Job } from "./jobs.js";
import {
  CMD,
  Command,
  DEAD,
  ERROR_BYTES,
  ERROR_LENGTH,
  GENERATION,
  MEMORY_ID,
  PENDING,
  READY,
  STATUS,
  TASK_SLOTS,
  controlWords,
  workerWord,
} from "./protocol.js";

/** A task failed in a kernel worker, or a worker died. */
export class WorkerError extends KvslimError {
  override name = "WorkerError";
}

/** Most workers a pool holds (the control block is sized for it). */
export const MAX_WORKERS = 63;
/** Main-thread spins on a job's completion before it sleeps (checking for dead workers meanwhile). */
const MAIN_SPINS = 1 << 20;

export type KernelKind = "wasm" | "reference";

export class KernelPool {
  private readonly control = new SharedArrayBuffer(4 * controlWords(MAX_WORKERS));
  readonly ctl = new Int32Array(this.control);
  readonly taskLists: Float64Array[] = [];
  private readonly errorTexts: Uint8Array[] = [];
  private readonly workers: Worker[] = [];
  private readonly ports: MessagePort[] = [];
  /** Memory ids each worker has instantiated kernels over. */
  private readonly attached: Set<number>[] = [];
  /** How many of the main thread's jobs (definedJobs(), in order) each worker has loaded. */
  private readonly jobsLoaded: number[] = [];
  private nextMemoryId = 1;
  private stopped = false;

  get size(): number {
    return this.workers.length;
  }

  /** Starts workers until there are `n`; resolves when all are ready to take jobs. */
  async grow(n: number): Promise<void> {
    if (this.stopped) throw new WorkerError("the kernel workers were shut down");
    if (n > MAX_WORKERS) throw new KvslimError(`at most ${MAX_WORKERS + 1} threads are supported, asked for ${n + 1}`);
    const file = workerFile();
    const starting: Promise<void>[] = [];
    while (this.workers.length < n) {
      const index = this.workers.length;
      const tasks = new SharedArrayBuffer(8 * TASK_SLOTS);
      const errors = new SharedArrayBuffer(ERROR_BYTES);
      const { port1, port2 } = new MessageChannel();
      const worker = new Worker(file, {
        workerData: { control: this.control, tasks, errors, index, port: port2 },
        transferList: [port2],
        // The parent's flags, less those that only make sense for a main script (node --input-type=module -e …).
        execArgv: process.execArgv.filter((a) => !a.startsWith("--input-type")),
      });
      this.workers.push(worker);
      this.ports.push(port1);
      this.taskLists.push(new Float64Array(tasks));
      this.errorTexts.push(new Uint8Array(errors));
      this.attached.push(new Set());
      this.jobsLoaded.push(0);
      starting.push(
        new Promise<void>((resolve, reject) => {
          worker.once("message", () => resolve());
          worker.once("error", (e) =>
            reject(new WorkerError(`kernel worker ${index + 1} failed to start: ${e.message}`, { cause: e })),
          );
          worker.once("exit", (code) =>
            reject(new WorkerError(`kernel worker ${index + 1} exited with code ${code} while starting`)),
          );
        }),
      );
    }
    await Promise.all(starting);
    // Ready: from now on the workers never keep the process alive.
    for (let w = 0; w < this.workers.length; w++) {
      this.workers[w].removeAllListeners("message").removeAllListeners("error").removeAllListeners("exit").unref();
      this.ports[w].unref();
    }
  }

  /** Makes workers 0..n-1 hold kernels over `memory` (the id from register()), from `module` if wasm; synchronous. */
  attach(
    id: number,
    memory: WebAssembly.Memory,
    kind: KernelKind,
    module: WebAssembly.Module | undefined,
    n: number,
  ): void {
    const commands = this.workers.map((_, w) => {
      if (w >= n || this.attached[w].has(id)) return Command.Nop;
      this.ports[w].postMessage({ id, memory, kind, module });
      this.attached[w].add(id);
      return Command.Attach;
    });
    if (commands.some((c) => c === Command.Attach)) this.job(commands, id);
  }

  /**
   * Makes workers 0..n-1 able to run `jobs` (the main thread's definedJobs()) by the same ids: each imports
   * the jobs' modules and numbers the jobs as the list does. Asynchronous: a worker imports between jobs.
   */
  async loadJobs(jobs: readonly Job[], n: number): Promise<void> {
    const behind = (w: number) => w < n && this.jobsLoaded[w] < jobs.length;
    if (!this.workers.some((_, w) => behind(w))) return;
    const modules = [...new Set(jobs.map((j) => workerModule(j.module)))];
    const names = jobs.map((j) => j.name);
    const commands = this.workers.map((_, w) => {
      if (!behind(w)) return Command.Nop;
      this.ports[w].postMessage({ modules, names });
      return Command.Load;
    });
    this.start(commands, 0);
    const ctl = this.ctl;
    for (;;) {
      const pending = Atomics.load(ctl, PENDING);
      if (pending === 0) break;
      this.checkAlive();
      await new Promise((resolve) => setTimeout(resolve, 1)); // once per process and module: a poll will do
    }
    this.finish(commands);
    for (let w = 0; w < this.workers.length; w++) if (commands[w] === Command.Load) this.jobsLoaded[w] = jobs.length;
  }

  /** Whether worker thread t (1-based: thread 0 is the caller) has loaded the first n jobs. */
  hasJobs(n: number, t: number): boolean {
    return (this.jobsLoaded[t - 1] ?? 0) >= n;
  }

  /** A fresh memory id. */
  register(): number {
    return this.nextMemoryId++;
  }

  /** Drops every worker's kernels over memory `id`, so the memory can be collected. */
  detach(id: number): void {
    if (this.stopped) return;
    const commands = this.workers.map((_, w) => (this.attached[w].delete(id) ? Command.Detach : Command.Nop));
    if (commands.some((c) => c === Command.Detach)) this.job(commands, id);
  }

  /**
   * Runs the task lists already written to taskLists[w] for workers w < n (over memory `id`) while the
   * caller runs `own`; returns when all are done. Throws the caller's error, else the first worker's.
   */
  run(id: number, n: number, own: () => void): void {
    const commands = this.workers.map((_, w) => (w < n ? Command.Run : Command.Nop));
    this.job(commands, id, own);
  }

  /** Stops every worker and waits for them to exit. */
  async shutdown(): Promise<void> {
    if (this.stopped) return;
    if (this.workers.length > 0)
      this.job(
        this.workers.map(() => Command.Stop),
        0,
      );
    this.stopped = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
    for (const p of this.ports) p.close();
  }

  private job(commands: Command[], id: number, own?: () => void): void {
    this.start(commands, id);
    let ownError: unknown = null;
    try {
      own?.();
    } catch (e) {
      ownError = e;
    }
    this.waitForWorkers();
    if (ownError !== null) throw ownError;
    this.finish(commands);
  }

  /** Hands every worker its command (over memory `id`) and wakes them. */
  private start(commands: Command[], id: number): void {
    if (this.stopped) throw new WorkerError("the kernel workers were shut down");
    const ctl = this.ctl;
    for (let w = 0; w < commands.length; w++) {
      ctl[workerWord(w, CMD)] = commands[w];
      ctl[workerWord(w, STATUS)] = 0;
      ctl[workerWord(w, MEMORY_ID)] = id;
    }
    Atomics.store(ctl, PENDING, commands.length);
    Atomics.add(ctl, GENERATION, 1);
    Atomics.notify(ctl, GENERATION);
  }

  /** After a job: the first worker's error, if any, as a WorkerError. */
  private finish(commands: Command[]): void {
    const ctl = this.ctl;
    for (let w = 0; w < commands.length; w++) {
      if (ctl[workerWord(w, STATUS)] !== 0) {
        const text = new TextDecoder().decode(this.errorTexts[w].slice(0, ctl[workerWord(w, ERROR_LENGTH)]));
        throw new WorkerError(`kernel worker ${w + 1}: ${text}`);
      }
    }
  }

  private waitForWorkers(): void {
    const ctl = this.ctl;
    for (let spins = 0; spins < MAIN_SPINS; spins++) if (Atomics.load(ctl, PENDING) === 0) return;
    for (;;) {
      const pending = Atomics.load(ctl, PENDING);
      if (pending === 0) return;
      this.checkAlive();
      Atomics.wait(ctl, PENDING, pending, 50);
    }
  }

  private checkAlive(): void {
    for (let w = 0; w < this.workers.length; w++) {
      if (Atomics.load(this.ctl, workerWord(w, DEAD)) !== 0) {
        this.stopped = true;
        throw new WorkerError(`kernel worker ${w + 1} exited during a job; the kernel workers are unusable`);
      }
    }
  }
}

let shared: KernelPool | null = null;
/** Memories (models) using the shared pool; the last one to let go stops the workers. */
let users = 0;

/** The process's kernel workers, at least `n` of them (started on first use); pair with releaseKernelWorkers(). */
export async function kernelWorkers(n: number): Promise<KernelPool> {
  if (shared === null) shared = new KernelPool();
  const pool = shared;
  users++;
  try {
    if (pool.size < n) await pool.grow(n);
  } catch (e) {
    releaseKernelWorkers(pool);
    throw e;
  }
  return pool;
}

/** One user of `pool` is done with it; with no users left the workers stop (in the background). */
export function releaseKernelWorkers(pool: KernelPool): void {
  if (pool !== shared) return;
  if (--users > 0) return;
  shared = null;
  void pool.shutdown();
}

/** Stops the process's kernel workers now (models still using them can no longer run on several threads). */
export async function shutdownKernelWorkers(): Promise<void> {
  const pool = shared;
  shared = null;
  users = 0;
  await pool?.shutdown();
}

/**
 * Where a worker imports a job's module from: the module itself, or, when the caller runs from TypeScript
 * sources (tests), its compiled twin under dist/ (as for the worker script).
 */
function workerModule(url: string): string {
  const root = new URL("../../", import.meta.url).href;
  if (!(url.startsWith(root + "src/") && url.endsWith(".ts"))) return url;
  const compiled = new URL("dist/" + url.slice(root.length).replace(/\.ts$/, ".js"), root);
  if (!existsSync(compiled))
    throw new KvslimError(`the compiled job module ${fileURLToPath(compiled)} is missing; run \`npm run build\``);
  return compiled.href;
}

/**
 * The compiled worker script. Workers always run the built JavaScript (dist/), also when the caller
 * runs from TypeScript sources (tests): run `npm run build` after changing src/threads or the ops.
 */
function workerFile(): string {
  const here = fileURLToPath(import.meta.url);
  const candidates = here.endsWith(".ts")
    ? [fileURLToPath(new URL("../../dist/src/threads/worker.js", import.meta.url))]
    : [fileURLToPath(new URL("./worker.js", import.meta.url))];
  const file = candidates.find((f) => existsSync(f));
  if (file === undefined)
    throw new KvslimError(`the kernel worker script ${candidates[0]} is missing; run \`npm run build\``);
  return file;
}
