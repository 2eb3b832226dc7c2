/**
 * What a task list can ask a thread to run: every kernel by name (op ids 0..N-1, KERNEL_NAMES' order), then
 * the jobs (ids N, N+1, … in the order of the job table the list was written for; see jobs.ts). The main
 * thread and the workers run lists through the same execute(), so a task gives the same bits on any thread.
 */
import type { KernelName } from "../kernels/kernels.js";
import { KERNEL_NAMES } from "../kernels/wasm.js";
import type { KernelEnv } from "./env.js";
import type { Job } from "./jobs.js";

/** The most arguments a kernel takes; a task with more is refused when it is queued (Parallel.task). */
export const MAX_KERNEL_ARGS = 12;

export const N_KERNELS = KERNEL_NAMES.length;

/** Op ids of the kernels, by name. */
export const KERNEL_OPS = Object.fromEntries(KERNEL_NAMES.map((name, id) => [name, id])) as Record<KernelName, number>;

/** The name of op `op` in a task list written for `jobs`. */
export function opName(op: number, jobs: readonly Job[]): string {
  return op < N_KERNELS ? (KERNEL_NAMES[op] ?? `op ${op}`) : (jobs[op - N_KERNELS]?.name ?? `op ${op}`);
}

/**
 * Runs the task list `list` ([count, then per task: op, argc, args…]) in order, its job ids those of
 * `jobs`. A kernel gets exactly its argc arguments; a job gets its struct by field name. A throw names the op.
 */
export function execute(env: KernelEnv, list: Float64Array, jobs: readonly Job[]): void {
  const count = list[0];
  const kernels = kernelTable(env);
  let p = 1;
  for (let i = 0; i < count; i++) {
    const op = list[p];
    const argc = list[p + 1];
    const a = p + 2;
    try {
      if (op < N_KERNELS) callKernel(kernels[op], list, a, argc);
      else {
        const job = jobs[op - N_KERNELS];
        if (job === undefined) throw new Error("no such job on this thread");
        const args: Record<string, number> = {};
        for (let f = 0; f < job.fields.length; f++) args[job.fields[f]] = list[a + f];
        job.run(env, args);
      }
    } catch (e) {
      throw new Error(`${opName(op, jobs)}: ${(e as Error).message ?? String(e)}`, { cause: e });
    }
    p = a + argc;
  }
}

type KernelFn = (...args: number[]) => void;

/** f(l[a], …, l[a + argc − 1]) without an array per call. */
function callKernel(f: KernelFn, l: Float64Array, a: number, argc: number): void {
  switch (argc) {
    case 0:
      return f();
    case 1:
      return f(l[a]);
    case 2:
      return f(l[a], l[a + 1]);
    case 3:
      return f(l[a], l[a + 1], l[a + 2]);
    case 4:
      return f(l[a], l[a + 1], l[a + 2], l[a + 3]);
    case 5:
      return f(l[a], l[a + 1], l[a + 2], l[a + 3], l[a + 4]);
    case 6:
      return f(l[a], l[a + 1], l[a + 2], l[a + 3], l[a + 4], l[a + 5]);
    case 7:
      return f(l[a], l[a + 1], l[a + 2], l[a + 3], l[a + 4], l[a + 5], l[a + 6]);
    case 8:
      return f(l[a], l[a + 1], l[a + 2], l[a + 3], l[a + 4], l[a + 5], l[a + 6], l[a + 7]);
    case 9:
      return f(l[a], l[a + 1], l[a + 2], l[a + 3], l[a + 4], l[a + 5], l[a + 6], l[a + 7], l[a + 8]);
    case 10:
      return f(l[a], l[a + 1], l[a + 2], l[a + 3], l[a + 4], l[a + 5], l[a + 6], l[a + 7], l[a + 8], l[a + 9]);
    case 11:
      return f(
        l[a],
        l[a + 1],
        l[a + 2],
        l[a + 3],
        l[a + 4],
        l[a + 5],
        l[a + 6],
        l[a + 7],
        l[a + 8],
        l[a + 9],
        l[a + 10],
      );
    case 12:
      return f(
        l[a],
        l[a + 1],
        l[a + 2],
        l[a + 3],
        l[a + 4],
        l[a + 5],
        l[a + 6],
        l[a + 7],
        l[a + 8],
        l[a + 9],
        l[a + 10],
        l[a + 11],
      );
    default:
      throw new Error(`${argc} arguments, more than any kernel takes (${MAX_KERNEL_ARGS})`);
  }
}

const tables = new WeakMap<object, KernelFn[]>();

/** The env's kernels as an array indexed by op id (built once per kernels object). */
function kernelTable(env: KernelEnv): KernelFn[] {
  let table = tables.get(env.kernels);
  if (table === undefined) {
    const byName = env.kernels as unknown as Record<string, KernelFn>;
    table = KERNEL_NAMES.map((name) => byName[name]);
    tables.set(env.kernels, table);
  }
  return table;
}
