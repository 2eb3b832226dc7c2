/**
 * The OpenAI API's request and response shapes as kvslim serves them: requests checked field by field (a
 * wrong type or range is a 400 naming the field, what was expected and what was found; a feature kvslim does
 * not have is refused by name, never ignored), responses and stream chunks shaped as the official client
 * reads them, and the error envelope {"error": {"message", "type", "param", "code"}}.
 *
 * kvslim's own per-request options go in the extension field "kvslim":
 *   {"attention": {"method": "sparq", "compression": 8, ...}, "kv_dtype": "bf16", "top_k": 40}
 */
import { ATTENTION_METHODS, SPARQ_GROUP_RANKINGS, type AttentionSpec } from "../attention/method.js";
import { DEFAULT_SINKS } from "../attention/streaming.js";
import { KV_DTYPES, type KvDType } from "../kvcache/cache.js";
import type { ChatMessage } from "../tokenizer/chat.js";

/** An error the client sees as the OpenAI envelope with this HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (Retry-After, Allow, WWW-Authenticate). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  get envelope(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const invalid = (message: string, param: string | null = null, code: string | null = null): ApiError =>
  new ApiError(400, message, "invalid_request_error", param, code);

/** What a chat or completion request asks for, checked. */
export interface GenerationRequest {
  endpoint: "chat" | "completion";
  model: string;
  /** Chat: the messages (rendered with the model's template later); completion: text or token ids. */
  messages: ChatMessage[] | null;
  prompt: string | number[] | null;
  /** null: the server's default. */
  maxTokens: number | null;
  temperature: number;
  topP: number;
  topK: number;
  seed: number | undefined;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  /** null: no log-probabilities; else how many alternatives per token (0–20). */
  logprobs: number | null;
  attention: AttentionSpec | null;
  kvDtype: KvDType | null;
}

/** Fields accepted and ignored: they change nothing about the output. */
const IGNORED = new Set(["user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"]);

/** A JSON value's kind for messages: "a string", "null", "an array", "the number 3" ... */
function shown(v: unknown): string {
  if (v === undefined) return "nothing (the field is missing)";
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  if (typeof v === "number" || typeof v === "boolean") return `${typeof v} ${v}`;
  return typeof v === "object" ? "an object" : typeof v;
}

class Fields {
  private readonly seen = new Set<string>();
  constructor(
    private readonly o: Record<string, unknown>,
    private readonly prefix = "",
  ) {}

  private name(key: string): string {
    return this.prefix + key;
  }

  /** The raw value (marks the key as known). */
  raw(key: string): unknown {
    this.seen.add(key);
    return this.o[key];
  }

  has(key: string): boolean {
    const v = this.raw(key);
    return v !== undefined && v !== null;
  }

  number(key: string, min: number, max: number, fallback: number): number {
    const v = this.raw(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max)
      throw invalid(`${this.name(key)} must be a number from ${min} to ${max}, found ${shown(v)}`, this.name(key));
    return v;
  }

  integer(key: string, min: number, max: number): number | null {
    const v = this.raw(key);
    if (v === undefined || v === null) return null;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
      throw invalid(`${this.name(key)} must be an integer from ${min} to ${max}, found ${shown(v)}`, this.name(key));
    return v;
  }

  boolean(key: string): boolean | null {
    const v = this.raw(key);
    if (v === undefined || v === null) return null;
    if (typeof v !== "boolean")
      throw invalid(`${this.name(key)} must be true or false, found ${shown(v)}`, this.name(key));
    return v;
  }

  string(key: string): string | null {
    const v = this.raw(key);
    if (v === undefined || v === null) return null;
    if (typeof v !== "string") throw invalid(`${this.name(key)} must be a string, found ${shown(v)}`, this.name(key));
    return v;
  }

  /** A string that must be one of `allowed`, or null when absent. */
  choice<T extends string>(key: string, allowed: readonly T[]): T | null {
    const v = this.string(key);
    if (v !== null && !(allowed as readonly string[]).includes(v))
      throw invalid(`${this.name(key)} must be one of ${allowed.join(", ")}, found ${shown(v)}`, this.name(key));
    return v as T | null;
  }

  object(key: string): Fields | null {
    const v = this.raw(key);
    if (v === undefined || v === null) return null;
    if (typeof v !== "object" || Array.isArray(v))
      throw invalid(`${this.name(key)} must be an object, found ${shown(v)}`, this.name(key));
    return new Fields(v as Record<string, unknown>, `${this.name(key)}.`);
  }

  /** Refuses a feature kvslim does not have unless the value is one that means "off". */
  unsupported(key: string, off: (v: unknown) => boolean, what: string): void {
    const v = this.raw(key);
    if (v !== undefined && v !== null && !off(v))
      throw invalid(`${this.name(key)} is not supported by kvslim (${what})`, this.name(key), "unsupported_parameter");
  }

  /** Every key not asked about is an error (a misspelt option would otherwise do nothing). */
  done(): void {
    for (const key of Object.keys(this.o)) {
      if (!this.seen.has(key) && !(this.prefix === "" && IGNORED.has(key)))
        throw invalid(`Unrecognized request argument supplied: ${this.name(key)}`, this.name(key));
    }
  }
}

/** Parses and checks a request body (already JSON) for POST /v1/chat/completions or /v1/completions. */
export function parseGenerationRequest(endpoint: "chat" | "completion", body: unknown): GenerationRequest {
  if (typeof body !== "object" || body === null || Array.isArray(body))
    throw invalid(`the request body must be a JSON object, found ${shown(body)}`);
  const f = new Fields(body as Record<string, unknown>);
  const model = f.string("model");
  if (model === null) throw invalid("model is required: the id GET /v1/models lists", "model");

  let messages: ChatMessage[] | null = null;
  let prompt: string | number[] | null = null;
  if (endpoint === "chat") {
    messages = parseMessages(f.raw("messages"));
  } else {
    prompt = parsePrompt(f.raw("prompt"));
  }

  const maxTokens = f.integer("max_tokens", 1, Number.MAX_SAFE_INTEGER);
  const maxCompletion = endpoint === "chat" ? f.integer("max_completion_tokens", 1, Number.MAX_SAFE_INTEGER) : null;
  if (maxTokens !== null && maxCompletion !== null && maxTokens !== maxCompletion)
    throw invalid(
      `max_tokens (${maxTokens}) and max_completion_tokens (${maxCompletion}) disagree; give one`,
      "max_completion_tokens",
    );
  const temperature = f.number("temperature", 0, 2, 1);
  const topP = f.number("top_p", Number.MIN_VALUE, 1, 1);
  const seed = f.integer("seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  const n = f.integer("n", 1, 128);
  if (n !== null && n !== 1) throw invalid(`n must be 1: kvslim returns one choice per request, found ${n}`, "n");
  const stop = parseStop(f.raw("stop"));
  const stream = f.boolean("stream") ?? false;
  const options = f.object("stream_options");
  let includeUsage = false;
  if (options !== null) {
    if (!stream) throw invalid("stream_options applies only with stream: true", "stream_options");
    includeUsage = options.boolean("include_usage") ?? false;
    options.boolean("include_obfuscation");
    options.done();
  }

  let logprobs: number | null = null;
  if (endpoint === "chat") {
    const on = f.boolean("logprobs") ?? false;
    const top = f.integer("top_logprobs", 0, 20);
    if (top !== null && !on) throw invalid("top_logprobs needs logprobs: true", "top_logprobs");
    logprobs = on ? (top ?? 0) : null;
  } else {
    logprobs = f.integer("logprobs", 0, 5);
    f.unsupported("echo", (v) => v === false, "echo the prompt back");
    f.unsupported("best_of", (v) => v === 1, "several candidates per request");
    f.unsupported("suffix", (v) => v === "", "insertion after a suffix");
  }

  for (const key of ["frequency_penalty", "presence_penalty"])
    f.unsupported(key, (v) => v === 0, "repetition penalties; leave it at 0");
  f.unsupported("logit_bias", (v) => typeof v === "object" && Object.keys(v as object).length === 0, "logit bias");
  if (endpoint === "chat") {
    for (const key of ["tools", "functions"])
      f.unsupported(key, (v) => Array.isArray(v) && v.length === 0, "tool calls");
    for (const key of ["tool_choice", "function_call", "parallel_tool_calls"])
      f.unsupported(key, (v) => v === "none" || v === false, "tool calls");
    f.unsupported(
      "response_format",
      (v) => typeof v === "object" && (v as { type?: unknown }).type === "text",
      'structured output; only {"type": "text"}',
    );
    f.unsupported("modalities", (v) => Array.isArray(v) && v.length === 1 && v[0] === "text", "text output only");
    for (const key of ["audio", "prediction", "reasoning_effort", "web_search_options", "verbosity"])
      f.unsupported(key, () => false, "not a feature of local text models");
  }

  const ext = f.object("kvslim");
  let attention: AttentionSpec | null = null;
  let kvDtype: KvDType | null = null;
  let topK = 0;
  if (ext !== null) {
    const a = ext.object("attention");
    if (a !== null) attention = parseAttention(a);
    kvDtype = ext.choice("kv_dtype", KV_DTYPES);
    topK = ext.integer("top_k", 0, 1_000_000) ?? 0;
    ext.done();
  }
  f.done();
  return {
    endpoint,
    model,
    messages,
    prompt,
    maxTokens: maxTokens ?? maxCompletion,
    temperature,
    topP,
    topK,
    seed: seed ?? undefined,
    stop,
    stream,
    includeUsage,
    logprobs,
    attention,
    kvDtype,
  };
}

function parseMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0)
    throw invalid(`messages must be a non-empty array of {role, content}, found ${shown(v)}`, "messages");
  return v.map((m, i) => {
    const at = `messages[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m))
      throw invalid(`${at} must be an object with role and content, found ${shown(m)}`, at);
    const f = new Fields(m as Record<string, unknown>, `${at}.`);
    const role = f.string("role");
    const roles = ["system", "developer", "user", "assistant"];
    if (role === null || !roles.includes(role))
      throw invalid(`${at}.role must be one of ${roles.join(", ")}, found ${shown(f.raw("role"))}`, `${at}.role`);
    const content = messageContent(f.raw("content"), `${at}.content`);
    f.string("name");
    f.unsupported("tool_calls", (x) => Array.isArray(x) && x.length === 0, "tool calls");
    f.raw("refusal");
    f.done();
    return { role: role === "developer" ? "system" : (role as ChatMessage["role"]), content };
  });
}

/** A message's content: a string, or text parts [{type: "text", text}] joined. */
function messageContent(v: unknown, at: string): string {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    return v
      .map((part, i) => {
        const p = part as { type?: unknown; text?: unknown };
        if (typeof part !== "object" || part === null || p.type !== "text" || typeof p.text !== "string")
          throw invalid(
            `${at}[${i}] must be a text part {"type": "text", "text": "…"} (kvslim's models read text only), found ${shown(part)}`,
            `${at}[${i}]`,
          );
        return p.text;
      })
      .join("");
  }
  throw invalid(`${at} must be a string or an array of text parts, found ${shown(v)}`, at);
}

function parsePrompt(v: unknown): string | number[] {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    if (v.length === 1 && typeof v[0] === "string") return v[0];
    if (v.length > 0 && v.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 0)) return v as number[];
    if (v.length > 1 && v.every((x) => typeof x === "string" || Array.isArray(x)))
      throw invalid("prompt must be one prompt: kvslim answers one prompt per request", "prompt");
  }
  throw invalid(`prompt must be a string or an array of token ids, found ${shown(v)}`, "prompt");
}

function parseStop(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.length > 4 || !list.every((s) => typeof s === "string" && s.length > 0))
    throw invalid(`stop must be a non-empty string or up to 4 of them, found ${shown(v)}`, "stop");
  return list as string[];
}

/** kvslim.attention: the decode-time attention method and its parameters, as the library's AttentionSpec. */
function parseAttention(a: Fields): AttentionSpec {
  const method = a.string("method");
  if (method === null || !(ATTENTION_METHODS as readonly string[]).includes(method))
    throw invalid(
      `kvslim.attention.method must be one of ${ATTENTION_METHODS.join(", ")}, found ${shown(a.raw("method"))}`,
      "kvslim.attention.method",
    );
  const refuse = (keys: string[]) => {
    for (const key of keys)
      if (a.has(key))
        throw invalid(`kvslim.attention.${key} does not apply to method ${method}`, `kvslim.attention.${key}`);
  };
  const compression = () => {
    const c = a.number("compression", 1, 1e6, NaN);
    return Number.isNaN(c) ? undefined : c;
  };
  let spec: AttentionSpec;
  switch (method) {
    case "dense":
      refuse(["compression", "r", "k", "local_window", "reallocation", "group_ranking", "budget", "sinks", "recent"]);
      spec = { method };
      break;
    case "sparq": {
      refuse(["budget", "sinks", "recent"]);
      const r = a.integer("r", 1, 1 << 16) ?? undefined;
      const k = a.integer("k", 1, 1 << 30) ?? undefined;
      const c = compression();
      if (c === undefined && (r === undefined || k === undefined))
        throw invalid("kvslim.attention for sparq needs compression, or both r and k", "kvslim.attention.compression");
      const localWindow = a.integer("local_window", 0, 1 << 30) ?? undefined;
      if (localWindow !== undefined && k !== undefined && localWindow > k)
        throw invalid(
          `kvslim.attention.local_window must be at most k (${k}), found ${localWindow}`,
          "kvslim.attention.local_window",
        );
      const groupRanking = a.choice("group_ranking", SPARQ_GROUP_RANKINGS);
      spec = {
        method,
        compression: c,
        r,
        k,
        localWindow,
        reallocation: a.boolean("reallocation") ?? undefined,
        groupRanking: groupRanking ?? undefined,
      };
      break;
    }
    case "h2o": {
      refuse(["r", "k", "local_window", "reallocation", "group_ranking", "sinks"]);
      const budget = a.integer("budget", 1, 1 << 30) ?? undefined;
      const c = compression();
      if (c === undefined && budget === undefined)
        throw invalid("kvslim.attention for h2o needs compression or budget", "kvslim.attention.compression");
      const recent = a.integer("recent", 0, 1 << 30) ?? undefined;
      if (recent !== undefined && budget !== undefined && recent > budget)
        throw invalid(
          `kvslim.attention.recent must be at most budget (${budget}), found ${recent}`,
          "kvslim.attention.recent",
        );
      spec = { method, budget, compression: c, recent };
      break;
    }
    default: {
      refuse(["r", "k", "local_window", "reallocation", "group_ranking", "recent"]);
      const budget = a.integer("budget", 1, 1 << 30) ?? undefined;
      const c = compression();
      if (c === undefined && budget === undefined)
        throw invalid("kvslim.attention for streaming needs compression or budget", "kvslim.attention.compression");
      const sinks = a.integer("sinks", 0, 1 << 30) ?? undefined;
      if (budget !== undefined && budget <= (sinks ?? DEFAULT_SINKS))
        throw invalid(
          `kvslim.attention.budget must exceed the ${sinks ?? DEFAULT_SINKS} sink tokens, found ${budget}`,
          "kvslim.attention.budget",
        );
      spec = { method: "streaming", budget, compression: c, sinks };
    }
  }
  a.done();
  return spec;
}

export type FinishReason = "stop" | "length";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

export function usage(prompt: number, completion: number, cached: number): Usage {
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
  };
}

/** One generated token's log-probability and the most likely alternatives, as the API reports them. */
export interface TokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top: { token: string; logprob: number; bytes: number[] }[];
}

/** Chat's logprobs.content entry. */
export function chatLogprob(t: TokenLogprob) {
  return {
    token: t.token,
    logprob: t.logprob,
    bytes: t.bytes,
    top_logprobs: t.top.map((a) => ({ token: a.token, logprob: a.logprob, bytes: a.bytes })),
  };
}

/** Completions' legacy logprobs object for a run of tokens starting at text offset `offset`. */
export function completionLogprobs(tokens: TokenLogprob[], offset: number) {
  const textOffset: number[] = [];
  let at = offset;
  for (const t of tokens) {
    textOffset.push(at);
    at += t.token.length;
  }
  return {
    tokens: tokens.map((t) => t.token),
    token_logprobs: tokens.map((t) => t.logprob),
    top_logprobs: tokens.map((t) => Object.fromEntries(t.top.map((a) => [a.token, a.logprob]))),
    text_offset: textOffset,
  };
}
