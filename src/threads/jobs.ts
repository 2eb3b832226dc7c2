/**
 * Jobs: multi-kernel JavaScript functions that a task list can run on any thread, for work with scalar logic
 * between kernel calls (a decode step's per-head SparQ work). The layer that owns the work defines its job
 * here with defineJob(), named and with its module's URL, so the kernel workers can import that module and
 * find the same function; the thread layer knows jobs only through this registry.
 *
 * A job's arguments are a struct of named numbers (pointers, sizes, flags, f32 scalars), written into the
 * shared task list in the order of its fields and read back by name on the thread that runs it.
 */
import type { KernelEnv } from "./env.js";

export type JobArgs<F extends string> = Readonly<Record<F, number>>;

export interface Job<F extends string = string> {
  /** Unique across the process; what the threads agree on. */
  readonly name: string;
  /** The URL of the module that defines the job (its import.meta.url): a kernel worker imports it. */
  readonly module: string;
  /** The struct's fields, in the order they sit in the task list. */
  readonly fields: readonly F[];
  readonly run: (env: KernelEnv, args: JobArgs<F>) => void;
}

const defined: Job[] = [];

/** Defines a job (once per process and thread: at the top level of its module). */
export function defineJob<const F extends string>(
  name: string,
  module: string,
  fields: readonly F[],
  run: (env: KernelEnv, args: JobArgs<F>) => void,
): Job<F> {
  if (defined.some((j) => j.name === name)) throw new Error(`a job named ${name} is already defined`);
  if (new Set(fields).size !== fields.length) throw new Error(`job ${name}: its fields repeat a name`);
  const job: Job<F> = { name, module, fields, run };
  defined.push(job as unknown as Job);
  return job;
}

/** The jobs defined so far on this thread, in the order they were defined. */
export function definedJobs(): readonly Job[] {
  return defined;
}

/** The job defined on this thread under `name`, or undefined. */
export function jobNamed(name: string): Job | undefined {
  return defined.find((j) => j.name === name);
}

/** Throws: lets tests check that a task's failure in a worker reaches the caller, naming the job. */
export const FAIL_JOB = defineJob("fail", import.meta.url, ["code"], (_env, { code }) => {
  throw new Error(`requested failure ${code}`);
});
