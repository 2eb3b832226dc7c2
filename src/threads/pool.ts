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
    let ownError: unknown = null;
    try {
      own?.();
    } catch (e) {
      ownError = e;
    }
    this.waitForWorkers();
    if (ownError !== null) throw ownError;
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
      for (let w = 0; w < this.workers.length; w++) {
        if (Atomics.load(ctl, workerWord(w, DEAD)) !== 0) {
          this.stopped = true;
          throw new WorkerError(`kernel worker ${w + 1} exited during a job; the kernel workers are unusable`);
        }
      }
      Atomics.wait(ctl, PENDING, pending, 50);
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
