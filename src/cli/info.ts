/**
 * `kvslim info MODEL`: what a model file holds and what it costs: architecture, parameters, dtypes,
 * KV bytes per token, and how many tokens × sequences fit in a memory budget (the question CLA answers).
 * Reads headers only.
 */
import type { Command } from "commander";
import { formatBytes } from "../errors.js";
import { derive, attentionName, kvBytesPerToken } from "../model/config.js";
import { MAX_MEMORY } from "../memory/arena.js";
import { DENSE_LAYOUT } from "../kvcache/cache.js";
import { planMemory, resolveThreads } from "../model/model.js";
import { openModelSource } from "../model/source.js";
import { checkTensors } from "../model/weights.js";
import { intOption, parseBytes, threadsOption } from "./options.js";

export function registerInfo(program: Command): void {
  program
    .command("info")
    .description("describe a model: architecture, parameters, dtypes, KV bytes/token, what fits in memory")
    .argument("<model>", "a .gguf file or a directory with config.json + model.safetensors + tokenizer.json")
    .option("--memory <size>", "memory budget to fit weights + KV caches into (e.g. 2GiB)", parseBytes)
    .option("--context <n>", "context length per sequence for the fit (default: the model's)", intOption("--context", 1))
    .option("--json", "print JSON instead of text")
    .option(...threadsOption)
    .action((modelPath: string, opts: { memory?: number; context?: number; json?: boolean; threads?: number }) => {
      const source = openModelSource(modelPath);
      const specs = checkTensors(source);
      const c = source.config;
      const d = derive(c);
      let params = 0;
      const byDtype = new Map<string, number>();
      for (const spec of specs) {
        const n = spec.shape.reduce((a, b) => a * b, 1);
        params += n;
        const t = source.tensors.get(spec.name)!;
        byDtype.set(t.type, (byDtype.get(t.type) ?? 0) + n);
      }
      const context = opts.context ?? c.contextLength;
      const plan = planMemory(source, specs, Math.min(context, c.contextLength), 0, DENSE_LAYOUT, resolveThreads(opts.threads));
      const kvF32 = kvBytesPerToken(c, 4);
      const budget = opts.memory ?? MAX_MEMORY;
      const forCache = budget - plan.weights - plan.runState;
      const fitTokens = Math.max(0, Math.floor(forCache / kvF32));
      const info = {
        name: source.name,
        format: source.format,
        architecture: c.architecture,
        attention: attentionName(c),
        parameters: params,
        dtypes: Object.fromEntries([...byDtype].map(([k, v]) => [k, v])),
        layers: c.nLayers,
        dModel: c.dModel,
        heads: c.nHeads,
        kvHeads: c.nKvHeads,
        headDim: c.headDim,
        ffnDim: c.ffnDim,
        vocabSize: c.vocabSize,
        contextLength: c.contextLength,
        ropeTheta: c.ropeTheta,
        kvSource: c.kvSource,
        kvProducers: d.producers.length,
        kvBytesPerToken: { f32: kvF32, "16-bit": kvBytesPerToken(c, 2) },
        weightBytes: plan.weights,
        activationBytes: plan.runState,
        fit: { budget, tokens: fitTokens, sequences: Math.floor(fitTokens / context), context },
      };
      if (opts.json) {
        process.stdout.write(JSON.stringify(info, null, 2) + "\n");
        return;
      }
      const lines = [
        `model         ${info.name} (${info.format})`,
        `architecture  ${c.architecture}, ${info.attention}: ${c.nLayers} layers, d_model ${c.dModel}, ${c.nHeads} heads × ${c.headDim}, ${c.nKvHeads} KV heads, FFN ${c.ffnDim}, vocab ${c.vocabSize}`,
        `parameters    ${(params / 1e6).toFixed(2)} M (${[...byDtype].map(([k, v]) => `${k} ${(v / 1e6).toFixed(2)} M`).join(", ")}), ${formatBytes(plan.weights)} in memory`,
        `context       ${c.contextLength} trained, RoPE theta ${c.ropeTheta}${c.ropeScaling ? " (Llama-3 scaling)" : ""}`,
        `KV layout     ${d.producers.length} of ${c.nLayers} layers hold K/V${d.producers.length < c.nLayers ? ` (CLA: kv_source ${c.kvSource.join(" ")})` : ""}`,
        `KV bytes      ${kvF32} B/token at f32 (kvslim's cache), ${kvBytesPerToken(c, 2)} B/token at 16-bit (the papers' unit)`,
        `fits in ${formatBytes(budget)}${opts.memory ? "" : " (the WebAssembly limit)"}: ${fitTokens.toLocaleString("en-US")} tokens of f32 KV = ${info.fit.sequences} sequences × ${context} tokens` +
          (forCache <= 0 ? " (the weights alone exceed the budget)" : ""),
      ];
      process.stdout.write(lines.join("\n") + "\n");
    });
}
