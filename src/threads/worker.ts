/**
 * A kernel worker's loop (see pool.ts and protocol.ts): wait for a new job generation, do this worker's
 * command (run its task list, attach or detach a memory, load job modules, stop), report, repeat.
 * Synchronous but for loading jobs (a module import): a memory to attach or the jobs to load arrive on a
 * MessagePort and are taken with receiveMessageOnPort.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from "node:worker_threads";
import { createReferenceKernels } from "../kernels/reference.js";
import { loadWasmKernelsSync } from "../kernels/wasm.js";
import type { KernelEnv } from "./env.js";
import { jobNamed, type Job } from "./jobs.js";
import { execute } from "./ops.js";
import {
  CMD,
  Command,
  DEAD,
  ERROR_LENGTH,
  GENERATION,
  MEMORY_ID,
  PENDING,
  READY,
  STATUS,
  TASK_SLOTS,
  workerWord,
} from "./protocol.js";

/** Spins on the generation word before sleeping in Atomics.wait (the gaps inside a decode step are short). */
const SPINS = 1 << 18;

interface Setup {
  control: SharedArrayBuffer;
  tasks: SharedArrayBuffer;
  errors: SharedArrayBuffer;
  index: number;
  port: MessagePort;
}

interface LoadMessage {
  modules: string[];
  /** The main thread's jobs in its order: their ids in the task lists. */
  names: string[];
}

interface AttachMessage {
  id: number;
  memory: WebAssembly.Memory;
  kind: "wasm" | "reference";
  module?: WebAssembly.Module;
}

const { control, tasks, errors, index, port } = workerData as Setup;
const ctl = new Int32Array(control);
const list = new Float64Array(tasks, 0, TASK_SLOTS);
const errorText = new Uint8Array(errors);
const envs = new Map<number, KernelEnv>();
let jobs: Job[] = [];
const word = (field: number) => workerWord(index, field);

process.on("exit", () => {
  Atomics.store(ctl, word(DEAD), 1);
  Atomics.notify(ctl, PENDING);
});

/** The message posted with the current command (it is sent before the command is). */
function message<T>(): T {
  let received: { message: T } | undefined;
  while ((received = receiveMessageOnPort(port) as { message: T } | undefined) === undefined);
  return received.message;
}

function attach(): void {
  const { id, memory, kind, module } = message<AttachMessage>();
  const kernels = kind === "wasm" ? loadWasmKernelsSync(memory, module) : createReferenceKernels(memory);
  envs.set(id, { kernels, f32: new Float32Array(memory.buffer), i32: new Int32Array(memory.buffer) });
}

function fail(e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  const { written } = new TextEncoder().encodeInto(message, errorText);
  ctl[word(ERROR_LENGTH)] = written;
  ctl[word(STATUS)] = 1;
}

/** Imports the jobs' modules (each defines its jobs) and numbers the jobs as the main thread does. */
async function load(): Promise<void> {
  const { modules, names } = message<LoadMessage>();
  for (const module of modules) await import(module);
  jobs = names.map((name) => {
    const job = jobNamed(name);
    if (job === undefined) throw new Error(`job ${name} is not defined by the modules ${modules.join(", ")}`);
    return job;
  });
}

async function serve(): Promise<void> {
  let seen = Atomics.load(ctl, GENERATION);
  Atomics.add(ctl, READY, 1);
  parentPort!.postMessage("ready");
  for (;;) {
    let generation: number;
    let spins = 0;
    while ((generation = Atomics.load(ctl, GENERATION)) === seen) {
      if (++spins > SPINS) Atomics.wait(ctl, GENERATION, seen);
    }
    seen = generation;
    const command = ctl[word(CMD)] as Command;
    try {
      if (command === Command.Run) {
        const env = envs.get(ctl[word(MEMORY_ID)]);
        if (env === undefined) throw new Error(`no memory ${ctl[word(MEMORY_ID)]} attached`);
        execute(env, list, jobs);
      } else if (command === Command.Attach) attach();
      else if (command === Command.Detach) envs.delete(ctl[word(MEMORY_ID)]);
      else if (command === Command.Load) await load();
    } catch (e) {
      fail(e);
    }
    if (Atomics.sub(ctl, PENDING, 1) === 1) Atomics.notify(ctl, PENDING);
    if (command === Command.Stop) break;
  }
  port.close();
}

void serve();
