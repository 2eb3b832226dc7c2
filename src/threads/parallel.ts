/**
 * A model's view of its threads: task lists for thread 0 (the caller) and threads 1..N-1 (kernel workers
 * over the same memory), filled with task() and run together by flush(), which returns when all are done.
 *
 * Splits never change a result's bits: a matrix product is split by output rows in multiples of 4 (the
 * kernels' row groups; each output element is computed the same way in any share), attention by KV
 * heads (each head's work is the same call on any thread), so N threads give what one thread gives.
 * With one thread nothing is shared and flush() runs the list in place.
 */
import type { KernelName, Kernels } from "../kernels/kernels.js";
import { kernelModuleOf } from "../kernels/wasm.js";
import type { Ptr } from "../memory/arena.js";
import type { KernelEnv } from "./env.js";
import { definedJobs, type Job, type JobArgs } from "./jobs.js";
import { KERNEL_OPS, MAX_KERNEL_ARGS, N_KERNELS, execute } from "./ops.js";
import { kernelWorkers, releaseKernelWorkers, type KernelKind, type KernelPool } from "./pool.js";
import { TASK_SLOTS } from "./protocol.js";

/** Rows of a split share are a multiple of this (the matvec/matmul kernels' row group). */
const ROW_ALIGN = 4;
/** Products with fewer multiply-adds than this stay on one thread (a job's overhead is ~µs). */
const MIN_SPLIT_WORK = 1 << 16;

export type LinearOp = "F32" | "F16" | "Bf16" | "Q8_0" | "Q4_0" | "Q4_1" | "Q5_0" | "Q5_1" | "Q4_K" | "Q5_K" | "Q6_K";

/** The product kernel suffix of each block-format weight dtype. */
export const LINEAR_OPS = {
  q8_0: "Q8_0",
  q4_0: "Q4_0",
  q4_1: "Q4_1",
  q5_0: "Q5_0",
  q5_1: "Q5_1",
  q4_k: "Q4_K",
  q5_k: "Q5_K",
  q6_k: "Q6_K",
} as const satisfies Record<string, LinearOp>;

/** The arguments of kernel K, as a task passes them. */
export type KernelArgs<K extends KernelName> = Parameters<Kernels[K]>;

export class Parallel {
  private readonly lists: Float64Array[];
  private readonly ends: number[];
  private readonly counts: number[];
  private readonly matvecOps = {
    F32: "matvecF32",
    F16: "matvecF16",
    Bf16: "matvecBf16",
    Q8_0: "matvecQ8_0",
    Q4_0: "matvecQ4_0",
    Q4_1: "matvecQ4_1",
    Q5_0: "matvecQ5_0",
    Q5_1: "matvecQ5_1",
    Q4_K: "matvecQ4_K",
    Q5_K: "matvecQ5_K",
    Q6_K: "matvecQ6_K",
  } as const satisfies Record<LinearOp, KernelName>;
  private readonly matmulOps = {
    F32: "matmulF32",
    F16: "matmulF16",
    Bf16: "matmulBf16",
    Q8_0: "matmulQ8_0",
    Q4_0: "matmulQ4_0",
    Q4_1: "matmulQ4_1",
    Q5_0: "matmulQ5_0",
    Q5_1: "matmulQ5_1",
    Q4_K: "matmulQ4_K",
    Q5_K: "matmulQ5_K",
    Q6_K: "matmulQ6_K",
  } as const satisfies Record<LinearOp, KernelName>;
  /** Op ids of the jobs, as this thread (and the task lists) number them. */
  private readonly jobIds = new Map<Job, number>();
  private disposed = false;

  private constructor(
    /** Threads a job spreads over (1 = the caller only). */
    readonly threads: number,
    readonly env: KernelEnv,
    private readonly pool: KernelPool | null,
    private readonly memoryId: number,
    /** Products smaller than this many multiply-adds run on one thread. */
    readonly minSplitWork: number,
  ) {
    this.lists = [new Float64Array(TASK_SLOTS), ...(pool?.taskLists.slice(0, threads - 1) ?? [])];
    this.ends = this.lists.map(() => 1);
    this.counts = this.lists.map(() => 0);
  }

  /** One thread: the caller's, no workers. */
  static serial(kernels: Kernels, memory: WebAssembly.Memory): Parallel {
    return new Parallel(1, envOf(kernels, memory), null, 0, MIN_SPLIT_WORK);
  }

  /** `threads` threads over `memory`: the caller and threads − 1 kernel workers (started if needed). */
  static async create(
    kernels: Kernels,
    memory: WebAssembly.Memory,
    kind: KernelKind,
    threads: number,
    minSplitWork = MIN_SPLIT_WORK,
  ): Promise<Parallel> {
    if (threads <= 1) return new Parallel(1, envOf(kernels, memory), null, 0, minSplitWork);
    const module = kind === "wasm" ? kernelModuleOf(kernels) : undefined;
    if (kind === "wasm" && module === undefined)
      throw new Error("Parallel.create: these kernels were not loaded by kernels/wasm.ts");
    const pool = await kernelWorkers(threads - 1);
    const id = pool.register();
    try {
      await pool.loadJobs(definedJobs(), threads - 1);
      pool.attach(id, memory, kind, module, threads - 1);
    } catch (e) {
      releaseKernelWorkers(pool);
      throw e;
    }
    return new Parallel(threads, envOf(kernels, memory), pool, id, minSplitWork);
  }

  /** The thread item i of n goes to: contiguous shares, as even as they come. */
  threadOf(i: number, n: number): number {
    return Math.floor((i * this.threads) / n);
  }

  /** Appends kernel(args) to thread t's list (in order after its earlier tasks). */
  task<K extends KernelName>(t: number, kernel: K, ...args: KernelArgs<K>): void {
    if (args.length > MAX_KERNEL_ARGS)
      throw new Error(`${kernel}: ${args.length} arguments, more than a task carries (${MAX_KERNEL_ARGS})`);
    const p = this.reserve(t, KERNEL_OPS[kernel], args.length);
    const list = this.lists[t];
    for (let i = 0; i < args.length; i++) list[p + i] = args[i];
  }

  /** Appends job(args) to thread t's list: its struct, field by field. */
  job<F extends string>(t: number, job: Job<F>, args: JobArgs<F>): void {
    let id = this.jobIds.get(job as unknown as Job);
    if (id === undefined) {
      const index = definedJobs().indexOf(job as unknown as Job);
      if (index < 0) throw new Error(`job ${job.name} is not defined with defineJob`);
      id = N_KERNELS + index;
      this.jobIds.set(job as unknown as Job, id);
    }
    if (this.pool !== null && t > 0 && !this.pool.hasJobs(id - N_KERNELS + 1, t)) {
      throw new Error(`job ${job.name} was defined after this model's threads started; import its module first`);
    }
    const p = this.reserve(t, id, job.fields.length);
    const list = this.lists[t];
    for (let i = 0; i < job.fields.length; i++) list[p + i] = args[job.fields[i]];
  }

  /** Writes a task's header (op, argc) to thread t's list and returns where its argc arguments go. */
  private reserve(t: number, op: number, argc: number): number {
    if (this.ends[t] + 2 + argc > TASK_SLOTS) this.flush();
    const list = this.lists[t];
    const p = this.ends[t];
    list[p] = op;
    list[p + 1] = argc;
    this.ends[t] = p + 2 + argc;
    this.counts[t]++;
    return p + 2;
  }

  /** Runs every queued task; returns when all threads are done (a worker's throw becomes a WorkerError). */
  flush(): void {
    const { lists, counts, ends } = this;
    for (let t = 0; t < lists.length; t++) lists[t][0] = counts[t];
    const workers = this.workersWithTasks();
    try {
      const jobs = definedJobs();
      if (workers === 0) execute(this.env, lists[0], jobs);
      else this.pool!.run(this.memoryId, workers, () => execute(this.env, lists[0], jobs));
    } finally {
      for (let t = 0; t < lists.length; t++) {
        counts[t] = 0;
        ends[t] = 1;
      }
    }
  }

  /** out (d) = W (d, n) @ x (n) through the matvec kernel for `op`, split by rows of W. */
  matvec(op: LinearOp, out: Ptr, x: Ptr, w: Ptr, n: number, d: number, rowBytes: number): void {
    const kernel = this.matvecOps[op];
    this.splitRows(d, n, (t, r0, r1) => this.task(t, kernel, out + 4 * r0, x, w + r0 * rowBytes, n, r1 - r0));
    this.flush();
  }

  /** out (t, d) = X (t, n) @ W (d, n)^T through the matmul kernel for `op`, split by rows of W. */
  matmul(op: LinearOp, out: Ptr, x: Ptr, w: Ptr, n: number, d: number, T: number, rowBytes: number): void {
    const kernel = this.matmulOps[op];
    this.splitRows(d, n * T, (t, r0, r1) => this.task(t, kernel, out + 4 * r0, x, w + r0 * rowBytes, n, r1 - r0, T, d));
    this.flush();
  }

  /** dX (t, n) (= or += when accumulate ≠ 0) = dY (t, ldy) @ W (d, n), split by rows of dX. */
  matmulBackwardInput(
    dX: Ptr,
    dY: Ptr,
    w: Ptr,
    n: number,
    d: number,
    t: number,
    ldy: number,
    accumulate: number,
  ): void {
    this.splitRows(t, n * d, (th, r0, r1) =>
      this.task(th, "matmulBackwardInput", dX + 4 * r0 * n, dY + 4 * r0 * ldy, w, n, d, r1 - r0, ldy, accumulate),
    );
    this.flush();
  }

  /** dW (d, n) += dY (t, ldy)ᵀ @ X (t, n), split by rows of dW. */
  matmulBackwardWeight(dW: Ptr, dY: Ptr, x: Ptr, n: number, d: number, t: number, ldy: number): void {
    this.splitRows(d, n * t, (th, r0, r1) =>
      this.task(th, "matmulBackwardWeight", dW + 4 * r0 * n, dY + 4 * r0, x, n, r1 - r0, t, ldy),
    );
    this.flush();
  }

  /** Stops using the workers for this memory (they drop their kernels over it; the last user stops them). */
  dispose(): void {
    if (this.disposed || this.pool === null) return;
    this.disposed = true;
    try {
      this.pool.detach(this.memoryId);
    } finally {
      releaseKernelWorkers(this.pool);
    }
  }

  /**
   * Calls share(t, r0, r1) for each thread's rows of d (multiples of ROW_ALIGN), or once for all rows when
   * the work (d · workPerRow) is small; the caller queues tasks in share() and flushes.
   */
  splitRows(d: number, workPerRow: number, share: (t: number, r0: number, r1: number) => void): void {
    if (this.threads === 1 || d * workPerRow < this.minSplitWork || d < 2 * ROW_ALIGN) {
      share(0, 0, d);
      return;
    }
    const per = Math.ceil(d / this.threads / ROW_ALIGN) * ROW_ALIGN;
    for (let t = 0, r0 = 0; r0 < d; t++, r0 += per) share(t, r0, Math.min(d, r0 + per));
  }

  private workersWithTasks(): number {
    let last = 0;
    for (let t = 1; t < this.lists.length; t++) if (this.counts[t] > 0) last = t;
    return last;
  }
}

function envOf(kernels: Kernels, memory: WebAssembly.Memory): KernelEnv {
  return { kernels, f32: new Float32Array(memory.buffer), i32: new Int32Array(memory.buffer) };
}
