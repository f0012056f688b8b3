/**
 * Typed errors. Every failure that can reach a user carries a stable `code`
 * (POSIX-flavoured) so callers and the CLI can react without parsing messages.
 */
export type ErrorCode =
  | 'EINVAL' // malformed argument or ID
  | 'ENOSPC' // out of physical frames
  | 'ECORRUPT' // on-media structure fails validation
  | 'EVERSION' // on-media format version we do not understand
  | 'EMISALIGNED' // address not naturally aligned for the order
  | 'EEXIST' // slot already occupied / file exists
  | 'ENOENT' // no such file / mapping
  | 'EACCES' // access violates the mapping's rights
  | 'EFAULT' // address not mapped at all
  | 'ERANGE' // offset / address outside the object
  | 'EBUSY' // object still in use (e.g. mapped)
  | 'ENOTSUP' // valid request the configuration cannot serve
  | 'EIO' // the host refused an I/O operation
  | 'EPERM' // operation not permitted to this user
  | 'EBADF' // handle, space or memory already closed / destroyed
  | 'ESTALE' // handle names a morsel that was destroyed (generation changed)
  | 'ENOTDIR' // a path component is not a directory
  | 'EISDIR' // the target is a directory
  | 'ENOTEMPTY' // directory not empty
  | 'ENAMETOOLONG' // name or path too long
  | 'ETIMEDOUT' // a bounded wait ran out (e.g. a reader stuck inside an access)
  | 'EFRAGMENT' // a zero-copy view was asked for a range that is not physically contiguous
  | 'EINTERNAL'; // a bug in morsel: an invariant failed or an engine error escaped

/**
 * `message` is the text after the code and never repeats it: whoever prints
 * the error puts the code in front once (the CLI: `morsel: CODE: message`).
 * Stack traces show `MorselError [CODE]: message`, as Node shows its own codes.
 */
export class MorselError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'MorselError';
  }

  override toString(): string {
    return `MorselError [${this.code}]: ${this.message}`;
  }
}

/**
 * Throws a typed error unless `cond` holds. Use for user-facing validation.
 * Pass the message as a function on hot paths: a template literal would be
 * formatted on every call, even when the check passes.
 */
export function check(cond: unknown, code: ErrorCode, message: string | (() => string)): asserts cond {
  if (!cond) throw new MorselError(code, typeof message === 'string' ? message : message());
}

/**
 * Internal invariant. A failure is a bug in morsel, never the caller's fault;
 * asserts are dense on purpose (TIGER_STYLE) and cheap enough to stay on.
 */
export function assert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

export function isMorselError(e: unknown, code?: ErrorCode): e is MorselError {
  return e instanceof MorselError && (code === undefined || e.code === code);
}
