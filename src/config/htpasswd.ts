/**
 * htpasswd user files (nginx auth_basic_user_file): read at load and on every reload, each line
 * `user:hash[:comment]`, `#` comments. Each hash is classified here (the verifiers are
 * proxy/http/password-hashes.ts): bcrypt ($2a$/$2b$/$2y$), SHA-crypt ($5$/$6$), MD5-crypt
 * ($apr1$, $1$), {SHA} and {SSHA} (salted SHA-1), with a warning, and {PLAIN}, with a warning.
 * crypt(3) DES and anything else is a load error: better a failed load than a user who cannot
 * log in or, worse, a hash compared as text.
 */
import { readFile } from 'node:fs/promises';

export type HashScheme = 'bcrypt' | 'sha256-crypt' | 'sha512-crypt' | 'apr1' | 'md5-crypt' | 'sha1' | 'ssha' | 'plain';

export interface PasswordHash {
  readonly scheme: HashScheme;
  /** The hash as written (for {PLAIN}: the password after the prefix). */
  readonly hash: string;
}

/** One user file as read: user -> hash, and what deserves a warning (never a password or a hash). */
export interface HtpasswdFile {
  readonly file: string;
  readonly users: ReadonlyMap<string, PasswordHash>;
  readonly warnings: string[];
}

const CRYPT64 = '[./0-9A-Za-z]';

/** The scheme of one hash, or an error message. */
export function hashScheme(hash: string): HashScheme | string {
  if (/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) return 'bcrypt';
  if (hash.startsWith('$5$') || hash.startsWith('$6$')) {
    const m = new RegExp(`^\\$([56])\\$(rounds=(\\d+)\\$)?[^$:]{0,16}\\$${CRYPT64}+$`).exec(hash);
    if (m === null) return 'is not a valid SHA-crypt hash';
    return m[1] === '5' ? 'sha256-crypt' : 'sha512-crypt';
  }
  if (hash.startsWith('$apr1$')) return new RegExp(`^\\$apr1\\$[^$]{0,8}\\$${CRYPT64}{22}$`).test(hash) ? 'apr1' : 'is not a valid apr1 hash';
  if (hash.startsWith('$1$')) return new RegExp(`^\\$1\\$[^$]{0,8}\\$${CRYPT64}{22}$`).test(hash) ? 'md5-crypt' : 'is not a valid MD5-crypt hash';
  if (hash.startsWith('{SHA}')) return /^\{SHA\}[A-Za-z0-9+/]{27}=$/.test(hash) ? 'sha1' : 'is not a valid {SHA} hash';
  if (hash.startsWith('{SSHA}')) return /^\{SSHA\}[A-Za-z0-9+/]{28,}={0,2}$/.test(hash) ? 'ssha' : 'is not a valid {SSHA} hash';
  if (hash.startsWith('{PLAIN}')) return 'plain';
  if (new RegExp(`^${CRYPT64}{13}$`).test(hash)) {
    return 'is a crypt(3) DES hash (8-character passwords, broken in seconds): make it bcrypt (htpasswd -B) or SHA-512 crypt (openssl passwd -6)';
  }
  if (hash.startsWith('$')) return `uses the unsupported scheme "${hash.split('$')[1] ?? ''}" (supported: bcrypt $2y$, SHA-crypt $5$/$6$, apr1, {SHA}, {SSHA}, {PLAIN})`;
  return 'is not a hash sessionlb knows (bcrypt $2y$, SHA-crypt $5$/$6$, apr1, {SHA}, {SSHA}, {PLAIN})';
}

/** Parses the text of `file`; problems name the file and line, never the hash. */
export function parseHtpasswd(text: string, file: string): { parsed: HtpasswdFile; problems: string[] } {
  const users = new Map<string, PasswordHash>();
  const warnings: string[] = [];
  const problems: string[] = [];
  const plain: string[] = [];
  const sha1: string[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon <= 0) {
      problems.push(`${file}:${i + 1}: not "user:hash"`);
      return;
    }
    const user = line.slice(0, colon);
    const rest = line.slice(colon + 1);
    // nginx: the hash ends at the next ':' (a comment may follow), except {PLAIN}, read to the end of the line.
    const hash = rest.startsWith('{PLAIN}') ? rest : rest.split(':')[0]!;
    const scheme = hashScheme(hash);
    if (scheme === 'bcrypt' || scheme === 'sha256-crypt' || scheme === 'sha512-crypt' || scheme === 'apr1' || scheme === 'md5-crypt'
      || scheme === 'sha1' || scheme === 'ssha' || scheme === 'plain') {
      if (users.has(user)) return; // nginx takes the first line of a user
      users.set(user, { scheme, hash: scheme === 'plain' ? hash.slice(7) : hash });
      if (scheme === 'plain') plain.push(user);
      if (scheme === 'sha1' || scheme === 'ssha') sha1.push(user);
    } else {
      problems.push(`${file}:${i + 1}: the password of user "${user}" ${scheme}`);
    }
  });
  if (plain.length > 0) warnings.push(`${file}: users ${plain.join(', ')} have {PLAIN} passwords, readable by anyone who reads the file; hash them (htpasswd -B, openssl passwd -6)`);
  if (sha1.length > 0) warnings.push(`${file}: users ${sha1.join(', ')} have {SHA}/{SSHA} passwords (one SHA-1, fast to brute-force); prefer bcrypt (htpasswd -B) or SHA-512 crypt (openssl passwd -6)`);
  return { parsed: { file, users, warnings }, problems };
}

/** Reads and parses a user file; problems (unreadable, bad lines) name the file. */
export async function readHtpasswd(file: string): Promise<{ parsed: HtpasswdFile | null; problems: string[] }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    return { parsed: null, problems: [`cannot read user file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`] };
  }
  return parseHtpasswd(text, file);
}
