/**
 * What every `morsel` command shares: options, running a command body,
 * printing its result or its one typed error, and the exit statuses.
 *
 * Output contract: with --json a command prints exactly one JSON object on
 * stdout — its result, or {"error":{"code","message",...details}} for every
 * error, usage errors included. Without --json results go to stdout as text
 * and errors to stderr as `morsel: CODE: message`.
 *
 * Exit statuses (the README's "Command line" section lists the same table):
 *   0 ok                      1 ran and found problems (check, hwcheck)
 *   2 usage: EINVAL, ERANGE, EMISALIGNED, EFAULT, ENAMETOOLONG, EFRAGMENT, bad options
 *   3 ENOENT, EEXIST, ENOTDIR, EISDIR, ENOTEMPTY  (names and files)
 *   4 EACCES, EPERM           5 ENOSPC            6 ECORRUPT, EVERSION
 *   7 EBUSY                   8 ESTALE, EBADF     9 EIO, ENOTSUP
 *  10 EINTERNAL (a bug in morsel; MORSEL_DEBUG=1 prints the stack)
 *
 * Adding a command: write `registerX(program: Command)` in its own module,
 * build options with `jsonOption()`/`regionOption()`, wrap the action body in
 * `run(o.json, body, text)`, import heavy modules inside the body (start-up
 * stays cheap: a module main.ts loads imports only commander, common.ts and
 * types), and call registerX from main.ts. Commands that act on a morsel
 * take a <target> and resolve it with targets.ts.
 */
import { Option, type Command, type CommanderError } from 'commander';
import { MorselError, isMorselError, type ErrorCode } from '../errors.js';
import type { Memory, OpenOptions } from '../memory.js';

export type Out = Record<string, unknown>;

export const EXIT_OK = 0;
export const EXIT_PROBLEMS = 1;
export const EXIT_USAGE = 2;

/** Exit status per error code: one class per kind of remedy (see the table above). */
const EXIT_BY_CODE: Record<ErrorCode, number> = {
  EINVAL: EXIT_USAGE, ERANGE: EXIT_USAGE, EMISALIGNED: EXIT_USAGE, EFAULT: EXIT_USAGE, ENAMETOOLONG: EXIT_USAGE, EFRAGMENT: EXIT_USAGE,
  ENOENT: 3, EEXIST: 3, ENOTDIR: 3, EISDIR: 3, ENOTEMPTY: 3,
  EACCES: 4, EPERM: 4,
  ENOSPC: 5,
  ECORRUPT: 6, EVERSION: 6,
  EBUSY: 7, ETIMEDOUT: 7,
  ESTALE: 8, EBADF: 8,
  EIO: 9, ENOTSUP: 9,
  EINTERNAL: 10,
};

export function exitStatusOf(code: ErrorCode): number {
  return EXIT_BY_CODE[code];
}

/**
 * A failed command plus what did happen before it failed (e.g. `written`
 * bytes of a partial write); the details are printed next to code and message.
 */
export class CommandError extends Error {
  constructor(readonly error: MorselError, readonly details: Out) {
    super(error.message);
  }
}

/** Host errno codes that keep their name; any other host error becomes EIO. */
const HOST_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'ENOENT', 'EEXIST', 'ENOTDIR', 'EISDIR', 'ENOTEMPTY', 'ENAMETOOLONG', 'EACCES', 'EPERM', 'ENOSPC', 'EBUSY', 'EIO', 'EINVAL',
]);

function errnoOf(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^E[A-Z]+$/.test(code) ? code : undefined;
}

/** The errno a wrapped host message carries ("cannot lock f: EACCES: permission denied, mkdir ..."). */
function errnoIn(message: string): string | undefined {
  return /\b(E[A-Z]+): /.exec(message)?.[1];
}

/** `message` without Node's "CODE: " inside it (the printer puts the code in front once). */
function withoutCode(message: string, code: string): string {
  return message.replaceAll(`${code}: `, '');
}

/**
 * Any thrown value as one typed error with one code and one message: host
 * errno errors keep their code, and the "CODE: " Node writes into messages
 * (also when a layer wrapped one) is dropped; a permission failure wrapped as
 * EIO is EACCES; anything else is a bug in morsel (EINTERNAL), never an
 * engine message on its own.
 */
export function toMorselError(e: unknown): MorselError {
  if (isMorselError(e)) {
    const cause = errnoOf(e.cause) ?? errnoIn(e.message);
    const code = e.code === 'EIO' && (cause === 'EACCES' || cause === 'EPERM') ? cause : e.code;
    const message = withoutCode(e.message, code);
    return code === e.code && message === e.message ? e : new MorselError(code, message, { cause: e });
  }
  const errno = errnoOf(e);
  const text = e instanceof Error ? e.message : String(e);
  if (errno !== undefined && (e as { syscall?: unknown }).syscall !== undefined) {
    const code: ErrorCode = HOST_CODES.has(errno) ? (errno as ErrorCode) : 'EIO';
    return new MorselError(code, withoutCode(text, code), { cause: e });
  }
  return new MorselError('EINTERNAL', `internal error in morsel (please report; MORSEL_DEBUG=1 shows the stack): ${text}`, { cause: e });
}

/** Prints `e` as the command's one error and sets the exit status for it. */
export function printError(json: boolean, e: unknown): void {
  const details = e instanceof CommandError ? e.details : {};
  const err = toMorselError(e instanceof CommandError ? e.error : e);
  if (process.env.MORSEL_DEBUG && err.code === 'EINTERNAL') console.error(err.cause);
  if (json) {
    process.stdout.write(JSON.stringify({ error: { code: err.code, message: err.message, ...details } }) + '\n');
  } else {
    const extra = Object.entries(details).map(([k, v]) => `${k} ${String(v)}`).join(', ');
    process.stderr.write(`morsel: ${err.code}: ${err.message}${extra ? ` (${extra})` : ''}\n`);
  }
  process.exitCode = exitStatusOf(err.code);
}

/** Prints a command's result: the object under --json, else `text(o)` if given. */
export function printResult(json: boolean, o: Out, text?: (o: Out) => string): void {
  if (json) process.stdout.write(JSON.stringify(o) + '\n');
  else if (text) process.stdout.write(text(o) + '\n');
}

/** `key: value` lines, objects as JSON (the text form of inspect and stat). */
export const keyValueText = (o: Out): string =>
  Object.entries(o).map(([k, v]) => `${k}: ${typeof v === 'object' && v !== null ? JSON.stringify(v) : v}`).join('\n');

/** Runs a command body and prints its result or its typed error. */
export async function run(json: boolean | undefined, body: () => Out | Promise<Out>, text?: (o: Out) => string): Promise<void> {
  try {
    printResult(!!json, await body(), text);
  } catch (e) {
    printError(!!json, e);
  }
}

export const jsonOption = (): Option => new Option('--json', 'print one JSON object on stdout (errors too)');
/** `--region <file>`, taken from $MORSEL_REGION when not given (one of the two is required). */
export const regionOption = (): Option => new Option('--region <file>', 'persistent region file').env('MORSEL_REGION').makeOptionMandatory();

/** Help for a <target> argument; targets.ts resolves the three forms. */
export const TARGET_HELP = 'a /path, a handle 0x…@generation (ESTALE once destroyed) or a raw morsel ID 0x…';

/** Opens a region for one command and closes it afterwards, whatever happens. */
export async function withRegion<T>(path: string, fn: (m: Memory) => T | Promise<T>, opts: OpenOptions = {}): Promise<T> {
  const { Memory } = await import('../memory.js');
  const memory = Memory.open(path, opts);
  try {
    return await fn(memory);
  } finally {
    memory.close();
  }
}

/**
 * Makes commander follow the output contract: usage errors become EINVAL
 * (one JSON object on stdout when --json is on the command line, which is
 * all we know before parsing succeeded) and exit 2; --help and --version exit 0.
 */
export function followContract(program: Command, argv: readonly string[]): void {
  const json = argv.includes('--json');
  if (json) program.configureOutput({ writeErr: () => {} });
  program
    .exitOverride((err: CommanderError) => {
      if (err.exitCode === 0) process.exit(EXIT_OK);
      if (json) printError(true, new MorselError('EINVAL', err.message.replace(/^error: /, '')));
      process.exit(EXIT_USAGE);
    });
}

/** The largest TCP port. */
const MAX_PORT = 65535;

/** A --port value: 0..65535 (0: any free port); EINVAL otherwise. */
export function parsePort(text: string): number {
  const port = /^\d{1,5}$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!(port <= MAX_PORT)) throw new MorselError('EINVAL', `--port must be 0..${MAX_PORT} (0: any free port), got ${JSON.stringify(text)}`);
  return port;
}
