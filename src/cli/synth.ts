/**
 * `kvslim synth`: write a model with random weights in a named shape (GGUF or a Hugging Face
 * directory). For benchmarks and smoke tests; the text it generates is noise.
 */
import type { Command } from "commander";
import { UsageError } from "../errors.js";
import { DTYPES, isDType, type DType } from "../memory/dtype.js";
import { PRESETS, isPreset } from "../model/presets.js";
import { randomWeights, syntheticVocab, writeGgufModel, writeHfModel } from "../model/synthetic.js";
import { checkOutput, pathOption, seedOption } from "./options.js";

export function registerSynth(program: Command): void {
  program
    .command("synth")
    .description("write a random-weight model of a named shape (for benchmarks and smoke tests)")
    .requiredOption("-o, --out <path>", "output: a .gguf file, or a directory for safetensors", pathOption("--out"))
    .option("--preset <name>", `shape: ${Object.keys(PRESETS).join(", ")}`, "tiny")
    .option("--dtype <dtype>", `matrix dtype: ${DTYPES.join(", ")} (q8_0 GGUF only)`, "f32")
    .option(...seedOption("random seed"), 1)
    .option("--force", "overwrite an existing output")
    .action((opts: { out: string; preset: string; dtype: string; seed: number; force?: boolean }) => {
      if (!isPreset(opts.preset))
        throw new UsageError(
          `--preset: unknown preset "${opts.preset}"; expected one of ${Object.keys(PRESETS).join(", ")}`,
        );
      if (!isDType(opts.dtype))
        throw new UsageError(`--dtype expects one of ${DTYPES.join(", ")}, got "${opts.dtype}"`);
      if (opts.dtype === "q8_0" && !opts.out.endsWith(".gguf")) {
        throw new UsageError(
          `--dtype q8_0 needs a .gguf --out (safetensors has no q8_0), got the directory "${opts.out}"; use f32, f16 or bf16 there`,
        );
      }
      checkOutput("--out", opts.out, opts.force ?? false);
      const config = PRESETS[opts.preset]();
      const weights = randomWeights(config, { seed: opts.seed });
      const vocab = syntheticVocab(config.vocabSize, opts.seed);
      if (opts.out.endsWith(".gguf")) {
        writeGgufModel(opts.out, config, weights, vocab, opts.dtype, opts.force);
      } else {
        writeHfModel(opts.out, config, weights, vocab, opts.dtype as Exclude<DType, "q8_0">, opts.force); // q8_0 refused above
      }
      process.stderr.write(`wrote ${opts.out} (${opts.preset}, ${opts.dtype}, seed ${opts.seed})\n`);
    });
}
