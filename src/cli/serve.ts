/**
 * `kvslim serve`: the OpenAI-compatible HTTP server (src/server/) on one model. Listens first (so /health can
 * say "loading"), then loads the model; SIGTERM or SIGINT stops taking requests, lets the running ones
 * finish, and exits 0 (a second signal exits at once).
 */
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { UsageError } from "../errors.js";
import { packageRoot } from "../kernels/wasm.js";
import { MAX_MEMORY } from "../memory/arena.js";
import { loadModel } from "../model/model.js";
import { openModelSource } from "../model/source.js";
import { KvslimServer } from "../server/server.js";
import {
  addAttentionOptions,
  attentionSpecFrom,
  checkAttentionForModel,
  kvDtypeFrom,
  kvRotationFrom,
  checkKvFlags,
  type AttentionFlags,
} from "./attention-options.js";
import { bytesOption, intOption, pathOption, threadsOption } from "./options.js";

interface ServeFlags extends AttentionFlags {
  model?: string;
  alias?: string;
  host: string;
  port: number;
  parallel: number;
  queue: number;
  kvMemory?: number;
  context?: number;
  maxTokens?: number;
  maxBody?: number;
  apiKey?: string;
  apiKeyFile?: string;
  corsOrigin?: string;
  prefixCache: boolean;
  threads?: number;
}

/** The shipped default model, next to the package's build/ directory. */
const defaultModel = () => path.join(packageRoot(), "models", "kvslim-tiny");

export function registerServe(program: Command): void {
  const command = program
    .command("serve")
    .description("OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics")
    .option(
      "-m, --model <path>",
      "a .gguf file or a model directory (default: the shipped models/kvslim-tiny)",
      pathOption("--model"),
    )
    .option("--alias <id>", "the model's id in requests and /v1/models (default: the file or directory name)")
    .option("--host <address>", "address to listen on (127.0.0.1: this machine only)", "127.0.0.1")
    .option("--port <n>", "port (0: any free port)", intOption("--port", 0, 65535), 8080)
    .option(
      "--parallel <n>",
      "requests decoded together, batched (one pass over the weights per step)",
      intOption("--parallel", 1, 64),
      8,
    )
    .option(
      "--queue <n>",
      "requests that may wait for room; more get 503 with Retry-After",
      intOption("--queue", 0, 100000),
      64,
    )
    .option(
      "--kv-memory <size>",
      "KV cache memory for all requests together, e.g. 512MiB (default: --parallel full-context caches)",
      bytesOption("--kv-memory", MAX_MEMORY),
    )
    .option("-c, --context <n>", "context size (default: the model's, at most 4096)", intOption("--context", 1))
    .option(
      "--max-tokens <n>",
      "largest max_tokens a request may ask for, and the default (default: the context)",
      intOption("--max-tokens", 1),
    )
    .option("--max-body <size>", "largest request body (default: 4MiB)", bytesOption("--max-body", 1 << 30))
    .option("--api-key <key>", "require Authorization: Bearer <key> (not on /health)")
    .option("--api-key-file <path>", "read the keys from a file, one per line", pathOption("--api-key-file"))
    .option("--cors-origin <origin>", "allow browsers from this origin (* for any); off by default")
    .option("--no-prefix-cache", "do not keep finished conversations for prompt-prefix reuse")
    .option(...threadsOption);
  addAttentionOptions(command).action(async (flags: ServeFlags) => {
    const attention = attentionSpecFrom(flags);
    const kvDtype = kvDtypeFrom(flags);
    const kvRotation = kvRotationFrom(flags);
    const modelPath = flags.model ?? defaultModel();
    if (!fs.existsSync(modelPath))
      throw new UsageError(`--model expects a .gguf file or a model directory; ${modelPath} does not exist`);
    if (flags.host.trim() === "")
      throw new UsageError(`--host expects an address such as 127.0.0.1 or 0.0.0.0, got ""`);
    if (flags.corsOrigin !== undefined && flags.corsOrigin !== "*" && !isOrigin(flags.corsOrigin))
      throw new UsageError(
        `--cors-origin expects * or an origin such as https://app.example.com (scheme, host and port only), got "${flags.corsOrigin}"`,
      );
    const keys = apiKeys(flags);
    if (flags.apiKey !== undefined && flags.apiKey.trim() === "")
      throw new UsageError('--api-key expects a key, got ""');
    const modelId = flags.alias ?? path.basename(path.resolve(modelPath)).replace(/\.gguf$/i, "");
    if (modelId === "") throw new UsageError('--alias expects a name, got ""');

    const server = new KvslimServer({
      host: flags.host,
      port: flags.port,
      modelId,
      apiKeys: keys,
      corsOrigin: flags.corsOrigin ?? null,
      maxBodyBytes: flags.maxBody ?? 4 << 20,
      maxTokens: flags.maxTokens ?? Number.MAX_SAFE_INTEGER,
      parallel: flags.parallel,
      queue: flags.queue,
      prefixCache: flags.prefixCache,
      attention,
      kvDtype,
    });
    let address;
    try {
      address = await server.listen();
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const why: Record<string, string> = {
        EADDRINUSE: "the port is in use",
        EACCES: "permission denied (ports below 1024 need privileges)",
        EADDRNOTAVAIL: "that is not an address of this machine",
        ENOTFOUND: "no such host name",
        EAI_AGAIN: "the host name could not be resolved",
      };
      throw new UsageError(
        `--host ${flags.host} --port ${flags.port}: cannot listen there: ${why[err.code ?? ""] ?? `the system refused (${err.code ?? "unknown error"})`}`,
      );
    }
    const url = `http://${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`;
    // On a terminal, say where it listens while the model loads; in a log, one line once ready (or the error).
    if (process.stderr.isTTY) process.stderr.write(`kvslim serve: listening on ${url}, loading ${modelPath}\n`);

    const stop = stopSignals(server);
    let model;
    try {
      checkKvFlags(kvDtype, kvRotation, openModelSource(modelPath).config.headDim);
      model = await loadModel(modelPath, {
        contextSize: flags.context,
        kvDtype,
        kvRotation,
        attention,
        threads: flags.threads,
        ...(flags.kvMemory !== undefined ? { cacheBytes: flags.kvMemory } : { sessions: flags.parallel }),
      });
      checkAttentionForModel(attention, model.config.headDim);
      // The default method's spec is checked now (a tiny session), not at the first request that uses it.
      model.createSession({ contextSize: 1, attention, kvDtype }).dispose();
    } catch (e) {
      server.failed(e instanceof Error ? e.message : String(e));
      await server.close();
      stop.dispose();
      model?.dispose();
      throw e;
    }
    for (const note of model.source.notes) process.stderr.write(`note: ${note}\n`);
    server.ready(model);
    process.stderr.write(
      `kvslim serve: ${modelId} ready at ${url}/v1 (${model.describeMemory()}; context ${model.contextSize}; ` +
        `up to ${flags.parallel} requests at once${keys.length > 0 ? "; API key required" : ""})\n`,
    );
    await stop.done;
    model.dispose();
  });
}

function isOrigin(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === "http:" || url.protocol === "https:") && url.origin === value;
  } catch {
    return false;
  }
}

function apiKeys(flags: ServeFlags): string[] {
  const keys: string[] = [];
  if (flags.apiKey !== undefined) keys.push(flags.apiKey);
  if (flags.apiKeyFile !== undefined) {
    if (!fs.existsSync(flags.apiKeyFile) || !fs.statSync(flags.apiKeyFile).isFile())
      throw new UsageError(
        `--api-key-file expects a file of keys, one per line; ${flags.apiKeyFile} does not exist or is not a file`,
      );
    const lines = fs
      .readFileSync(flags.apiKeyFile, "utf8")
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    if (lines.length === 0) throw new UsageError(`--api-key-file ${flags.apiKeyFile} holds no key (one per line)`);
    keys.push(...lines);
  }
  return keys;
}

/** Resolves `done` once a first SIGTERM/SIGINT has drained the server; a second one exits at once. */
function stopSignals(server: KvslimServer): { done: Promise<void>; dispose(): void } {
  let stopping = false;
  let resolveDone!: () => void;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      process.stderr.write(`kvslim serve: ${signal} again, exiting now\n`);
      process.exit(signal === "SIGINT" ? 130 : 143);
    }
    stopping = true;
    const s = server.engineStats;
    process.stderr.write(
      `kvslim serve: ${signal}: finishing ${s ? s.active + s.waiting : 0} requests, taking no new ones\n`,
    );
    server.drain().then(() => {
      process.stderr.write("kvslim serve: stopped\n");
      resolveDone();
    });
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  return {
    done: done.finally(() => {
      process.off("SIGTERM", onSignal);
      process.off("SIGINT", onSignal);
    }),
    dispose() {
      process.off("SIGTERM", onSignal);
      process.off("SIGINT", onSignal);
    },
  };
}
