/**
 * `kvslim synth`: write a model with random weights in a named shape (GGUF or a Hugging Face
 * directory). For benchmarks and smoke tests; the text it generates is noise.
 */
import fs from "node:fs";
import type { Command } from "commander";
import { FileExistsError, UsageError } from "../errors.js";
import { isDType } from "../memory/dtype.js";
import { PRESETS, isPreset } from "../model/presets.js";
import { randomWeights, syntheticVocab, writeGgufModel, writeHfModel } from "../model/synthetic.js";
import { intOption } from "./options.js";

export function registerSynth(program: Command): void {
  program
    .command("synth")
    .description("write a random-weight model of a named shape (for benchmarks and smoke tests)")
    .requiredOption("-o, --out <path>", "output: a .gguf file, or a directory for safetensors")
    .option("--preset <name>", `shape: ${Object.keys(PRESETS).join(", ")}`, "tiny")
    .option("--dtype <dtype>", "matrix dtype: f32, f16, bf16, q8_0 (q8_0 GGUF only)", "f32")
    .option("--seed <n>", "random seed", intOption("--seed", 0), 1)
    .option("--force", "overwrite an existing output")
    .action((opts: { out: string; preset: string; dtype: string; seed: number; force?: boolean }) => {
      if (!isPreset(opts.preset)) throw new UsageError(`unknown preset "${opts.preset}"; presets: ${Object.keys(PRESETS).join(", ")}`);
      if (!isDType(opts.dtype)) throw new UsageError(`--dtype expects f32, f16, bf16 or q8_0, got "${opts.dtype}"`);
      const config = PRESETS[opts.preset]();
      const weights = randomWeights(config, { seed: opts.seed });
      const vocab = syntheticVocab(config.vocabSize, opts.seed);
      if (opts.out.endsWith(".gguf")) {
        writeGgufModel(opts.out, config, weights, vocab, opts.dtype, opts.force);
      } else {
        if (opts.dtype === "q8_0") throw new UsageError("safetensors has no q8_0; use f32, f16 or bf16, or write a .gguf");
        if (fs.existsSync(opts.out) && !opts.force) throw new FileExistsError(`${opts.out} exists; pass --force to overwrite`);
        writeHfModel(opts.out, config, weights, vocab, opts.dtype, opts.force);
      }
      process.stderr.write(`wrote ${opts.out} (${opts.preset}, ${opts.dtype}, seed ${opts.seed})\n`);
    });
}
