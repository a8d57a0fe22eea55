/**
 * Forwards one HTTP request to an upstream: picks a peer, sends, retries on the
 * next peer as nginx's proxy_next_upstream does, and streams the response back.
 * One object per request; callbacks are methods, not per-request closures.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { LocationConfig, NextUpstreamCondition } from '../config/load.js';
import type { Peer } from '../balancer/peer.js';
import type { Upstream } from '../balancer/upstream.js';
import type { PickRequest } from '../balancer/policy.js';
import type { Attempt, AttemptFailure, AttemptHandler, UpstreamResponse } from './transport.js';
import { clientResponseHeaders, upstreamRequestHeaders } from './headers.js';
import { sendError } from './errors.js';
import type { EventLog } from '../observability/log.js';

/** Bodies up to this size are read before the first attempt so that any attempt can replay them (nginx buffers bodies too). */
export const REPLAYABLE_BODY_LIMIT = 64 * 1024;

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Everything the forwarder needs about where a request goes, resolved once per config. */
export interface Route {
  readonly location: LocationConfig;
  readonly upstream: Upstream;
  readonly scheme: string;
}

/** What happened, for the access log and metrics (filled as the request goes). */
export interface ForwardRecord {
  upstreamAddrs: string[];
  upstreamStatuses: string[];
  upstreamTimes: string[];
}

export interface ForwardHooks {
  log: EventLog;
  /** Called once when the request is over (response finished or connection gone). */
  onDone?(req: IncomingMessage, res: ServerResponse, record: ForwardRecord): void;
}

function statusCondition(status: number): NextUpstreamCondition | null {
  switch (status) {
    case 500: return 'http_500';
    case 502: return 'http_502';
    case 503: return 'http_503';
    case 504: return 'http_504';
    case 403: return 'http_403';
    case 404: return 'http_404';
    case 429: return 'http_429';
    default: return null;
  }
}

export class ForwardRequest implements AttemptHandler, PickRequest {
  readonly remoteAddress: string;
  private readonly upstream: Upstream;
  private readonly on: ReadonlySet<NextUpstreamCondition>;
  private readonly startedAt: number;
  private tried: Set<Peer> | null = null;
  private triesLeft: number;
  private peer: Peer | null = null;
  private attempt: Attempt | null = null;
  private attemptStartedAt = 0;
  private headers: string[] | null = null;
  private path: string;
  /** Complete body (replayable), a stream (replayable only until first sent), or none. */
  private body: Buffer | Readable | null = null;
  private streamUsed = false;
  private staleRetried = false;
  private finished = false;
  readonly record: ForwardRecord = { upstreamAddrs: [], upstreamStatuses: [], upstreamTimes: [] };

  constructor(
    readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly route: Route,
    private readonly hooks: ForwardHooks,
  ) {
    this.remoteAddress = req.socket.remoteAddress ?? '';
    this.upstream = route.upstream;
    this.on = route.upstream.config.nextUpstream.on;
    this.triesLeft = route.upstream.maxTries;
    this.startedAt = Date.now();
    this.path = rewritePath(req.url ?? '/', route.location);
    res.on('close', this.onClientClose);
  }

  /** Entry point: checks the body size, reads a small body, then makes the first attempt. */
  start(): void {
    const req = this.req;
    const limit = this.route.location.clientMaxBodySize;
    const te = req.headers['transfer-encoding'];
    const clText = req.headers['content-length'];
    let framing: { contentLength: number } | 'chunked' | null = null;
    if (te !== undefined) {
      framing = 'chunked';
    } else if (clText !== undefined) {
      const length = Number(clText);
      if (limit !== 0 && length > limit) {
        this.hooks.log.warn({ upstream: this.upstream.name, length, limit }, 'client intended to send too large body');
        this.respondError(413, true);
        return;
      }
      if (length > 0) framing = { contentLength: length };
    }
    this.headers = upstreamRequestHeaders(req.rawHeaders, {
      remoteAddress: this.remoteAddress,
      scheme: this.route.scheme,
      bodyFraming: framing,
      upgrade: null,
    }, this.route.location.setHeaders);

    if (framing === null) {
      req.resume();
      this.next();
    } else if (framing !== 'chunked' && framing.contentLength <= REPLAYABLE_BODY_LIMIT) {
      this.bufferBody(framing.contentLength);
    } else {
      this.body = req;
      if (limit !== 0 && framing === 'chunked') this.enforceStreamLimit(limit);
      this.next();
    }
  }

  private chunks: Buffer[] = [];
  private bufferBody(length: number): void {
    this.chunks = [];
    this.req.on('data', this.onBodyData);
    this.req.on('end', this.onBodyEnd);
    this.bufferedLength = length;
  }
  private bufferedLength = 0;
  private readonly onBodyData = (chunk: Buffer): void => { this.chunks.push(chunk); };
  private readonly onBodyEnd = (): void => {
    this.body = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.bufferedLength);
    this.chunks = [];
    if (!this.finished) this.next();
  };

  private streamedBytes = 0;
  private streamLimit = 0;
  private enforceStreamLimit(limit: number): void {
    this.streamLimit = limit;
    this.req.on('data', this.countStreamed);
  }
  private readonly countStreamed = (chunk: Buffer): void => {
    this.streamedBytes += chunk.length;
    if (this.streamedBytes > this.streamLimit) {
      this.req.off('data', this.countStreamed);
      this.hooks.log.warn({ upstream: this.upstream.name, limit: this.streamLimit }, 'client intended to send too large chunked body');
      this.abortAttempt(false);
      this.respondError(413, true);
    }
  };

  /** Picks the next peer and sends the request there, or answers 502 when no peer is left. */
  private next(): void {
    const now = Date.now();
    const peer = this.upstream.select(this, this.tried, now);
    if (peer === null) {
      this.hooks.log.error({ upstream: this.upstream.name, request: `${this.req.method} ${this.req.url}` },
        `no live upstreams while connecting to upstream "${this.upstream.name}"`);
      this.respondError(502);
      return;
    }
    this.send(peer, now);
  }

  private send(peer: Peer, now: number): void {
    this.peer = peer;
    this.triesLeft--;
    (this.tried ??= new Set()).add(peer);
    this.attemptStartedAt = now;
    this.record.upstreamAddrs.push(peer.name);
    if (this.body !== null && !Buffer.isBuffer(this.body)) this.streamUsed = true;
    this.attempt = peer.pool.request(
      { method: this.req.method ?? 'GET', path: this.path, headers: this.headers! },
      this.body,
      this,
    );
  }

  private mayRetry(sent: boolean): boolean {
    if (this.triesLeft <= 0 || this.finished) return false;
    const limit = this.upstream.config.nextUpstream.timeoutMs;
    if (limit !== 0 && Date.now() - this.startedAt >= limit) return false;
    if (this.streamUsed) return false; // a streamed body cannot be sent twice
    if (sent && !IDEMPOTENT.has(this.req.method ?? 'GET') && !this.on.has('non_idempotent')) return false;
    return true;
  }

  private endAttempt(status: string, failed: boolean): Peer {
    const peer = this.peer!;
    this.record.upstreamStatuses.push(status);
    this.record.upstreamTimes.push(((Date.now() - this.attemptStartedAt) / 1000).toFixed(3));
    this.upstream.release(peer, failed, Date.now());
    this.peer = null;
    this.attempt = null;
    return peer;
  }

  onUpstreamError(failure: AttemptFailure): void {
    if (this.finished) return;
    const peer = this.peer!;
    // A kept-alive connection the upstream had already closed: retry once on a new connection, not a failure of the peer.
    if (failure.staleConnection && !this.staleRetried && !this.streamUsed) {
      this.staleRetried = true;
      this.record.upstreamAddrs.pop();
      this.upstream.release(peer, false, Date.now());
      this.upstream.acquire(peer, Date.now());
      this.triesLeft++;
      this.send(peer, Date.now());
      return;
    }
    this.endAttempt('502', true);
    const isTimeout = failure.kind === 'timeout';
    const condition: NextUpstreamCondition = isTimeout ? 'timeout' : failure.kind === 'invalid_header' ? 'invalid_header' : 'error';
    this.hooks.log.error({ upstream: this.upstream.name, server: peer.name, reason: failure.kind, request: `${this.req.method} ${this.req.url}` },
      `upstream ${isTimeout ? 'timed out' : 'failed'}: ${failure.message}`);
    if (this.on.has(condition) && this.mayRetry(failure.requestSent)) {
      this.next();
      return;
    }
    this.respondError(isTimeout ? 504 : 502);
  }

  onUpstreamResponse(upstreamRes: UpstreamResponse): void {
    if (this.finished) {
      upstreamRes.body.resume();
      return;
    }
    const status = upstreamRes.statusCode;
    const condition = statusCondition(status);
    if (condition !== null && this.on.has(condition) && this.mayRetry(true)) {
      // nginx: 403/404 move on without marking the peer failed; 5xx and 429 count as failures.
      const failed = status !== 403 && status !== 404;
      const peer = this.peer!;
      this.upstream.release(peer, failed, Date.now());
      const now = Date.now();
      const nextPeer = this.upstream.select(this, this.tried, now);
      if (nextPeer !== null) {
        this.record.upstreamStatuses.push(String(status));
        this.record.upstreamTimes.push(((now - this.attemptStartedAt) / 1000).toFixed(3));
        upstreamRes.body.resume();
        this.send(nextPeer, now);
        return;
      }
      // Nowhere else to go: pass this response through rather than turn it into a 502.
      this.upstream.acquire(peer, now);
    }
    this.passResponse(upstreamRes);
  }

  private upstreamRes: UpstreamResponse | null = null;
  private passResponse(upstreamRes: UpstreamResponse): void {
    const res = this.res;
    this.upstreamRes = upstreamRes;
    this.record.upstreamStatuses.push(String(upstreamRes.statusCode));
    this.record.upstreamTimes.push(((Date.now() - this.attemptStartedAt) / 1000).toFixed(3));
    try {
      res.writeHead(upstreamRes.statusCode, upstreamRes.statusMessage || undefined, clientResponseHeaders(upstreamRes.rawHeaders, false));
    } catch (err) {
      this.hooks.log.error({ upstream: this.upstream.name, server: this.peer!.name, err: (err as Error).message }, 'upstream sent an invalid header');
      upstreamRes.body.destroy();
      this.upstream.release(this.peer!, true, Date.now());
      this.peer = null;
      this.respondError(502);
      return;
    }
    upstreamRes.body.on('end', this.onUpstreamBodyEnd);
    upstreamRes.body.on('error', this.onUpstreamBodyError);
    upstreamRes.body.pipe(res);
  }

  private readonly onUpstreamBodyEnd = (): void => {
    if (this.peer !== null) {
      this.upstream.release(this.peer, false, Date.now());
      this.peer = null;
    }
  };

  private readonly onUpstreamBodyError = (err: Error): void => {
    if (this.peer !== null) {
      this.hooks.log.error({ upstream: this.upstream.name, server: this.peer.name, err: err.message },
        'upstream prematurely closed connection while reading upstream');
      this.upstream.release(this.peer, true, Date.now());
      this.peer = null;
    }
    // The status line is gone already: the only honest signal left is a broken connection.
    this.res.destroy();
  };

  private abortAttempt(failed: boolean): void {
    if (this.attempt !== null) this.attempt.abort();
    this.attempt = null;
    if (this.upstreamRes !== null) this.upstreamRes.body.destroy();
    if (this.peer !== null) {
      this.upstream.release(this.peer, failed, Date.now());
      this.peer = null;
    }
  }

  private readonly onClientClose = (): void => {
    if (!this.res.writableFinished) {
      // Client went away (nginx logs 499): stop the upstream side, the peer did nothing wrong.
      this.abortAttempt(false);
    }
    this.finished = true;
    this.hooks.onDone?.(this.req, this.res, this.record);
  };

  private respondError(status: number, close = false): void {
    if (this.res.headersSent) {
      this.res.destroy();
      return;
    }
    if (this.streamUsed || close) {
      // The client may still be sending a body we will not read: close after answering.
      sendError(this.res, status, true);
      return;
    }
    sendError(this.res, status);
  }
}

/** nginx proxy_pass with a URI: the matched location prefix is replaced by it. */
export function rewritePath(url: string, location: LocationConfig): string {
  if (location.rewritePrefix === null) return url;
  if (location.exact) {
    const q = url.indexOf('?');
    return location.rewritePrefix + (q >= 0 ? url.slice(q) : '');
  }
  return location.rewritePrefix + url.slice(location.path.length);
}
