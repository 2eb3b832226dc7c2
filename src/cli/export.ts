/**
 * `kvslim export -m DIR -o model.gguf [--dtype f32|f16|bf16|q8_0|q4_k_m|…] [--force]`: convert a Hugging Face llama
 * directory (what kvslim's training writes) to GGUF for llama.cpp (src/io/export-gguf.ts). CLA models
 * are refused: GGUF has no cross-layer K/V sharing.
 */
import fs from "node:fs";
import type { Command } from "commander";
import { formatBytes, UsageError } from "../errors.js";
import { EXPORT_DTYPES, exportGguf, isExportDType } from "../model/export-gguf.js";
import { checkOutput, pathOption } from "./options.js";

interface ExportFlags {
  model: string;
  out: string;
  dtype: string;
  force?: boolean;
}

export function registerExport(program: Command): void {
  program
    .command("export")
    .description(
      "convert a Hugging Face llama directory (config.json + model.safetensors + tokenizer.json) to GGUF for llama.cpp",
    )
    .requiredOption("-m, --model <dir>", "the model directory", pathOption("--model"))
    .requiredOption("-o, --out <file>", "the .gguf file to write", pathOption("--out"))
    .option(
      "--dtype <type>",
      `file type: ${EXPORT_DTYPES.join(", ")} (k-quant types are mixed as llama-quantize mixes them; vectors stay f32)`,
      "f32",
    )
    .option("--force", "overwrite an existing output file")
    .action((flags: ExportFlags) => {
      if (!isExportDType(flags.dtype))
        throw new UsageError(`--dtype expects ${EXPORT_DTYPES.join(", ")}, got "${flags.dtype}"`);
      if (!fs.existsSync(flags.model)) {
        throw new UsageError(
          `--model expects a Hugging Face model directory (config.json + model.safetensors + tokenizer.json); ${flags.model} does not exist`,
        );
      }
      checkOutput("--out", flags.out, flags.force ?? false);
      const s = exportGguf(flags.model, flags.out, { dtype: flags.dtype, force: flags.force });
      const c = s.config;
      process.stderr.write(
        `wrote ${s.path} (${c.architecture}, ${c.nLayers} layers, d_model ${c.dModel}, vocab ${c.vocabSize}, ` +
          `${s.dtype}, ${s.tensors} tensors, ${formatBytes(s.bytes)}; tokenizer pre "${s.pre}")\n`,
      );
    });
}
