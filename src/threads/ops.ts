/**
 * What a task list can ask a thread to run: every kernel by name, then the multi-kernel JavaScript ops
 * (a decode step's per-head work that has scalar logic between kernel calls). The main thread and the
 * workers run lists through the same execute(), so a task gives the same bits on any thread.
 */
import { sparqHead, type KernelEnv } from "../attention/sparq-head.js";
import type { KernelName } from "../kernels/kernels.js";
import { KERNEL_NAMES } from "../kernels/wasm.js";

type JsOp = (env: KernelEnv, a: Float64Array, at: number) => void;

/** The JavaScript ops, by name; their ids follow the kernels'. */
const JS_OPS = {
  sparqHead(env, a, at) {
    sparqHead(
      env,
      a[at],
      a[at + 1],
      a[at + 2],
      a[at + 3],
      a[at + 4],
      a[at + 5],
      a[at + 6],
      a[at + 7],
      a[at + 8],
      a[at + 9],
      a[at + 10],
      a[at + 11],
      a[at + 12],
      a[at + 13],
      a[at + 14],
      a[at + 15],
      a[at + 16],
      a[at + 17],
      a[at + 18],
      a[at + 19],
      a[at + 20],
      a[at + 21],
      a[at + 22],
      a[at + 23],
      a[at + 24],
      a[at + 25],
    );
  },
  /** Throws: lets tests check that a worker's failure reaches the caller. */
  fail(_env, a, at) {
    throw new Error(`requested failure ${a[at]}`);
  },
} satisfies Record<string, JsOp>;

export type OpName = KernelName | keyof typeof JS_OPS;

const NAMES: readonly OpName[] = [...KERNEL_NAMES, ...(Object.keys(JS_OPS) as (keyof typeof JS_OPS)[])];
const N_KERNELS = KERNEL_NAMES.length;
const JS_TABLE: JsOp[] = Object.values(JS_OPS);

/** Op ids by name. */
export const OPS = Object.fromEntries(NAMES.map((name, id) => [name, id])) as Record<OpName, number>;

export function opName(op: number): string {
  return NAMES[op] ?? `op ${op}`;
}

/**
 * Runs the task list `list` ([count, then per task: op, argc, args…]) in order. Kernels take at most 12
 * arguments; the extra ones passed are ignored. A throw names the op.
 */
export function execute(env: KernelEnv, list: Float64Array): void {
  const count = list[0];
  const kernels = kernelTable(env);
  let p = 1;
  for (let i = 0; i < count; i++) {
    const op = list[p];
    const argc = list[p + 1];
    const a = p + 2;
    try {
      if (op < N_KERNELS) {
        kernels[op](
          list[a],
          list[a + 1],
          list[a + 2],
          list[a + 3],
          list[a + 4],
          list[a + 5],
          list[a + 6],
          list[a + 7],
          list[a + 8],
          list[a + 9],
          list[a + 10],
          list[a + 11],
        );
      } else {
        JS_TABLE[op - N_KERNELS](env, list, a);
      }
    } catch (e) {
      throw new Error(`${opName(op)}: ${(e as Error).message ?? String(e)}`, { cause: e });
    }
    p = a + argc;
  }
}

type KernelFn = (...args: number[]) => void;
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
