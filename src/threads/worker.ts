/**
 * A kernel worker's loop (see pool.ts and protocol.ts): wait for a new job generation, do this worker's
 * command (run its task list, attach or detach a memory, stop), report, repeat. Entirely synchronous: a
 * memory to attach arrives on a MessagePort and is taken with receiveMessageOnPort.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from "node:worker_threads";
import type { KernelEnv } from "../attention/sparq-head.js";
import { createReferenceKernels } from "../kernels/reference.js";
import { loadWasmKernelsSync } from "../kernels/wasm.js";
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
const word = (field: number) => workerWord(index, field);

process.on("exit", () => {
  Atomics.store(ctl, word(DEAD), 1);
  Atomics.notify(ctl, PENDING);
});

function attach(): void {
  let received: { message: AttachMessage } | undefined;
  while ((received = receiveMessageOnPort(port) as { message: AttachMessage } | undefined) === undefined);
  const { id, memory, kind, module } = received.message;
  const kernels = kind === "wasm" ? loadWasmKernelsSync(memory, module) : createReferenceKernels(memory);
  envs.set(id, { kernels, f32: new Float32Array(memory.buffer), i32: new Int32Array(memory.buffer) });
}

function fail(e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  const { written } = new TextEncoder().encodeInto(message, errorText);
  ctl[word(ERROR_LENGTH)] = written;
  ctl[word(STATUS)] = 1;
}

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
      execute(env, list);
    } else if (command === Command.Attach) attach();
    else if (command === Command.Detach) envs.delete(ctl[word(MEMORY_ID)]);
  } catch (e) {
    fail(e);
  }
  if (Atomics.sub(ctl, PENDING, 1) === 1) Atomics.notify(ctl, PENDING);
  if (command === Command.Stop) break;
}
port.close();
