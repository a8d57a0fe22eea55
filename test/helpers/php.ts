/** A PHP-like backend (session_start() semantics) and a client that keeps a cookie jar, for sticky-session tests. */
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import type { BackendHandler } from './net.js';

/** A PHP-like id: 26 chars of PHP's 5-bits-per-character alphabet. */
export function newSessionId(): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuv';
  let id = '';
  for (const b of randomBytes(26)) id += alphabet[b & 31];
  return id;
}

/**
 * Like session_start(): a request without PHPSESSID gets a new id in Set-Cookie. `/regenerate`
 * issues a new id (session_regenerate_id), `/logout` deletes the cookie as PHP does.
 * Answers "<backend name> <session id>" and echoes the Cookie header it got in X-Seen-Cookie.
 */
export const phpHandler: BackendHandler = (req, res, b) => {
  req.resume();
  const m = /(?:^|;\s*)PHPSESSID=([^;]*)/.exec(req.headers.cookie ?? '');
  let id = m?.[1];
  const headers: Record<string, string | string[]> = {
    'Content-Type': 'text/plain', 'X-Backend': b.name, 'X-Seen-Cookie': req.headers.cookie ?? '',
  };
  const url = req.url ?? '/';
  if (url.startsWith('/logout')) {
    headers['Set-Cookie'] = 'PHPSESSID=deleted; expires=Thu, 01-Jan-1970 00:00:01 GMT; Max-Age=0; path=/';
  } else if (id === undefined || url.startsWith('/regenerate')) {
    id = newSessionId();
    headers['Set-Cookie'] = `PHPSESSID=${id}; path=/; HttpOnly`;
  }
  const body = `${b.name} ${id ?? '-'}`;
  headers['Content-Length'] = String(Buffer.byteLength(body));
  res.writeHead(200, headers);
  res.end(body);
};

export interface ClientResponse {
  status: number;
  backend: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  ms: number;
}

/** A browser-like client: one cookie jar, keep-alive agent shared by the caller. */
export class CookieClient {
  readonly jar = new Map<string, string>();

  constructor(readonly agent: http.Agent) {}

  cookieHeader(): string | undefined {
    if (this.jar.size === 0) return undefined;
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  get(url: string, extraHeaders: Record<string, string> = {}): Promise<ClientResponse> {
    const started = performance.now();
    const headers: Record<string, string> = { ...extraHeaders };
    const cookie = this.cookieHeader();
    if (cookie !== undefined) headers.Cookie = cookie;
    return new Promise((resolve) => {
      const req = http.get(url, { agent: this.agent, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          for (const sc of res.headers['set-cookie'] ?? []) {
            const m = /^([^=]+)=([^;]*)/.exec(sc);
            if (!m) continue;
            if (/max-age=0/i.test(sc) || m[2] === 'deleted') this.jar.delete(m[1]!);
            else this.jar.set(m[1]!, m[2]!);
          }
          resolve({
            status: res.statusCode ?? 0, backend: String(res.headers['x-backend'] ?? ''), headers: res.headers,
            body: Buffer.concat(chunks).toString(), ms: performance.now() - started,
          });
        });
        res.on('error', () => resolve({ status: 0, backend: '', headers: {}, body: '', ms: performance.now() - started }));
      });
      req.setTimeout(10_000, () => req.destroy(new Error('client timeout')));
      req.on('error', (err) => resolve({ status: 0, backend: '', headers: {}, body: err.message, ms: performance.now() - started }));
    });
  }
}

/** Runs `fn` over items with at most `concurrency` in flight. */
export async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}
