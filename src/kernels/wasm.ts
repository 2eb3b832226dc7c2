/**
 * Loads the WebAssembly SIMD kernels (assembly/, built to build/kernels.wasm) over a memory.
 *
 * The module is compiled once per process and cached; getKernelModule() hands the compiled
 * module to worker threads, which instantiate it over the same shared memory. The kernels object
 * is the instance's exports themselves (no wrapper closures on the hot path).
 */
import { existsSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { KvslimError } from "../errors.js";
import { RESERVED } from "../memory/arena.js";
import type { Kernels, KernelName } from "./kernels.js";

/** Every method of Kernels, checked against the module's exports at load. */
export const KERNEL_NAMES = [
  "matvecF32",
  "matvecF16",
  "matvecBf16",
  "matvecQ8_0",
  "matmulF32",
  "matmulF16",
  "matmulBf16",
  "matmulQ8_0",
  "quantizeQ8_0",
  "roundF16",
  "roundBf16",
  "getRowF32",
  "getRowF16",
  "getRowBf16",
  "getRowQ8_0",
  "rmsnorm",
  "ropeInterleaved",
  "ropeHalves",
  "swiglu",
  "add",
  "attendF32",
  "softmaxF32",
  "expSumF32",
  "attentionF32",
  "attentionBf16",
  "attendRowsF32",
  "attendRowsBf16",
  "attentionCausalF32",
  "attentionCausalBf16",
  "sparqScoresF32",
  "sparqScoresBf16",
  "sparqScoresStridedF32",
  "sparqScoresStridedBf16",
  "topK",
  "packBf16",
  "storeColumnF32",
  "storeColumnBf16",
  "matmulBackwardInput",
  "matmulBackwardWeight",
  "rmsnormForward",
  "rmsnormBackward",
  "ropeInterleavedBackward",
  "ropeHalvesBackward",
  "swigluBackward",
  "embeddingBackward",
  "attentionForward",
  "attentionBackwardPV",
  "attentionBackwardQK",
  "crossEntropy",
  "adamw",
  "sumSquares",
  "scale",
] as const satisfies readonly KernelName[];

// Fails to compile if a Kernels method is missing from the list above.
type Missing = Exclude<KernelName, (typeof KERNEL_NAMES)[number]>;
const allListed: Missing extends never ? true : Missing = true;
void allListed;

let cachedModule: WebAssembly.Module | undefined;

/** The path of build/kernels.wasm: up from this file to the directory holding package.json. */
export function kernelWasmPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return join(dir, "build", "kernels.wasm");
}

/** The path of build/kernels.wasm, or a KvslimError saying how to build it. */
function existingWasmPath(): string {
  const path = kernelWasmPath();
  if (!existsSync(path)) throw new KvslimError(`build/kernels.wasm not found at ${path}; run \`npm run build\``);
  return path;
}

/** The compiled kernel module (compiled on first use, then cached for the process). */
export function getKernelModule(): WebAssembly.Module {
  cachedModule ??= new WebAssembly.Module(readFileSync(existingWasmPath()));
  return cachedModule;
}

/** Instantiates the kernels over `memory` (synchronously; fine for a module this small). */
export function loadWasmKernelsSync(
  memory: WebAssembly.Memory,
  module: WebAssembly.Module = getKernelModule(),
): Kernels {
  const instance = new WebAssembly.Instance(module, importsFor(memory));
  const exports = instance.exports as Record<string, unknown>;

  const staticDataEnd = (exports.staticDataEnd as () => number)() >>> 0;
  if (staticDataEnd > RESERVED) {
    throw new Error(
      `kernels.wasm static data ends at ${staticDataEnd}, past the ${RESERVED} bytes the arena reserves for it`,
    );
  }
  const kernels: Partial<Record<KernelName, unknown>> = {};
  for (const name of KERNEL_NAMES) {
    const fn = exports[name];
    if (typeof fn !== "function") {
      throw new KvslimError(`build/kernels.wasm has no export ${name}; it is stale, run \`npm run build\``);
    }
    kernels[name] = fn;
  }
  return kernels as Kernels;
}

/** Loads the kernels over `memory`, compiling the module asynchronously the first time. */
export async function loadWasmKernels(memory: WebAssembly.Memory): Promise<Kernels> {
  if (cachedModule === undefined) {
    const module = await WebAssembly.compile(await readFile(existingWasmPath()));
    cachedModule ??= module;
  }
  return loadWasmKernelsSync(memory, cachedModule);
}

/**
 * The module imports only env.memory (AssemblyScript's stub runtime, --noAssert, no throws).
 * env.abort is provided anyway so a debug build with assertions still links; it throws.
 */
function importsFor(memory: WebAssembly.Memory): WebAssembly.Imports {
  return {
    env: {
      memory,
      abort(message: number, file: number, line: number, column: number): never {
        const text = `${readAsString(memory, message)} at ${readAsString(memory, file)}:${line}:${column}`;
        throw new Error(`kernels.wasm aborted: ${text}`);
      },
    },
  };
}

/** An AssemblyScript string (UTF-16, byte length at ptr - 4) out of memory. */
function readAsString(memory: WebAssembly.Memory, ptr: number): string {
  if (ptr === 0) return "(null)";
  const bytes = new Uint32Array(memory.buffer, ptr - 4, 1)[0];
  return String.fromCharCode(...new Uint16Array(memory.buffer.slice(ptr, ptr + bytes)));
}
