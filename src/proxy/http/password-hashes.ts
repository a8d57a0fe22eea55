/**
 * Password verification for htpasswd hashes (classified by config/htpasswd.ts): bcrypt through
 * bcryptjs (node has no bcrypt; pure JS, constant-time compare), SHA-crypt ($5$/$6$, written from
 * Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512" specification), MD5-crypt ($1$) and
 * Apache's apr1 (the same algorithm with the magic "$apr1$", as apr_md5.c describes it), {SHA}
 * and {SSHA} (base64 SHA-1), {PLAIN}. Every scheme computes the hash of the given password and
 * compares the whole result with crypto.timingSafeEqual.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcryptjs';
import type { PasswordHash } from '../../config/htpasswd.js';

const CRYPT64 = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** crypt's base-64 of three bytes (b2 the high one), `n` characters, least significant 6 bits first. */
function b64From24(b2: number, b1: number, b0: number, n: number): string {
  let w = (b2 << 16) | (b1 << 8) | b0;
  let out = '';
  for (let i = 0; i < n; i++) {
    out += CRYPT64[w & 0x3f];
    w >>= 6;
  }
  return out;
}

/** `source` repeated to `length` bytes. */
function repeatTo(source: Buffer, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i += source.length) source.copy(out, i, 0, Math.min(source.length, length - i));
  return out;
}

/**
 * A crypt computation cut into steps: `run(n)` does up to n of its rounds and returns true when
 * all are done; `result()` then gives the whole hash. The SHA-crypt and MD5-crypt rounds take
 * tens of milliseconds in all (5000 SHA-512 rounds by default): verifyPassword runs them a slice
 * at a time between other events, so a request with a wrong password never stalls the others.
 */
interface CryptSteps {
  run(rounds: number): boolean;
  result(): string;
}

/** Drepper's SHA-crypt: `setting` is "$5$salt" / "$6$rounds=N$salt" (a whole hash too). */
function shaCryptSteps(password: Buffer, setting: string): CryptSteps {
  const m = /^\$([56])\$(?:rounds=(\d+)\$)?([^$]*)/.exec(setting);
  if (m === null) throw new Error('not a SHA-crypt setting');
  const algorithm = m[1] === '5' ? 'sha256' : 'sha512';
  const size = algorithm === 'sha256' ? 32 : 64;
  const customRounds = m[2] !== undefined;
  const rounds = customRounds ? Math.min(999_999_999, Math.max(1000, Number(m[2]))) : 5000;
  const salt = Buffer.from(m[3]!.slice(0, 16), 'utf8');
  const p = password;
  const b = createHash(algorithm).update(p).update(salt).update(p).digest();
  const a = createHash(algorithm).update(p).update(salt).update(repeatTo(b, p.length));
  for (let n = p.length; n > 0; n >>= 1) a.update(n & 1 ? b : p);
  let c = a.digest();
  const dp = createHash(algorithm);
  for (let i = 0; i < p.length; i++) dp.update(p);
  const pBytes = repeatTo(dp.digest(), p.length);
  const ds = createHash(algorithm);
  for (let i = 0; i < 16 + c[0]!; i++) ds.update(salt);
  const sBytes = repeatTo(ds.digest(), salt.length);
  let i = 0;
  return {
    run(count: number): boolean {
      const end = Math.min(rounds, i + count);
      for (; i < end; i++) {
        const r = createHash(algorithm);
        r.update(i & 1 ? pBytes : c);
        if (i % 3 !== 0) r.update(sBytes);
        if (i % 7 !== 0) r.update(pBytes);
        r.update(i & 1 ? c : pBytes);
        c = r.digest();
      }
      return i === rounds;
    },
    result(): string {
      let out = '';
      if (size === 32) {
        for (let k = 0; k < 10; k++) {
          const x = c[k]!, y = c[k + 10]!, z = c[k + 20]!;
          out += k % 3 === 0 ? b64From24(x, y, z, 4) : k % 3 === 1 ? b64From24(z, x, y, 4) : b64From24(y, z, x, 4);
        }
        out += b64From24(0, c[31]!, c[30]!, 3);
      } else {
        for (let k = 0; k < 21; k++) {
          const x = c[k]!, y = c[k + 21]!, z = c[k + 42]!;
          out += k % 3 === 0 ? b64From24(x, y, z, 4) : k % 3 === 1 ? b64From24(y, z, x, 4) : b64From24(z, x, y, 4);
        }
        out += b64From24(0, 0, c[63]!, 2);
      }
      return `$${m[1]}$${customRounds ? `rounds=${rounds}$` : ''}${m[3]!.slice(0, 16)}$${out}`;
    },
  };
}

/** MD5-crypt with magic "$1$" or Apache's "$apr1$"; `setting`: "$apr1$salt" (a whole hash too). */
function md5CryptSteps(password: Buffer, setting: string): CryptSteps {
  const magic = setting.startsWith('$apr1$') ? '$apr1$' : '$1$';
  if (!setting.startsWith(magic)) throw new Error('not an MD5-crypt setting');
  let saltText = setting.slice(magic.length);
  const dollar = saltText.indexOf('$');
  if (dollar >= 0) saltText = saltText.slice(0, dollar);
  saltText = saltText.slice(0, 8);
  const salt = Buffer.from(saltText, 'utf8');
  const p = password;
  let final = createHash('md5').update(p).update(salt).update(p).digest();
  const ctx = createHash('md5').update(p).update(magic).update(salt);
  for (let n = p.length; n > 0; n -= 16) ctx.update(final.subarray(0, Math.min(n, 16)));
  const zero = Buffer.alloc(1);
  for (let n = p.length; n > 0; n >>= 1) ctx.update(n & 1 ? zero : p.subarray(0, 1));
  final = ctx.digest();
  let i = 0;
  return {
    run(count: number): boolean {
      const end = Math.min(1000, i + count);
      for (; i < end; i++) {
        const r = createHash('md5');
        r.update(i & 1 ? p : final);
        if (i % 3 !== 0) r.update(salt);
        if (i % 7 !== 0) r.update(p);
        r.update(i & 1 ? final : p);
        final = r.digest();
      }
      return i === 1000;
    },
    result(): string {
      const f = final;
      const out = b64From24(f[0]!, f[6]!, f[12]!, 4) + b64From24(f[1]!, f[7]!, f[13]!, 4) + b64From24(f[2]!, f[8]!, f[14]!, 4)
        + b64From24(f[3]!, f[9]!, f[15]!, 4) + b64From24(f[4]!, f[10]!, f[5]!, 4) + b64From24(0, 0, f[11]!, 2);
      return `${magic}${saltText}$${out}`;
    },
  };
}

/** SHA-crypt at once (tests, and the vectors of the specification). */
export function shaCrypt(password: Buffer, setting: string): string {
  const steps = shaCryptSteps(password, setting);
  steps.run(Infinity);
  return steps.result();
}

/** MD5-crypt / apr1 at once. */
export function md5Crypt(password: Buffer, setting: string): string {
  const steps = md5CryptSteps(password, setting);
  steps.run(Infinity);
  return steps.result();
}

/** Rounds computed per turn of the event loop (about 5 ms of SHA-512). */
const ROUNDS_PER_TURN = 500;

/** Runs `steps` a slice per turn of the event loop; resolves with the hash. */
function inSlices(steps: CryptSteps): Promise<string> {
  return new Promise((resolve, reject) => {
    const next = (): void => {
      try {
        if (steps.run(ROUNDS_PER_TURN)) resolve(steps.result());
        else setImmediate(next);
      } catch (err) {
        reject(err as Error);
      }
    };
    next();
  });
}

/** Whether two strings are equal, in time that depends only on their lengths. */
function sameText(computed: string, expected: string): boolean {
  const a = Buffer.from(computed, 'utf8');
  const b = Buffer.from(expected, 'utf8');
  if (a.length !== b.length) {
    timingSafeEqual(b, b);
    return false;
  }
  return timingSafeEqual(a, b);
}

/**
 * Whether `password` matches `stored`: a boolean for the one-hash schemes, a promise for bcrypt,
 * SHA-crypt and MD5-crypt (computed a slice at a time, between other events).
 */
export function verifyPassword(stored: PasswordHash, password: Buffer): boolean | Promise<boolean> {
  switch (stored.scheme) {
    case 'bcrypt':
      // bcrypt reads at most 72 bytes; bcryptjs takes a string (UTF-8), as htpasswd -B was given.
      return bcrypt.compare(password.toString('utf8'), stored.hash);
    case 'sha256-crypt':
    case 'sha512-crypt':
      return inSlices(shaCryptSteps(password, stored.hash)).then((computed) => sameText(computed, stored.hash));
    case 'apr1':
    case 'md5-crypt':
      return inSlices(md5CryptSteps(password, stored.hash)).then((computed) => sameText(computed, stored.hash));
    case 'sha1':
      return sameText(`{SHA}${createHash('sha1').update(password).digest('base64')}`, stored.hash);
    case 'ssha': {
      const raw = Buffer.from(stored.hash.slice(6), 'base64');
      const salt = raw.subarray(20);
      return sameText(`{SSHA}${Buffer.concat([createHash('sha1').update(password).update(salt).digest(), salt]).toString('base64')}`, stored.hash);
    }
    case 'plain':
      // Hashed first, so that the comparison's time does not depend on the stored password's length.
      return timingSafeEqual(createHash('sha256').update(password).digest(), createHash('sha256').update(stored.hash).digest());
  }
}
