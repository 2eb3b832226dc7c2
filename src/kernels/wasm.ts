/**
 * Loads the WebAssembly SIMD kernels (assembly/, built to build/kernels.wasm and
 * build/kernels-relaxed.wasm) over a memory.
 *
 * Each build's module is compiled once per process and cached; the compiled module goes to worker
 * threads, which instantiate it over the same shared memory. The kernels object
 * is the instance's exports themselves (no wrapper closures on the hot path).
 */
import { existsSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { fileURLToPath } from "node:url";
import { KvslimError, UnsupportedError, UsageError } from "../errors.js";
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
  "sparqAlpha",
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
  "quantizeQ8_1",
  "quantizeQ8_K",
  "matvecQ4_0",
  "matvecQ4_1",
  "matvecQ5_0",
  "matvecQ5_1",
  "matvecQ4_K",
  "matvecQ5_K",
  "matvecQ6_K",
  "matmulQ4_0",
  "matmulQ4_1",
  "matmulQ5_0",
  "matmulQ5_1",
  "matmulQ4_K",
  "matmulQ5_K",
  "matmulQ6_K",
  "getRowQ4_0",
  "getRowQ4_1",
  "getRowQ5_0",
  "getRowQ5_1",
  "getRowQ4_K",
  "getRowQ5_K",
  "getRowQ6_K",
  "quantizeQ4_0",
  "attentionQ8_0",
  "attentionQ4_0",
  "attendRowsQ8_0",
  "attendRowsQ4_0",
  "attentionCausalQ8_0",
  "attentionCausalQ4_0",
  "sparqScoresQ8_0T",
  "sparqScoresQ4_0T",
  "sparqScoresStridedQ8_0",
  "sparqScoresStridedQ4_0",
] as const satisfies readonly KernelName[];

// Fails to compile if a Kernels method is missing from the list above.
type Missing = Exclude<KernelName, (typeof KERNEL_NAMES)[number]>;
const allListed: Missing extends never ? true : Missing = true;
void allListed;

/**
 * The two builds of the same AssemblyScript sources: "portable" (WebAssembly SIMD) and "relaxed"
 * (plus relaxed SIMD: fused multiply-adds, 8-bit dot products), which runs where the runtime
 * validates it. Results differ between builds only by rounding; within one build they do not depend
 * on the thread count.
 */
export type KernelBuild = "portable" | "relaxed";
export const KERNEL_BUILDS: readonly KernelBuild[] = ["portable", "relaxed"];

const modules = new Map<KernelBuild, WebAssembly.Module>();
const buildOf = new WeakMap<object, KernelBuild>();
const moduleOf = new WeakMap<object, WebAssembly.Module>();
let relaxedSupport: boolean | undefined;

/** The directory holding kvslim's package.json, up from this file. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return dir;
}

/** The path of a build's module: build/kernels.wasm (portable) or build/kernels-relaxed.wasm. */
export function kernelWasmPath(build: KernelBuild = "portable"): string {
  return join(packageRoot(), "build", build === "portable" ? "kernels.wasm" : "kernels-relaxed.wasm");
}

/** The path of a build's module, or a KvslimError saying how to build it. */
function existingWasmPath(build: KernelBuild): string {
  const path = kernelWasmPath(build);
  if (!existsSync(path)) throw new KvslimError(`${basename(path)} not found at ${path}; run \`npm run build\``);
  return path;
}

/**
 * Whether this runtime runs the relaxed build. Node 20 has relaxed SIMD behind a V8 flag, which is
 * turned on here (before any relaxed module is compiled; worker threads share the process's flags);
 * Node ≥ 22 and current browsers have it on already.
 */
export function relaxedSimdSupported(): boolean {
  if (relaxedSupport !== undefined) return relaxedSupport;
  const path = kernelWasmPath("relaxed");
  if (!existsSync(path)) return (relaxedSupport = false);
  const bytes = readFileSync(path);
  if (!WebAssembly.validate(bytes)) setFlagsFromString("--experimental-wasm-relaxed-simd");
  return (relaxedSupport = WebAssembly.validate(bytes));
}

/**
 * The build to run: `requested`, else the KVSLIM_KERNELS environment variable, else relaxed where the
 * runtime supports it. Asking for relaxed where it is not supported is an error, not a fallback.
 */
export function chooseKernelBuild(requested?: KernelBuild): KernelBuild {
  const fromEnv = process.env.KVSLIM_KERNELS;
  let build = requested;
  if (build === undefined && fromEnv !== undefined && fromEnv !== "") {
    if (!(KERNEL_BUILDS as readonly string[]).includes(fromEnv)) {
      throw new UsageError(`KVSLIM_KERNELS must be one of ${KERNEL_BUILDS.join(", ")}, got ${JSON.stringify(fromEnv)}`);
    }
    build = fromEnv as KernelBuild;
  }
  if (build === undefined) return relaxedSimdSupported() ? "relaxed" : "portable";
  if (build === "relaxed" && !relaxedSimdSupported()) {
    throw new UnsupportedError(
      `the relaxed-SIMD kernels were asked for${requested === undefined ? " (KVSLIM_KERNELS=relaxed)" : ""} ` +
        `but this runtime (Node ${process.versions.node}) does not validate ${basename(kernelWasmPath("relaxed"))}; ` +
        `use the portable build`,
    );
  }
  return build;
}

/** One line saying what a build is, for `kvslim info` and the benchmarks. */
export function describeKernelBuild(build: KernelBuild): string {
  return build === "relaxed"
    ? "relaxed SIMD (fused multiply-add, 8-bit dot products)"
    : `portable SIMD${relaxedSimdSupported() ? " (forced; this runtime also runs relaxed SIMD)" : " (this runtime has no relaxed SIMD)"}`;
}

/** A build's compiled module (compiled on first use, then cached for the process). */
export function getKernelModule(build: KernelBuild = chooseKernelBuild()): WebAssembly.Module {
  let module = modules.get(build);
  if (module === undefined) {
    if (build === "relaxed") relaxedSimdSupported();
    module = new WebAssembly.Module(readFileSync(existingWasmPath(build)));
    modules.set(build, module);
    buildOf.set(module, build);
  }
  return module;
}

/** Which build a kernels object (from this file) runs, or undefined for other kernels (the reference twin). */
export function kernelBuildOf(kernels: Kernels): KernelBuild | undefined {
  return buildOf.get(kernels);
}

/** The module a kernels object was instantiated from (to hand to worker threads), if it is WebAssembly. */
export function kernelModuleOf(kernels: Kernels): WebAssembly.Module | undefined {
  return moduleOf.get(kernels);
}

/** Instantiates the kernels over `memory` (synchronously; fine for a module this small). */
export function loadWasmKernelsSync(
  memory: WebAssembly.Memory,
  moduleOrBuild: WebAssembly.Module | KernelBuild = getKernelModule(),
): Kernels {
  const module = moduleOrBuild instanceof WebAssembly.Module ? moduleOrBuild : getKernelModule(moduleOrBuild);
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
      throw new KvslimError(`the kernel module has no export ${name}; it is stale, run \`npm run build\``);
    }
    kernels[name] = fn;
  }
  moduleOf.set(kernels, module);
  const build = buildOf.get(module);
  if (build !== undefined) buildOf.set(kernels, build);
  return kernels as Kernels;
}

/** Loads the kernels over `memory`, compiling the build's module asynchronously the first time. */
export async function loadWasmKernels(memory: WebAssembly.Memory, requested?: KernelBuild): Promise<Kernels> {
  const build = chooseKernelBuild(requested);
  let module = modules.get(build);
  if (module === undefined) {
    const compiled = await WebAssembly.compile(await readFile(existingWasmPath(build)));
    module = modules.get(build) ?? compiled;
    modules.set(build, module);
    buildOf.set(module, build);
  }
  return loadWasmKernelsSync(memory, module);
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
