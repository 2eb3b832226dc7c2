/**
 * `npm run bench [suite] [flags]`: one entry for the benchmarks, each a module that reads its own flags.
 *
 *   npm run bench                        # decode: whole-model prefill and decode, kvslim vs llama.cpp
 *   npm run bench -- train               # training: GEMMs and whole steps at 1 thread and the cores
 *   npm run bench -- kernels             # every kernel, WASM vs the TypeScript reference
 *   npm run bench -- threads             # the cost of a job on the worker pool
 *   npm run bench -- serve               # the server: streams decoded together vs llama.cpp, conversations per KV memory
 *
 * Flags after the suite go to it (e.g. `npm run bench -- train --preset tiny-mqa --steps 5`).
 */
const SUITES = ["decode", "train", "kernels", "threads", "serve"] as const;

const first = process.argv[2];
const suite = first !== undefined && !first.startsWith("-") ? first : "decode";
if (!(SUITES as readonly string[]).includes(suite)) {
  process.stderr.write(
    `error: unknown benchmark "${suite}"; expected one of ${SUITES.join(", ")} (or flags for decode)\n`,
  );
  process.exit(2);
}
if (suite === first) process.argv.splice(2, 1); // the suite's own flags start at argv[2]
await import(`./${suite}.js`);
