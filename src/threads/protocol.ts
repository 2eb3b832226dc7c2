/**
 * The shared-memory protocol between the main thread and the kernel workers (no message per kernel call).
 *
 * One control block (Int32Array over a SharedArrayBuffer) and, per worker, a task list (Float64Array) and
 * an error text area (bytes). A job is: the main thread writes each worker's command and task list, sets
 * PENDING to the number of workers, bumps GENERATION and notifies; every worker runs its list, writes its
 * status and decrements PENDING (notifying at zero); the main thread runs its own list meanwhile, then
 * waits for PENDING = 0. Waiting first spins (a decode step is hundreds of jobs microseconds apart), then
 * sleeps in Atomics.wait.
 *
 * A task list is [count, then per task: op, argc, args…] as float64 (pointers, sizes and f32 scalars are
 * exact in a double). Ops are the kernels by name, then the jobs (multi-kernel JavaScript, see jobs.ts),
 * whose modules a worker imports on a Load command (the list arrives on its MessagePort, as a memory to
 * attach does).
 */

/** Control block words. */
export const GENERATION = 0;
export const PENDING = 1;
export const READY = 2;
/** Per-worker words start at WORKER_BASE + w * WORKER_WORDS. */
export const WORKER_BASE = 16;
export const WORKER_WORDS = 8;
export const CMD = 0; // what this job asks of the worker (Command)
export const STATUS = 1; // 0 ok, 1 a task threw (text in the error area)
export const MEMORY_ID = 2; // which attached memory the tasks run over
export const ERROR_LENGTH = 3; // bytes of error text
export const DEAD = 4; // 1 once the worker thread has exited

export const Command = { Nop: 0, Run: 1, Attach: 2, Detach: 3, Stop: 4, Load: 5 } as const;
export type Command = (typeof Command)[keyof typeof Command];

/** Float64 slots of one task list (512 KiB): far more than a step's tasks for one thread. */
export const TASK_SLOTS = 1 << 16;
/** Bytes of one worker's error text. */
export const ERROR_BYTES = 2048;

export function controlWords(workers: number): number {
  return WORKER_BASE + workers * WORKER_WORDS;
}

export function workerWord(w: number, field: number): number {
  return WORKER_BASE + w * WORKER_WORDS + field;
}
