/**
 * kvslim's OpenAI-compatible HTTP server (node:http): routes, authentication, CORS, body limits, server-sent
 * events, and the path from a request to the engine and back.
 *
 *   POST /v1/chat/completions   chat, with the model's chat template
 *   POST /v1/completions        text (or token ids) in, text out
 *   GET  /v1/models[/ID]        the one model served
 *   GET  /health                200 when ready; 503 (error envelope) while loading or shutting down; no key needed
 *   GET  /metrics               Prometheus text
 *
 * The server listens before the model is loaded, so /health can say "loading". It holds no state a request
 * needs beyond that request (the prefix cache only saves work), so replicas can sit behind a load balancer.
 */
import crypto from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { AttentionSpec } from "../attention/method.js";
import { kvDtypeProblem, type KvDType } from "../kvcache/cache.js";
import type { Model } from "../model/model.js";
import { chatPrompt } from "../tokenizer/chat.js";
import {
  ApiError,
  chatLogprob,
  completionLogprobs,
  invalid,
  parseGenerationRequest,
  usage,
  type GenerationRequest,
  type TokenLogprob,
} from "./api.js";
import { Engine, asApiError, type Job, type JobResult } from "./engine.js";
import { Metrics } from "./metrics.js";

export interface ServerOptions {
  host: string;
  port: number;
  /** The model's id in requests and GET /v1/models. */
  modelId: string;
  /** Keys accepted as "Authorization: Bearer KEY"; empty: no key needed. */
  apiKeys: string[];
  /** Allowed browser origin ("*" for any), or null: no CORS headers. */
  corsOrigin: string | null;
  /** Largest request body in bytes (413 beyond). */
  maxBodyBytes: number;
  /** Largest max_tokens a request may ask for; also the default when it asks for none. */
  maxTokens: number;
  parallel: number;
  queue: number;
  prefixCache: boolean;
  /** The attention method and KV dtype of requests that do not choose one. */
  attention: AttentionSpec;
  kvDtype: KvDType;
}

export class KvslimServer {
  readonly metrics: Metrics;
  private engine: Engine | null = null;
  private loadError: string | null = null;
  private draining = false;
  private readonly http: http.Server;
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly keyDigests: Buffer[];

  constructor(readonly options: ServerOptions) {
    this.metrics = new Metrics(() => this.engine?.stats ?? null);
    this.keyDigests = options.apiKeys.map(digest);
    this.http = http.createServer((req, res) => {
      this.handle(req, res).catch((e) => this.sendError(res, asApiError(e), req));
    });
    // A slow client may take its time sending; a stalled one is dropped.
    this.http.headersTimeout = 30_000;
    this.http.requestTimeout = 120_000;
  }

  /** Starts listening; resolves with the address (port 0 picks a free one). */
  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.http.once("error", reject);
      this.http.listen(this.options.port, this.options.host, () => {
        this.http.off("error", reject);
        resolve(this.http.address() as AddressInfo);
      });
    });
  }

  /** Serves `model` from now on (until then generation routes and /health answer 503). */
  ready(model: Model): void {
    const { parallel, queue, prefixCache } = this.options;
    this.engine = new Engine(model, { parallel, queue, prefixCache }, this.metrics);
  }

  /** The model could not be loaded: /health says why (503) until the process exits. */
  failed(message: string): void {
    this.loadError = message;
  }

  get model(): Model | null {
    return this.engine?.model ?? null;
  }

  get engineStats() {
    return this.engine?.stats ?? null;
  }

  /**
   * Stops taking requests (new ones get 503), lets running and waiting ones finish, then closes every
   * connection. Resolves when done.
   */
  async drain(): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    await this.engine?.idle();
    this.engine?.dropKept();
    this.http.closeIdleConnections();
    await closed;
  }

  /** Closes at once: open requests are cut. */
  close(): Promise<void> {
    this.draining = true;
    this.http.closeAllConnections();
    return new Promise((resolve) => this.http.close(() => resolve()));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    const path = url.pathname.replace(/\/+$/, "") || "/";
    this.cors(req, res);
    if (req.method === "OPTIONS" && this.options.corsOrigin !== null) {
      res.writeHead(204).end();
      return;
    }
    if (path === "/health") {
      this.only(req, ["GET", "HEAD"]);
      if (this.loadError !== null)
        throw new ApiError(503, `the model failed to load: ${this.loadError}`, "server_error", null, "load_failed");
      if (this.draining) throw new ApiError(503, "the server is shutting down", "server_error", null, "shutting_down");
      if (this.engine === null) throw new ApiError(503, "the model is loading", "server_error", null, "loading");
      return this.sendJson(res, 200, { status: "ok" }, req);
    }
    this.authorize(req);
    if (path === "/metrics") {
      this.only(req, ["GET"]);
      const text = await this.metrics.registry.metrics();
      res.writeHead(200, { "content-type": this.metrics.registry.contentType });
      res.end(text);
      return;
    }
    if (path === "/v1/models" || path.startsWith("/v1/models/")) {
      this.only(req, ["GET"]);
      const entry = { id: this.options.modelId, object: "model", created: this.created, owned_by: "kvslim" };
      if (path === "/v1/models") return this.sendJson(res, 200, { object: "list", data: [entry] }, req);
      const id = decodeURIComponent(path.slice("/v1/models/".length));
      if (id !== this.options.modelId) throw this.unknownModel(id);
      return this.sendJson(res, 200, entry, req);
    }
    if (path === "/v1/chat/completions" || path === "/v1/completions") {
      this.only(req, ["POST"]);
      const body = await this.readJson(req);
      const request = parseGenerationRequest(path === "/v1/chat/completions" ? "chat" : "completion", body);
      return this.generate(req, res, request);
    }
    throw new ApiError(404, `no route ${req.method} ${url.pathname}`, "invalid_request_error", null, "unknown_url");
  }

  private only(req: http.IncomingMessage, methods: string[]): void {
    if (!methods.includes(req.method ?? ""))
      throw new ApiError(
        405,
        `${req.method} is not allowed here; use ${methods.join(" or ")}`,
        "invalid_request_error",
        null,
        "method_not_allowed",
        {
          allow: methods.join(", "),
        },
      );
  }

  private authorize(req: http.IncomingMessage): void {
    if (this.keyDigests.length === 0) return;
    const header = req.headers.authorization ?? "";
    const match = /^Bearer\s+(.+)$/i.exec(header);
    const given = digest(match ? match[1].trim() : "");
    // Compare digests (equal lengths) in constant time, against every key.
    let ok = false;
    for (const key of this.keyDigests) ok = crypto.timingSafeEqual(given, key) || ok;
    if (!ok)
      throw new ApiError(
        401,
        header === "" ? "no API key: send Authorization: Bearer <key>" : "Incorrect API key provided",
        "invalid_request_error",
        null,
        "invalid_api_key",
        { "www-authenticate": "Bearer" },
      );
  }

  private cors(req: http.IncomingMessage, res: http.ServerResponse): void {
    const allowed = this.options.corsOrigin;
    if (allowed === null) return;
    const origin = req.headers.origin;
    if (allowed !== "*" && origin !== allowed) return;
    res.setHeader("access-control-allow-origin", allowed === "*" ? "*" : allowed);
    res.setHeader("vary", "Origin");
    res.setHeader("access-control-allow-methods", "GET, POST, OPTIONS");
    res.setHeader("access-control-allow-headers", "authorization, content-type");
    res.setHeader("access-control-max-age", "600");
  }

  private unknownModel(id: string): ApiError {
    return new ApiError(
      404,
      `The model \`${id}\` does not exist: this server serves \`${this.options.modelId}\``,
      "invalid_request_error",
      "model",
      "model_not_found",
    );
  }

  /** The body as JSON, refusing more than maxBodyBytes (413) before reading it all. */
  private async readJson(req: http.IncomingMessage): Promise<unknown> {
    const limit = this.options.maxBodyBytes;
    const declared = Number(req.headers["content-length"] ?? NaN);
    const tooLarge = (n: string) =>
      new ApiError(
        413,
        `the request body is ${n} bytes; this server takes at most ${limit} (--max-body)`,
        "invalid_request_error",
        null,
        "request_too_large",
      );
    if (declared > limit) {
      req.resume();
      throw tooLarge(String(declared));
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > limit) {
        req.resume();
        throw tooLarge(`more than ${limit}`);
      }
      chunks.push(chunk as Buffer);
    }
    const text = Buffer.concat(chunks).toString("utf8");
    if (text.trim() === "") throw invalid("the request body is empty; send a JSON object");
    try {
      return JSON.parse(text);
    } catch (e) {
      const at = /position (\d+)/.exec((e as Error).message);
      throw invalid(`the request body is not valid JSON${at ? ` (at character ${at[1]})` : ""}`);
    }
  }

  private async generate(req: http.IncomingMessage, res: http.ServerResponse, r: GenerationRequest): Promise<void> {
    if (this.draining) throw new ApiError(503, "the server is shutting down", "server_error", null, "shutting_down");
    const engine = this.engine;
    if (engine === null)
      throw new ApiError(
        503,
        this.loadError ?? "the model is loading; retry shortly",
        "server_error",
        null,
        "loading",
        { "retry-after": "5" },
      );
    if (r.model !== this.options.modelId) throw this.unknownModel(r.model);
    const model = engine.model;
    const tok = model.tokenizer;

    // The prompt's tokens: chat messages through the model's template, or the completion prompt as given.
    let prompt: number[];
    if (r.messages !== null) {
      if (!tok.chatTemplate)
        throw invalid(`the model ${this.options.modelId} has no chat template; use /v1/completions`, "messages");
      prompt = tok.encode(chatPrompt(tok, r.messages), { addBos: false, parseSpecial: true });
    } else if (typeof r.prompt === "string") {
      prompt = tok.encode(r.prompt, { addBos: tok.addBos });
    } else {
      prompt = r.prompt!;
      const V = model.config.vocabSize;
      const bad = prompt.findIndex((t) => t >= V);
      if (bad >= 0) throw invalid(`prompt[${bad}] is token ${prompt[bad]}, outside the vocabulary of ${V}`, "prompt");
    }
    if (prompt.length === 0)
      throw invalid("the prompt is empty (no tokens)", r.messages !== null ? "messages" : "prompt");
    const context = model.contextSize;
    const param = r.endpoint === "chat" ? "messages" : "prompt";
    if (prompt.length >= context)
      throw invalid(
        `the prompt is ${prompt.length} tokens and the model's context is ${context}: it does not fit with room for an answer; shorten it (kvslim never truncates a prompt)`,
        param,
        "context_length_exceeded",
      );
    const limit = this.options.maxTokens;
    if (r.maxTokens !== null && r.maxTokens > limit)
      throw invalid(
        `${r.endpoint === "chat" ? "max_completion_tokens / max_tokens" : "max_tokens"} is ${r.maxTokens}; this server allows at most ${limit} (--max-tokens)`,
        "max_tokens",
      );
    if (r.maxTokens !== null && prompt.length + r.maxTokens > context)
      throw invalid(
        `the prompt is ${prompt.length} tokens and max_tokens ${r.maxTokens}: together ${prompt.length + r.maxTokens}, more than the model's context of ${context}; ask for at most ${context - prompt.length}`,
        "max_tokens",
        "context_length_exceeded",
      );
    const maxTokens = r.maxTokens ?? Math.min(limit, context - prompt.length);
    const kvProblem = r.kvDtype === null ? null : kvDtypeProblem(r.kvDtype, model.config.headDim);
    if (kvProblem !== null) throw invalid(kvProblem, "kvslim.kv_dtype");

    const id = `${r.endpoint === "chat" ? "chatcmpl" : "cmpl"}-${crypto.randomBytes(12).toString("hex")}`;
    const created = Math.floor(Date.now() / 1000);
    const reply = new Reply(res, r, id, created, this.options.modelId);
    const done = new Promise<void>((resolve) => {
      const job: Job = engine.submit(
        {
          prompt,
          maxTokens,
          sampler: { temperature: r.temperature, topP: r.topP, topK: r.topK, seed: r.seed },
          stop: r.stop,
          attention: r.attention ?? this.options.attention,
          kvDtype: r.kvDtype ?? this.options.kvDtype,
          logprobs: r.logprobs,
        },
        {
          text: (text, logprob) => reply.text(text, logprob),
          end: (result) => {
            reply.end(result);
            this.metrics.requests.inc({ endpoint: endpointPath(r), status: 200 });
            resolve();
          },
          error: (e) => {
            if (reply.started) reply.streamError(e);
            else this.sendError(res, e, req);
            resolve();
          },
        },
      );
      // The client went away: its generation stops and its memory is freed at the next step.
      res.on("close", () => {
        if (!res.writableFinished) {
          engine.cancel(job);
          this.metrics.requests.inc({ endpoint: endpointPath(r), status: 499 });
          resolve();
        }
      });
    });
    await done;
  }

  private sendJson(res: http.ServerResponse, status: number, body: unknown, req: http.IncomingMessage): void {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
    if (req.url !== undefined) this.metrics.requests.inc({ endpoint: endpointOf(req.url), status });
  }

  private sendError(res: http.ServerResponse, e: ApiError, req: http.IncomingMessage): void {
    if (res.headersSent) {
      res.end();
      return;
    }
    for (const [k, v] of Object.entries(e.headers)) res.setHeader(k, v);
    this.sendJson(res, e.status, e.envelope, req);
  }
}

function digest(key: string): Buffer {
  return crypto.createHash("sha256").update(key).digest();
}

function endpointPath(r: GenerationRequest): string {
  return r.endpoint === "chat" ? "/v1/chat/completions" : "/v1/completions";
}

/** The endpoint label of a URL for metrics (known routes only, so labels stay few). */
function endpointOf(url: string): string {
  const p = url.split("?")[0].replace(/\/+$/, "");
  if (p.startsWith("/v1/models")) return "/v1/models";
  return ["/health", "/metrics", "/v1/chat/completions", "/v1/completions"].includes(p) ? p : "other";
}

/** One response, streamed as server-sent events or sent whole at the end. */
class Reply {
  started = false;
  private content = "";
  private logprobs: TokenLogprob[] = [];
  /** Text sent so far (completions' text_offset). */
  private sent = 0;

  constructor(
    private readonly res: http.ServerResponse,
    private readonly r: GenerationRequest,
    private readonly id: string,
    private readonly created: number,
    private readonly model: string,
  ) {}

  private get chat(): boolean {
    return this.r.endpoint === "chat";
  }

  private chunk(choices: unknown[], extra: Record<string, unknown> = {}): string {
    const object = this.chat ? "chat.completion.chunk" : "text_completion";
    return `data: ${JSON.stringify({ id: this.id, object, created: this.created, model: this.model, choices, ...extra })}\n\n`;
  }

  private start(): void {
    if (this.started) return;
    this.started = true;
    this.res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    if (this.chat)
      this.res.write(
        this.chunk([{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]),
      );
  }

  text(text: string, logprob: TokenLogprob | null): void {
    if (!this.r.stream) {
      this.content += text;
      if (logprob !== null) this.logprobs.push(logprob);
      return;
    }
    this.start();
    if (this.chat) {
      const lp = logprob === null ? null : { content: [chatLogprob(logprob)], refusal: null };
      this.res.write(this.chunk([{ index: 0, delta: { content: text }, logprobs: lp, finish_reason: null }]));
    } else {
      const lp = logprob === null ? null : completionLogprobs([logprob], this.sent);
      this.res.write(this.chunk([{ index: 0, text, logprobs: lp, finish_reason: null }]));
    }
    this.sent += text.length;
  }

  end(result: JobResult): void {
    const u = usage(result.promptTokens, result.completionTokens, result.cachedTokens);
    if (!this.r.stream) {
      const logprobs =
        this.r.logprobs === null
          ? null
          : this.chat
            ? { content: this.logprobs.map(chatLogprob), refusal: null }
            : completionLogprobs(this.logprobs, 0);
      const choice = this.chat
        ? {
            index: 0,
            message: { role: "assistant", content: this.content, refusal: null },
            logprobs,
            finish_reason: result.finishReason,
          }
        : { index: 0, text: this.content, logprobs, finish_reason: result.finishReason };
      const body = {
        id: this.id,
        object: this.chat ? "chat.completion" : "text_completion",
        created: this.created,
        model: this.model,
        choices: [choice],
        usage: u,
      };
      this.res.writeHead(200, { "content-type": "application/json" });
      this.res.end(JSON.stringify(body));
      return;
    }
    this.start();
    const last = this.chat
      ? { index: 0, delta: {}, logprobs: null, finish_reason: result.finishReason }
      : { index: 0, text: "", logprobs: null, finish_reason: result.finishReason };
    this.res.write(this.chunk([last], this.r.includeUsage ? { usage: null } : {}));
    if (this.r.includeUsage) this.res.write(this.chunk([], { usage: u }));
    this.res.end("data: [DONE]\n\n");
  }

  /** An error after the stream began: a data event with the envelope, which the official client raises. */
  streamError(e: ApiError): void {
    this.res.end(`data: ${JSON.stringify(e.envelope)}\n\n`);
  }
}
