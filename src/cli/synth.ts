/**
 * `kvslim synth`: write a model with random weights in a named shape (GGUF or a Hugging Face
 * directory). For benchmarks and smoke tests; the text it generates is noise.
 */
import type { Command } from "commander";
import { UsageError } from "../errors.js";
import { FILE_TYPES, isFileType } from "../model/file-types.js";
import { PRESETS, isPreset } from "../model/presets.js";
import { randomWeights, syntheticVocab, writeGgufModel, writeHfModel } from "../model/synthetic.js";
import { checkOutput, pathOption, seedOption } from "./options.js";

export function registerSynth(program: Command): void {
  program
    .command("synth")
    .description("write a random-weight model of a named shape (for benchmarks and smoke tests)")
    .requiredOption("-o, --out <path>", "output: a .gguf file, or a directory for safetensors", pathOption("--out"))
    .option("--preset <name>", `shape: ${Object.keys(PRESETS).join(", ")}`, "tiny")
    .option(
      "--dtype <type>",
      `weight type: ${Object.keys(FILE_TYPES).join(", ")} (a directory takes f32, f16 or bf16; the others are GGUF ` +
        `file types, mixed as llama-quantize mixes them)`,
      "f32",
    )
    .option(...seedOption("random seed"), 1)
    .option("--force", "overwrite an existing output")
    .action((opts: { out: string; preset: string; dtype: string; seed: number; force?: boolean }) => {
      if (!isPreset(opts.preset))
        throw new UsageError(
          `--preset: unknown preset "${opts.preset}"; expected one of ${Object.keys(PRESETS).join(", ")}`,
        );
      const dtype = opts.dtype;
      if (!isFileType(dtype))
        throw new UsageError(`--dtype expects one of ${Object.keys(FILE_TYPES).join(", ")}, got "${dtype}"`);
      const inDirectory = dtype === "f32" || dtype === "f16" || dtype === "bf16";
      if (!inDirectory && !opts.out.endsWith(".gguf")) {
        throw new UsageError(
          `--dtype ${dtype} needs a .gguf --out (safetensors holds only f32, f16 and bf16), got the directory ` +
            `"${opts.out}"; use f32, f16 or bf16 there`,
        );
      }
      checkOutput("--out", opts.out, opts.force ?? false);
      const config = PRESETS[opts.preset]();
      const weights = randomWeights(config, { seed: opts.seed });
      const vocab = syntheticVocab(config.vocabSize, opts.seed);
      if (opts.out.endsWith(".gguf")) {
        writeGgufModel(opts.out, config, weights, vocab, dtype, opts.force);
      } else if (inDirectory) {
        writeHfModel(opts.out, config, weights, vocab, dtype, opts.force);
      }
      process.stderr.write(`wrote ${opts.out} (${opts.preset}, ${dtype}, seed ${opts.seed})\n`);
    });
}
