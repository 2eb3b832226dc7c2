/**
 * The attention flags shared by generate, bench and eval: one place turns them into an AttentionSpec,
 * refusing combinations that mean nothing (a SparQ flag with --attention h2o, a budget for dense, …).
 */
import type { Command } from "commander";
import {
  ATTENTION_METHODS,
  SPARQ_GROUP_RANKINGS,
  type AttentionSpec,
  type SparqGroupRanking,
} from "../attention/method.js";
import { DEFAULT_SINKS } from "../attention/streaming.js";
import { UsageError } from "../errors.js";
import { KV_DTYPES, kvDtypeProblem, type KvDType } from "../kvcache/cache.js";
import { floatOption, intOption } from "./options.js";
import { KV_ROTATIONS, rotates, type KvRotation } from "../model/model.js";

export interface AttentionFlags {
  attention: string;
  compression?: number;
  sparqR?: number;
  sparqK?: number;
  sparqLocal?: number;
  sparqReallocation?: string;
  sparqLayout?: string;
  sparqGroupRanking?: string;
  kvBudget?: number;
  sinks?: number;
  h2oRecent?: number;
  kvDtype: string;
  kvRotation: string;
}

export function addAttentionOptions(command: Command): Command {
  return command
    .option("--attention <method>", `decode-time attention: ${ATTENTION_METHODS.join(", ")}`, "dense")
    .option(
      "--compression <c>",
      "target KV transfer ratio 1/c (sparq: r = Hd/c, k = S/2c; h2o, streaming: budget = prompt/c)",
      floatOption("--compression", { min: 1 }),
    )
    .option("--sparq-r <r>", "sparq: query components for the approximate scores", intOption("--sparq-r", 1))
    .option("--sparq-k <k>", "sparq: positions fetched per step", intOption("--sparq-k", 1))
    .option("--sparq-local <l>", "sparq: local window always fetched (default k/4)", intOption("--sparq-local", 0))
    .option("--sparq-reallocation <on|off>", "sparq: mean-value reallocation (default on for MHA, off for GQA/MQA)")
    .option("--sparq-layout <double|single>", "sparq: store K twice (fast) or once (strided column reads)")
    .option(
      "--sparq-group-ranking <how>",
      "sparq, GQA/MQA: rank positions by the group's summed approximate logits (default) or probabilities",
    )
    .option("--kv-budget <n>", "h2o, streaming: KV rows kept per head", intOption("--kv-budget", 1))
    .option(
      "--sinks <n>",
      `streaming: first tokens always kept (default ${DEFAULT_SINKS}; StreamingLLM uses 4)`,
      intOption("--sinks", 0),
    )
    .option("--h2o-recent <n>", "h2o: recent window (default budget/4)", intOption("--h2o-recent", 0))
    .option("--kv-dtype <dtype>", `KV cache storage: ${KV_DTYPES.join(", ")}`, "f32")
    .option(
      "--kv-rotation <how>",
      `q8_0 / q4_0 caches: ${KV_ROTATIONS.join(", ")} (auto: Hadamard-rotate Q, K, V when the head dim is a multiple of 64, as llama.cpp does)`,
      "auto",
    );
}

/** --kv-dtype and --kv-rotation against a model of head dim Hd: a UsageError naming the flag if they cannot apply. */
export function checkKvFlags(kvDtype: KvDType, kvRotation: KvRotation, headDim: number): void {
  const problem = kvDtypeProblem(kvDtype, headDim);
  if (problem !== null) throw new UsageError(`--kv-dtype ${kvDtype}: ${problem}`);
  if (kvRotation === "hadamard" && !rotates("auto", kvDtype, headDim))
    throw new UsageError(
      `--kv-rotation hadamard: the Hadamard rotation is for a q8_0 or q4_0 cache with a head dimension that is a multiple of 64; this one is ${kvDtype} with head dimension ${headDim}`,
    );
}

export function kvRotationFrom(flags: AttentionFlags): KvRotation {
  if (!(KV_ROTATIONS as readonly string[]).includes(flags.kvRotation)) {
    throw new UsageError(`--kv-rotation expects one of ${KV_ROTATIONS.join(", ")}, got "${flags.kvRotation}"`);
  }
  return flags.kvRotation as KvRotation;
}

export function kvDtypeFrom(flags: AttentionFlags): KvDType {
  if (!(KV_DTYPES as readonly string[]).includes(flags.kvDtype)) {
    throw new UsageError(`--kv-dtype expects one of ${KV_DTYPES.join(", ")}, got "${flags.kvDtype}"`);
  }
  return flags.kvDtype as KvDType;
}

export function attentionSpecFrom(flags: AttentionFlags): AttentionSpec {
  const method = flags.attention;
  const given = (names: (keyof AttentionFlags)[]) => names.filter((n) => flags[n] !== undefined);
  const refuse = (names: (keyof AttentionFlags)[]) => {
    const bad = given(names);
    if (bad.length > 0) {
      const flag = bad[0].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
      throw new UsageError(`--${flag} does not apply to --attention ${method}`);
    }
  };
  const sparqFlags: (keyof AttentionFlags)[] = [
    "sparqR",
    "sparqK",
    "sparqLocal",
    "sparqReallocation",
    "sparqLayout",
    "sparqGroupRanking",
  ];
  switch (method) {
    case "dense":
      refuse([...sparqFlags, "compression", "kvBudget", "sinks", "h2oRecent"]);
      return { method };
    case "sparq": {
      refuse(["kvBudget", "sinks", "h2oRecent"]);
      const onOff = flags.sparqReallocation;
      if (onOff !== undefined && onOff !== "on" && onOff !== "off")
        throw new UsageError(`--sparq-reallocation expects on or off, got "${onOff}"`);
      const layout = flags.sparqLayout;
      if (layout !== undefined && layout !== "double" && layout !== "single")
        throw new UsageError(`--sparq-layout expects double or single, got "${layout}"`);
      const ranking = flags.sparqGroupRanking;
      if (ranking !== undefined && !(SPARQ_GROUP_RANKINGS as readonly string[]).includes(ranking))
        throw new UsageError(`--sparq-group-ranking expects ${SPARQ_GROUP_RANKINGS.join(" or ")}, got "${ranking}"`);
      if (flags.compression === undefined && (flags.sparqR === undefined || flags.sparqK === undefined)) {
        throw new UsageError("--attention sparq needs --compression C, or both --sparq-r and --sparq-k");
      }
      // SparQ would cap the window at k silently; a window larger than what is fetched is a mistaken flag.
      if (flags.sparqLocal !== undefined && flags.sparqK !== undefined && flags.sparqLocal > flags.sparqK) {
        throw new UsageError(
          `--sparq-local expects at most --sparq-k (${flags.sparqK}) positions, got "${flags.sparqLocal}"`,
        );
      }
      return {
        method,
        compression: flags.compression,
        r: flags.sparqR,
        k: flags.sparqK,
        localWindow: flags.sparqLocal,
        reallocation: onOff === undefined ? undefined : onOff === "on",
        layout: layout as "double" | "single" | undefined,
        groupRanking: ranking as SparqGroupRanking | undefined,
      };
    }
    case "h2o":
      refuse([...sparqFlags, "sinks"]);
      // H2O would cap the window at the budget silently (leaving no heavy hitters): say so instead.
      if (flags.h2oRecent !== undefined && flags.kvBudget !== undefined && flags.h2oRecent > flags.kvBudget) {
        throw new UsageError(
          `--h2o-recent expects at most --kv-budget (${flags.kvBudget}) rows, got "${flags.h2oRecent}"`,
        );
      }
      return { method, budget: flags.kvBudget, compression: flags.compression, recent: flags.h2oRecent };
    case "streaming":
      refuse([...sparqFlags, "h2oRecent"]);
      if (flags.kvBudget !== undefined && flags.kvBudget <= (flags.sinks ?? DEFAULT_SINKS)) {
        const sinks =
          flags.sinks === undefined ? `the default ${DEFAULT_SINKS} sink tokens (--sinks)` : `--sinks (${flags.sinks})`;
        throw new UsageError(
          `--kv-budget expects more rows than ${sinks} for --attention streaming, got "${flags.kvBudget}"`,
        );
      }
      return { method, budget: flags.kvBudget, compression: flags.compression, sinks: flags.sinks };
    default:
      throw new UsageError(`--attention expects one of ${ATTENTION_METHODS.join(", ")}, got "${method}"`);
  }
}

/**
 * The checks that need the model's shape, made once it is open (before a session is created), so that they name
 * the flag rather than the library's option.
 */
export function checkAttentionForModel(spec: AttentionSpec, headDim: number): void {
  if (spec.method === "sparq" && spec.r !== undefined && spec.r > headDim) {
    throw new UsageError(`--sparq-r expects at most the model's head dimension (${headDim}), got "${spec.r}"`);
  }
}
