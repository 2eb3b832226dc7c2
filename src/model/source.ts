/**
 * Opening a model from what a user points at: a .gguf file, or a directory with config.json,
 * model.safetensors (or a sharded index) and tokenizer.json (Hugging Face layout; kvslim's own
 * checkpoints use it too). Reads headers only; tensor data is read later, straight into the arena.
 */
import fs from "node:fs";
import path from "node:path";
import { FormatError, UsageError, shownValue } from "../errors.js";
import { readGguf } from "../io/gguf.js";
import { readSafetensorsModel } from "../io/safetensors.js";
import type { TensorInfo } from "../io/tensor-file.js";
import { loadHfTokenizer, tokenizerFromGguf, type TextTokenizer } from "../tokenizer/tokenizer.js";
import type { ModelConfig } from "./config.js";
import { configFromGguf, configFromHf } from "./files.js";
import { expectedTensors } from "./tensor-names.js";

export interface ModelSource {
  path: string;
  format: "gguf" | "safetensors";
  config: ModelConfig;
  /** Tensors under kvslim's canonical (GGUF) names. */
  tensors: Map<string, TensorInfo>;
  /** True when Q/K rows are in HF's halves order and must be interleaved at load (HF llama). */
  permuteQk: boolean;
  tokenizer: TextTokenizer;
  name: string;
  /** What was accepted but is worth telling the user (one line each), e.g. a special token id outside the vocabulary. */
  notes: string[];
}

export function openModelSource(target: string): ModelSource {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(target);
  } catch {
    throw new UsageError(`model path ${target} does not exist; expected a .gguf file or a model directory`);
  }
  const source = stat.isDirectory() ? openHfDirectory(target) : openGgufFile(target);
  const { tokenizer, config } = source;
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new FormatError(
      `${target}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's embedding has ${config.vocabSize} rows; ` +
        `every token id needs a row (is the tokenizer from another model?)`,
    );
  }
  return source;
}

function openGgufFile(file: string): ModelSource {
  const g = readGguf(path.resolve(file));
  const config = configFromGguf(g);
  const name = g.metadata.get("general.name");
  if (name !== undefined && typeof name !== "string") {
    throw new FormatError(`${file}: metadata key general.name must be a string, found ${shownValue(name)}`);
  }
  const notes: string[] = [];
  return {
    path: file,
    format: "gguf",
    config,
    tensors: new Map(g.tensors.map((t) => [t.name, t])),
    permuteQk: false,
    tokenizer: tokenizerFromGguf(g.metadata, { source: file, notes, types: g.types }),
    name: name ?? path.basename(file),
    notes,
  };
}

function openHfDirectory(dir: string): ModelSource {
  const configPath = path.join(dir, "config.json");
  if (!fs.existsSync(configPath)) {
    throw new FormatError(
      `${dir} has no config.json; a model directory needs config.json, model.safetensors and tokenizer.json`,
    );
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(fs.readFileSync(configPath, "utf8"));
  } catch (e) {
    throw new FormatError(`${configPath} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new FormatError(`${configPath} must hold a JSON object of model settings, found ${shownValue(json)}`);
  }
  const config = configFromHf(json, configPath);
  const st = readSafetensorsModel(path.resolve(dir));
  // Map HF names to canonical names; names kvslim does not know keep their HF name (reported as extra).
  const byHf = new Map(
    expectedTensors({ ...config, kvSource: config.kvSource.map((_, l) => l) }).map((s) => [s.hfName, s.name]),
  );
  const tensors = new Map<string, TensorInfo>();
  for (const t of st.tensors) {
    const canonical = byHf.get(t.name) ?? hfKvNormName(t.name) ?? t.name;
    tensors.set(canonical, { ...t, name: canonical });
  }
  return {
    path: dir,
    format: "safetensors",
    config,
    tensors,
    permuteQk: config.architecture === "llama",
    tokenizer: loadHfTokenizer(dir),
    name:
      typeof json._name_or_path === "string" && json._name_or_path
        ? json._name_or_path
        : path.basename(path.resolve(dir)),
    notes: [],
  };
}

/** The kv-norm tensor name exists only for CLA producers; map it even when the config lacks kv norms (to report it). */
function hfKvNormName(name: string): string | undefined {
  const m = /^model\.layers\.(\d+)\.self_attn\.kv_norm\.weight$/.exec(name);
  return m ? `blk.${m[1]}.attn_kv_norm.weight` : undefined;
}
