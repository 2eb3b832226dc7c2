/**
 * Named errors raised at kvslim's boundaries (files, flags, prompts, memory).
 *
 * Every message says what was expected, what was found, and (where there is one) what to do.
 * The CLI prints `name: message` on one line and exits non-zero; it never prints a stack trace
 * for a KvslimError. Anything else reaching the CLI is a bug and is reported as such.
 */
export class KvslimError extends Error {
  override name = "KvslimError";
  /** The process exit code the CLI uses for this error. */
  readonly exitCode: number = 1;
}

/** A model or tokenizer file is malformed: bad magic, truncated, offsets out of range, bad JSON. */
export class FormatError extends KvslimError {
  override name = "FormatError";
}

/** A file is well formed but uses something kvslim does not implement (dtype, architecture, vocab type). */
export class UnsupportedError extends KvslimError {
  override name = "UnsupportedError";
}

/** The tensors of a model disagree with its config: missing, extra, or wrong shape. */
export class ModelMismatchError extends KvslimError {
  override name = "ModelMismatchError";
}

/** The model plus its cache does not fit in one 32-bit WebAssembly memory (4 GiB). */
export class OutOfMemoryError extends KvslimError {
  override name = "OutOfMemoryError";
}

/** A prompt (plus the tokens to generate) does not fit the context the session was created with. */
export class ContextOverflowError extends KvslimError {
  override name = "ContextOverflowError";
}

/** The model computed values that are not numbers (NaN, +∞ logits): corrupt weights, or a model that overflows f32. */
export class NumericError extends KvslimError {
  override name = "NumericError";
}

/** A flag or option has a value kvslim cannot use. */
export class UsageError extends KvslimError {
  override name = "UsageError";
  override readonly exitCode = 2;
}

/** A file kvslim was asked to write already exists and overwriting was not requested. */
export class FileExistsError extends KvslimError {
  override name = "FileExistsError";
}

/** The user stopped a long job with Ctrl-C and it stopped cleanly (a training run: with a checkpoint). */
export class InterruptedError extends KvslimError {
  override name = "InterruptedError";
  override readonly exitCode = 130; // 128 + SIGINT, as a shell reports a job stopped by Ctrl-C
}

/** Formats a byte count the way the error messages and `kvslim info` show it. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/** A value read from a file, for "found …" in a message: JSON, cut short at 60 characters. */
export function shownValue(v: unknown): string {
  if (v === undefined) return "nothing (the key is missing)";
  const text = typeof v === "bigint" ? String(v) : (JSON.stringify(v) ?? String(v));
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/**
 * True when a dependency failed on a JavaScript slip of its own (a TypeError reading a field that is not
 * there, …) rather than with a message meant for people: its words then name nothing the user gave.
 */
export function isInternalSlip(e: unknown): boolean {
  return e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError;
}
