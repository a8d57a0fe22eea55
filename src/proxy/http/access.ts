/**
 * A location's access checks before it is forwarded, in nginx's order (`satisfy all`, the
 * default): allow/deny first (403, logged "access forbidden by rule"), then HTTP Basic
 * authentication (401 with WWW-Authenticate). The client address is requestClientAddress's (the
 * PROXY header's, or the real IP's). Passwords and the Authorization header are never logged.
 */
import type { IncomingMessage } from 'node:http';
import { createHash } from 'node:crypto';
import type { AuthBasicConfig, LocationConfig } from '../../config/model.js';
import type { HtpasswdFile } from '../../config/htpasswd.js';
import type { EventLog } from '../../observability/log.js';
import { requestClientAddress } from '../../net/client-address.js';
import { ipAllowed } from '../../net/ip-rules.js';
import { verifyPassword } from './password-hashes.js';

/** 0: go on; 403 or 401: answer that (401: with `WWW-Authenticate: location.authBasic.challenge`). */
export type Verdict = 0 | 401 | 403;

/**
 * Credentials verified lately, per user file (dropped with it on reload): SHA-256 of
 * "user\0password" -> whether it matched, so that bcrypt or SHA-crypt (tens of ms, in this
 * thread) runs once per credential, not per request, also for a client repeating a wrong one.
 * Holds no password. Bounded: cleared when full.
 */
const verified = new WeakMap<HtpasswdFile, Map<string, boolean>>();
const VERIFIED_MAX = 4096;

function logContext(req: IncomingMessage, client: string, server: string): Record<string, string> {
  return { client, server, request: `${req.method ?? ''} ${req.url ?? ''} HTTP/${req.httpVersion}`, host: req.headers.host ?? '' };
}

/** The user and password of a Basic Authorization header; null when absent or malformed (nginx: 401). */
function basicCredentials(header: string | undefined): { user: string; password: Buffer } | null {
  if (header === undefined || header.length < 6 || header.slice(0, 6).toLowerCase() !== 'basic ') return null;
  const encoded = header.slice(6).trim();
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(encoded)) return null;
  const decoded = Buffer.from(encoded, 'base64');
  const colon = decoded.indexOf(0x3a);
  if (colon <= 0) return null; // nginx: no ':' or an empty user is no credentials
  return { user: decoded.subarray(0, colon).toString('utf8'), password: decoded.subarray(colon + 1) };
}

function authenticate(req: IncomingMessage, auth: AuthBasicConfig, log: EventLog, client: string, server: string): Verdict | Promise<Verdict> {
  const credentials = basicCredentials(req.headers.authorization);
  if (credentials === null) {
    if (req.headers.authorization === undefined) {
      log.info(logContext(req, client, server), 'no user/password was provided for basic authentication');
    } else {
      log.error(logContext(req, client, server), 'client sent invalid Basic authorization');
    }
    return 401;
  }
  const file = auth.userFile;
  let cache = verified.get(file);
  if (cache === undefined) verified.set(file, cache = new Map());
  const key = createHash('sha256').update(`${credentials.user.length}:${credentials.user}`).update(credentials.password).digest('base64');
  const known = cache.get(key);
  const stored = file.users.get(credentials.user);
  if (known === true) return 0;
  if (stored === undefined) {
    log.error({ ...logContext(req, client, server), user: credentials.user }, `user "${credentials.user}" was not found in "${file.file}"`);
    return 401;
  }
  const done = (ok: boolean): Verdict => {
    if (cache.size >= VERIFIED_MAX) cache.clear();
    cache.set(key, ok);
    if (!ok) {
      log.error({ ...logContext(req, client, server), user: credentials.user }, `user "${credentials.user}": password mismatch`);
      return 401;
    }
    return 0;
  };
  if (known === false) return done(false);
  const result = verifyPassword(stored, credentials.password);
  return typeof result === 'boolean' ? done(result) : result.then(done, () => done(false));
}

/**
 * Whether the request may go on to `location`: access rules, then Basic authentication (a
 * promise only when a bcrypt hash must be computed). Call only when location.access or
 * location.authBasic is set.
 */
export function checkAccess(req: IncomingMessage, location: LocationConfig, log: EventLog, server: string): Verdict | Promise<Verdict> {
  const client = requestClientAddress(req);
  if (location.access !== null && !ipAllowed(location.access, client)) {
    log.error(logContext(req, client, server), 'access forbidden by rule');
    return 403;
  }
  if (location.authBasic === null) return 0;
  return authenticate(req, location.authBasic, log, client, server);
}
