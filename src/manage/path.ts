/**
 * Namespace paths: parsing and validation into UTF-8 component byte ranges,
 * without allocating on the lookup path (one parser, one scratch buffer per
 * Namespace instance).
 *
 * A valid path is absolute ('/' or '/a/b'), at most PATH_MAX_BYTES bytes of
 * UTF-8, every component 1..NAME_MAX_BYTES bytes, no NUL, no '.' or '..'
 * component, no empty component (so no '//' and no trailing '/'), and no
 * unpaired UTF-16 surrogate (which UTF-8 cannot represent: two different
 * strings would become one name).
 */
import { check } from '../errors.js';

export const NAME_MAX_BYTES = 255;
export const PATH_MAX_BYTES = 4096;
/** Components a valid path can have: '/x' per component. */
export const PATH_MAX_COMPONENTS = PATH_MAX_BYTES / 2;
/** UTF-8 bytes per UTF-16 code unit, at most. */
const UTF8_PER_UNIT = 3;
const SLASH = 0x2f;
const DOT = 0x2e;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const encoder = new TextEncoder();

/** A parsed path: component i is bytes[starts[i], ends[i]). Reused by the next parse. */
export class PathParser {
  readonly bytes = new Uint8Array(PATH_MAX_BYTES * UTF8_PER_UNIT);
  readonly starts = new Int32Array(PATH_MAX_COMPONENTS);
  readonly ends = new Int32Array(PATH_MAX_COMPONENTS);
  count = 0;
  byteLength = 0;

  /** Parses `path` (EINVAL / ENAMETOOLONG when invalid). Returns the component count. */
  parse(path: unknown): number {
    check(typeof path === 'string', 'EINVAL', () => `path must be a string, got ${typeof path}`);
    check(path.length <= PATH_MAX_BYTES, 'ENAMETOOLONG', () => `path longer than ${PATH_MAX_BYTES} bytes`);
    check(path.length > 0 && path.charCodeAt(0) === SLASH, 'EINVAL', () => `path must be absolute: ${JSON.stringify(path)}`);
    const written = this.encode(path);
    this.byteLength = written;
    this.count = 0;
    if (written === 1) return 0; // '/'
    let start = 1;
    for (let i = 1; i <= written; i++) {
      if (i < written && this.bytes[i] !== SLASH) {
        check(this.bytes[i] !== 0, 'EINVAL', 'path contains a NUL byte');
        continue;
      }
      this.addComponent(start, i, path);
      start = i + 1;
    }
    return this.count;
  }

  /** UTF-8 bytes of `path` into this.bytes (ASCII copied directly: no encoder, no surrogate scan). */
  private encode(path: string): number {
    let ascii = true;
    for (let i = 0; i < path.length && ascii; i++) {
      const c = path.charCodeAt(i);
      this.bytes[i] = c;
      ascii = c < 0x80;
    }
    if (ascii) return path.length;
    check(!LONE_SURROGATE.test(path), 'EINVAL', 'path contains an unpaired UTF-16 surrogate');
    return encoder.encodeInto(path, this.bytes).written;
  }

  private addComponent(start: number, end: number, path: string): void {
    const len = end - start;
    check(len > 0, 'EINVAL', () => `empty path component in ${JSON.stringify(path)}`);
    check(len <= NAME_MAX_BYTES, 'ENAMETOOLONG', () => `path component of ${len} bytes is longer than ${NAME_MAX_BYTES}`);
    const dots = this.bytes[start] === DOT && (len === 1 || (len === 2 && this.bytes[start + 1] === DOT));
    check(!dots, 'EINVAL', () => `'.' and '..' are not allowed as path components: ${JSON.stringify(path)}`);
    this.starts[this.count] = start;
    this.ends[this.count] = end;
    this.count++;
  }

  /** Whether this path lies strictly below `other` (both parsed; compares bytes). */
  isBelow(other: PathParser): boolean {
    if (this.byteLength <= other.byteLength || this.bytes[other.byteLength] !== SLASH) return false;
    for (let i = 0; i < other.byteLength; i++) if (this.bytes[i] !== other.bytes[i]) return false;
    return other.count > 0;
  }

  /** Whether both parsed paths are the same bytes. */
  equals(other: PathParser): boolean {
    if (this.byteLength !== other.byteLength) return false;
    for (let i = 0; i < this.byteLength; i++) if (this.bytes[i] !== other.bytes[i]) return false;
    return true;
  }
}
