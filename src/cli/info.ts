/**
 * `kvslim info MODEL`: what a model file holds and what it costs: architecture, parameters, dtypes,
 * KV bytes per token, and how many tokens × sequences fit in a memory budget (the question CLA answers).
 * Reads headers only.
 */
import type { Command } from "commander";
import { formatBytes } from "../errors.js";
import { derive, attentionName, kvBytesPerToken } from "../model/config.js";
import { MAX_MEMORY } from "../memory/arena.js";
import { DENSE_LAYOUT, KV_DTYPES, kvBytesPer, kvDtypeProblem, type KvDType } from "../kvcache/cache.js";
import { planMemory, resolveThreads } from "../model/model.js";
import { openModelSource } from "../model/source.js";
import { checkTensors } from "../model/weights.js";
import { chooseKernelBuild, describeKernelBuild } from "../kernels/wasm.js";
import { trainingRecord, type TrainingRecord } from "../train/checkpoint.js";
import { isTrainPreset } from "../train/presets.js";
import { runShape, type TrainOptions } from "../train/trainer.js";
import { bytesOption, choiceOption, intOption, threadsOption } from "./options.js";
import { checkKvFlags } from "./attention-options.js";
import { retrievalText } from "./train.js";

export function registerInfo(program: Command): void {
  program
    .command("info")
    .description("describe a model: architecture, parameters, dtypes, KV bytes/token, what fits in memory")
    .argument("<model>", "a .gguf file or a directory with config.json + model.safetensors + tokenizer.json")
    // At most one WebAssembly memory: a model's weights, activations and caches cannot use more.
    .option(
      "--memory <size>",
      `memory budget to fit weights + KV caches into (e.g. 2GiB; at most ${formatBytes(MAX_MEMORY)})`,
      bytesOption("--memory", MAX_MEMORY),
    )
    .option(
      "--context <n>",
      "context length per sequence for the fit (default: the model's)",
      intOption("--context", 1),
    )
    .option(
      "--kv-dtype <dtype>",
      `KV cache storage for the fit: ${KV_DTYPES.join(", ")}`,
      choiceOption("--kv-dtype", KV_DTYPES),
      "f32",
    )
    .option("--json", "print JSON instead of text")
    .option(...threadsOption)
    .action(
      (
        modelPath: string,
        opts: { memory?: number; context?: number; json?: boolean; threads?: number; kvDtype: string },
      ) => {
        const source = openModelSource(modelPath);
        for (const note of source.notes) process.stderr.write(`note: ${note}\n`);
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
        const plan = planMemory(
          source,
          specs,
          Math.min(context, c.contextLength),
          0,
          DENSE_LAYOUT,
          resolveThreads(opts.threads),
        );
        const kvDtype = opts.kvDtype as KvDType;
        checkKvFlags(kvDtype, "auto", c.headDim);
        // Every dtype this model's head dim allows (the quantised ones need whole blocks of 32).
        const perToken = Object.fromEntries(
          KV_DTYPES.filter((t) => kvDtypeProblem(t, c.headDim) === null).map((t) => [
            t,
            kvBytesPerToken(c, kvBytesPer(t)),
          ]),
        ) as Partial<Record<KvDType, number>>;
        const budget = opts.memory ?? MAX_MEMORY;
        const forCache = budget - plan.weights - plan.runState;
        const fitTokens = Math.max(0, Math.floor(forCache / perToken[kvDtype]!));
        const record = trainingRecord(modelPath);
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
          kvBytesPerToken: { ...perToken, "16-bit": kvBytesPerToken(c, 2) },
          weightBytes: plan.weights,
          activationBytes: plan.runState,
          fit: { budget, kvDtype, tokens: fitTokens, sequences: Math.floor(fitTokens / context), context },
          kernels: chooseKernelBuild(),
          ...(record === null ? {} : { training: trainingSummary(record) }),
        };
        if (opts.json) {
          process.stdout.write(JSON.stringify(info, null, 2) + "\n");
          return;
        }
        const lines = [
          `model         ${info.name} (${info.format})`,
          `architecture  ${c.architecture}, ${info.attention}: ${c.nLayers} layers, d_model ${c.dModel}, ${c.nHeads} heads × ${c.headDim}, ${c.nKvHeads} KV heads, FFN ${c.ffnDim}, vocab ${c.vocabSize}`,
          `parameters    ${(params / 1e6).toFixed(2)} M (${[...byDtype].map(([k, v]) => `${k} ${(v / 1e6).toFixed(2)} M`).join(", ")}), ${formatBytes(plan.weights)} in memory`,
          `context       ${c.contextLength} trained, RoPE theta ${c.ropeTheta}${c.ropeScaling || source.tensors.has("rope_freqs.weight") ? " (Llama-3 scaling)" : ""}`,
          `KV layout     ${d.producers.length} of ${c.nLayers} layers hold K/V${d.producers.length < c.nLayers ? ` (CLA: kv_source ${c.kvSource.join(" ")})` : ""}`,
          `KV bytes      ${Object.entries(perToken)
            .map(([t, n]) => `${n} B/token at ${t}`)
            .join(
              ", ",
            )} (16-bit is the papers' unit; q8_0 and q4_0 count their scales)${perToken.q8_0 === undefined ? `; no q8_0/q4_0: head dim ${c.headDim} is not a multiple of 32` : ""}`,
          `fits in ${formatBytes(budget)}${opts.memory ? "" : " (the WebAssembly limit)"}: ${fitTokens.toLocaleString("en-US")} tokens of ${kvDtype} KV = ${info.fit.sequences} sequences × ${context} tokens` +
            (forCache <= 0 ? " (the weights alone exceed the budget)" : ""),
          `kernels       ${describeKernelBuild(info.kernels)}`,
        ];
        if (info.training !== undefined) lines.push(...trainingLines(info.training));
        process.stdout.write(lines.join("\n") + "\n");
      },
    );
}

/** A training run's state for `info`: steps and tokens done and planned, wall time, and its evaluations. */
function trainingSummary(r: TrainingRecord) {
  const o = r.state.options as Partial<TrainOptions>;
  const shape =
    o.preset !== undefined && isTrainPreset(o.preset) && o.tokens !== undefined
      ? runShape({ ...o, preset: o.preset, tokens: o.tokens })
      : null;
  return {
    run: r.runDir,
    checkpoint: r.checkpoint,
    preset: o.preset ?? null,
    seed: o.seed ?? null,
    step: r.state.step,
    steps: shape?.steps ?? null,
    tokensSeen: r.state.tokensSeen,
    tokens: o.tokens ?? null,
    batch: shape?.batch ?? null,
    seqLen: shape?.seqLen ?? null,
    elapsedSeconds: r.state.elapsedSeconds,
    data: o.data ?? null,
    evals: r.evals,
  };
}

function trainingLines(t: ReturnType<typeof trainingSummary>): string[] {
  const millions = (n: number) =>
    n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e4 ? `${(n / 1e3).toFixed(1)}k` : String(n);
  const shape = t.batch !== null && t.seqLen !== null ? `, ${t.batch} × ${t.seqLen} tokens a step` : "";
  const lines = [
    `training      ${t.preset ?? "?"} seed ${t.seed ?? "?"}: step ${t.step}${t.steps === null ? "" : ` of ${t.steps}`}, ` +
      `${millions(t.tokensSeen)}${t.tokens === null ? "" : ` of ${millions(t.tokens)}`} tokens${shape}, ${(t.elapsedSeconds / 3600).toFixed(2)} h (checkpoint ${t.checkpoint})`,
  ];
  const last = t.evals.at(-1);
  if (last === undefined) return [...lines, "evaluations   none logged yet"];
  const best = t.evals.reduce((a, b) => (b.valLoss < a.valLoss ? b : a));
  const retrieval = retrievalText({
    recalled: last.recalled ?? 0,
    asked: last.asked ?? 0,
    firstCopyLoss: last.copyLoss?.[0] ?? NaN,
    secondCopyLoss: last.copyLoss?.[1] ?? NaN,
    midFirstCopyLoss: last.midCopyLoss?.[0] ?? NaN,
    midSecondCopyLoss: last.midCopyLoss?.[1] ?? NaN,
  });
  lines.push(
    `last eval     step ${last.step}: validation loss ${last.valLoss.toFixed(3)}${retrieval}` +
      (best !== last ? ` (best ${best.valLoss.toFixed(3)} at step ${best.step})` : "") +
      ` · ${t.evals.length} evaluation${t.evals.length === 1 ? "" : "s"} in log.jsonl (all of them: --json)`,
  );
  return lines;
}
