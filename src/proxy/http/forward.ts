/**
 * Forwards one HTTP request to an upstream: picks a peer, sends, retries on the
 * next peer as nginx's proxy_next_upstream does, and streams the response back.
 * One object per request; callbacks are methods, not per-request closures.
 */
import type { RouteLimits } from './limits.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { PassThrough, type Readable } from 'node:stream';
import type { LocationConfig, NextUpstreamCondition } from '../../config/model.js';
import type { Peer } from '../../balancer/peer.js';
import type { Upstream } from '../../balancer/upstream.js';
import { poolOf, type Attempt, type AttemptFailure, type AttemptHandler, type UpstreamResponse } from '../upstream/transport.js';
import { clientResponseHeaders, hasContentLength, requestScheme, upstreamRequestHeaders } from './headers.js';
import { sendError } from './errors.js';
import { addedHeaders, appendAddHeaders } from '../../config/response-headers.js';
import { endWithBody } from './whole-response.js';
import { deferWrite, type DeferredWrite } from '../upstream/write-batch.js';
import { release } from '../upstream/body-chunks.js';
import { proxyClientOf, requestClientAddress, requestPeerTrusted } from '../../net/client-address.js';
import { pathForMatching } from './router.js';
import { RequestBody, type RequestBodyOwner } from './request-body.js';
import { ResponseBuffer, type ResponseBufferOwner } from './response-buffer.js';
import type { EventLog } from '../../observability/log.js';
import { statusReason, type RouteMetrics } from '../../observability/metrics.js';
import type { RequestRecord } from '../../observability/access-log.js';
import type { Affinity } from '../../sessions/affinity.js';
import { AttemptLoop, failureCondition } from '../attempt-loop.js';
import { compressStream, compressWhole, prepareCompression, type Coding } from './compression.js';

/** Without request buffering, bodies up to this size are still read before the first attempt so that any attempt can replay them. */
export const REPLAYABLE_BODY_LIMIT = 64 * 1024;

/**
 * Event listeners shared by every request: the ForwardRequest is found through a symbol
 * property on the emitter (listeners run with `this` = the emitter), so a request allocates
 * no closures for its listeners (a hot-path rule).
 */
const FORWARD = Symbol('sessionlb.forward');
interface Owned { [FORWARD]?: ForwardRequest }
function owner(emitter: unknown): ForwardRequest {
  return (emitter as Owned)[FORWARD]!;
}
function resClosed(this: ServerResponse): void { owner(this).onClientClose(); }
function reqBodyData(this: IncomingMessage, chunk: Buffer): void { owner(this).onBodyData(chunk); }
function reqChunkedData(this: IncomingMessage, chunk: Buffer): void { owner(this).onChunkedData(chunk); }
function reqBodyEnd(this: IncomingMessage): void { owner(this).onBodyEnd(); }
function reqStreamedData(this: IncomingMessage, chunk: Buffer): void { owner(this).countStreamed(chunk); }
function reqSpoolData(this: IncomingMessage, chunk: Buffer): void { owner(this).onSpoolData(chunk); }
function reqSpoolEnd(this: IncomingMessage): void { owner(this).requestBody!.end(); }
function bodyData(this: Readable, chunk: Buffer): void { owner(this).onBodyChunk(chunk); }
function bodyEnd(this: Readable): void { owner(this).onStreamedBodyEnd(); }
function rawBodyEnd(this: Readable): void { owner(this).onUpstreamBodyEnd(Date.now()); }
function compressedWhole(this: ForwardRequest, err: Error | null, out: Buffer): void { this.onCompressedWhole(err, out); }
function resDrain(this: ServerResponse): void { owner(this).onClientDrain(); }
function bodyError(this: Readable, err: Error): void { owner(this).onUpstreamBodyError(err); }
function bodyPaused(this: Readable): void { owner(this).onResponsePaused(); }
function bodyResumed(this: Readable): void { owner(this).clearSendTimer(); }
function sendTimedOut(r: ForwardRequest): void { r.onSendTimeout(); }

/** The Content-Length of a response head (flat name/value list), or -1. */
function contentLength(headers: readonly string[]): number {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.length === 14 && headers[i]!.toLowerCase() === 'content-length') {
      const n = Number(headers[i + 1]);
      return Number.isInteger(n) ? n : -1;
    }
  }
  return -1;
}

/** Whether a response to `method` with `status` carries a body (and so its length): not HEAD, 204 or 304. */
function mayHaveBody(status: number, method: string | undefined): boolean {
  return status !== 204 && status !== 304 && method !== 'HEAD';
}

/**
 * RFC 9110's idempotent methods (9.2.2). Any other method (POST, PATCH, LOCK, PROPPATCH, ...) is
 * never sent a second time once a byte of it was written, on any connection, unless
 * `nextUpstream.on` lists "non_idempotent" (nginx and HAProxy keep the same rule).
 */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Everything the forwarder needs about where a request goes, resolved once per config. */
export interface Route {
  readonly location: LocationConfig;
  readonly upstream: Upstream;
  /** Metric cells for this (virtual server, upstream), resolved once per config. */
  readonly metrics?: RouteMetrics;
  /** Session affinity of the upstream (`sticky`), resolved once per config; absent/null = none. */
  readonly affinity?: Affinity | null;
  /** nginx send_timeout in ms (config `sendTimeout`); absent = nginx's 60s. */
  readonly sendTimeoutMs?: number;
  /** nginx underscores_in_headers (config `underscoresInHeaders`); absent = false. */
  readonly underscoresInHeaders?: boolean;
  /** Attempts in all: the location's nextUpstream.tries bounded by the servers (resolved once per config); absent = the upstream's. */
  readonly maxTries?: number;
  /** An "https://" proxyPass: the key of the location's TLS pool on each server (`Peer.tlsPools`); absent/null = plain HTTP. */
  readonly tlsPoolKey?: string | null;
  /** nginx limit_req / limit_conn of the location, bound to this process's decider; absent/null = none. */
  readonly limits?: RouteLimits | null;
}

/** What happened, for the access log and metrics (filled as the request goes). */
export interface ForwardRecord extends RequestRecord {
  /** Where the request went (upstream, location, metric cells). */
  route: Route;
}

export interface ForwardHooks {
  log: EventLog;
  /** This host ran out of a resource (`code`, e.g. EMFILE) in `operation`: counted, never against a server. */
  localError?(code: string, operation: string): void;
  /** A body went to a temp file (`direction`: request or response). */
  tempFile?(direction: 'request' | 'response'): void;
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

export class ForwardRequest extends AttemptLoop implements AttemptHandler, DeferredWrite, RequestBodyOwner, ResponseBufferOwner {
  private attempt: Attempt | null = null;
  private attemptStartedAt = 0;
  private headers: string[] | null = null;
  private path: string;
  /** Complete body (replayable: in memory, or stored whole by request buffering), a stream (replayable only until first sent), or none. */
  private body: Buffer | RequestBody | Readable | null = null;
  /** The body being read whole before the first attempt (proxyRequestBuffering). */
  requestBody: RequestBody | null = null;
  /** Response bytes the client has not taken yet (proxyBuffering); made when the client first falls behind. */
  private out: ResponseBuffer | null = null;
  /** The client socket's last write returned false and no 'drain' came yet. */
  private clientBlocked = false;
  /** The upstream is paused because `out` is full. */
  private upstreamHeld = false;
  /** The upstream body ended while `out` still held bytes: end the response once they are written. */
  private upstreamEnded = false;
  private streamUsed = false;
  private staleRetried = false;
  private finished = false;
  readonly record: ForwardRecord;
  /** nginx $scheme of this request's connection. */
  private readonly scheme: 'http' | 'https';

  /**
   * An error page's request (errorPage `uri`, nginx's internal redirect): the status it is answered
   * with, and the forwarded request whose error it serves (its access log line is the one written;
   * null when the listener answered and logged the error itself). Null for any other request.
   */
  private readonly page: { status: number; parent: ForwardRequest | null; original: IncomingMessage } | null;

  constructor(
    req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly route: Route,
    private readonly hooks: ForwardHooks,
    /** For an error page's request: the status to answer with, and the client's request it answers. */
    page: { status: number; original: IncomingMessage } | null = null,
  ) {
    const upstream = route.upstream;
    super(req, requestClientAddress(req), upstream, route.affinity ?? null, route.location.nextUpstream, route.maxTries ?? upstream.maxTries);
    this.record = {
      route, upstreamAddrs: [], upstreamStatuses: [], upstreamTimes: [], status: 0, bodyBytes: 0, startedAt: performance.now(), sticky: 'none',
    };
    this.scheme = requestScheme(req);
    this.path = rewritePath(req.url ?? '/', route.location);
    const previous = (res as ServerResponse & Owned)[FORWARD];
    this.page = page === null ? null : { status: page.status, parent: previous ?? null, original: page.original };
    if (page !== null && previous !== undefined) {
      // The request that failed does nothing more (a session lookup answering late, an attempt
      // still sending its body): its response is this page's now.
      previous.abortAttempt(false);
      previous.finished = true;
    }
    (res as ServerResponse & Owned)[FORWARD] = this;
    // An error page's request takes over the response of the request that failed (its 'close' listener is there already).
    if (previous === undefined) res.on('close', resClosed);
  }

  /**
   * Entry point: checks the body size, reads a small body, then makes the first attempt.
   * `expectContinue`: the client waits for `100 Continue` before its body, sent once the declared
   * length is known to be acceptable (never before a 413).
   */
  start(expectContinue = false): void {
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
      framing = { contentLength: length }; // also 0: a POST keeps its "Content-Length: 0" upstream
    }
    this.headers = upstreamRequestHeaders(req.rawHeaders, {
      remoteAddress: this.remoteAddress,
      scheme: this.scheme,
      keepForwardedProto: requestPeerTrusted(this.req),
      bodyFraming: framing,
      upgrade: null,
      proxyHost: this.upstream.name,
      underscoresInHeaders: this.route.underscoresInHeaders,
      ignoreInvalidHeaders: this.route.location.ignoreInvalidHeaders,
    }, this.route.location.setHeaders);
    // Starts the session lookup now, so that a store round trip overlaps with reading the body.
    this.beginSticky(this.headers, Date.now());
    if (expectContinue && framing !== null) this.res.writeContinue();

    const buffering = this.route.location.buffering;
    if (framing === null) {
      req.resume();
      this.next();
    } else if (framing !== 'chunked' && framing.contentLength <= (buffering.request ? buffering.clientBodyBufferSize : REPLAYABLE_BODY_LIMIT)) {
      this.bufferBody(framing.contentLength);
    } else if (buffering.request) {
      this.spoolBody(framing === 'chunked' ? limit : 0);
    } else if (framing === 'chunked') {
      this.bufferChunked(limit);
    } else {
      this.body = req;
      this.next();
    }
  }

  /**
   * nginx proxy_request_buffering: the whole body is read (memory, then a temp file) before a
   * server is chosen. `limit`: clientMaxBodySize for a chunked body (a declared length was checked).
   */
  private spoolBody(limit: number): void {
    const b = this.route.location.buffering;
    this.requestBody = new RequestBody(b.clientBodyBufferSize, b.clientBodyTempPath, this.req, this);
    this.streamLimit = limit;
    (this.req as IncomingMessage & Owned)[FORWARD] = this;
    this.req.on('data', reqSpoolData);
    this.req.on('end', reqSpoolEnd);
  }
  /** @internal listener (reqSpoolData) */
  onSpoolData(chunk: Buffer): void {
    const body = this.requestBody!;
    if (this.streamLimit !== 0 && body.length + chunk.length > this.streamLimit) {
      this.req.off('data', reqSpoolData);
      this.req.off('end', reqSpoolEnd);
      body.close();
      this.hooks.log.warn({ upstream: this.upstream.name, limit: this.streamLimit }, 'client intended to send too large chunked body');
      this.respondError(413, true);
      return;
    }
    body.append(chunk);
  }
  /** @internal RequestBodyOwner: the whole body is stored; now a server is chosen. */
  onRequestBodyStored(): void {
    if (this.finished) return;
    const body = this.requestBody!;
    const headers = this.headers!;
    // A chunked body goes upstream with its length now known (nginx does the same).
    for (let i = headers.length - 2; i >= 0; i -= 2) {
      if (headers[i] === 'Transfer-Encoding' && headers[i + 1] === 'chunked') {
        headers[i] = 'Content-Length';
        headers[i + 1] = String(body.length);
        break;
      }
    }
    this.body = body.inMemory() ?? body;
    this.next();
  }
  /** @internal RequestBodyOwner */
  onRequestBodyError(err: Error): void {
    this.hooks.log.error({ upstream: this.upstream.name, err: err.message }, `cannot buffer the client request body to a temp file: ${err.message}`);
    this.respondError(500, true);
  }
  /** @internal RequestBodyOwner, ResponseBufferOwner */
  onTempFile(): void {
    this.hooks.tempFile?.(this.out === null ? 'request' : 'response');
  }

  /**
   * A chunked body (length unknown): read up to REPLAYABLE_BODY_LIMIT first. One that ends by then
   * is replayable (retries work as for a small Content-Length body); a longer one streams on,
   * what was read first included. Still framed chunked upstream.
   */
  private bufferChunked(limit: number): void {
    this.chunks = [];
    this.bufferedLength = 0;
    this.streamLimit = limit;
    (this.req as IncomingMessage & Owned)[FORWARD] = this;
    this.req.on('data', reqChunkedData);
    this.req.on('end', reqBodyEnd);
  }
  /** @internal listener (reqChunkedData) */
  onChunkedData(chunk: Buffer): void {
    this.bufferedLength += chunk.length;
    if (this.streamLimit !== 0 && this.bufferedLength > this.streamLimit) {
      this.req.off('data', reqChunkedData);
      this.req.off('end', reqBodyEnd);
      this.chunks = [];
      this.hooks.log.warn({ upstream: this.upstream.name, limit: this.streamLimit }, 'client intended to send too large chunked body');
      this.respondError(413, true);
      return;
    }
    this.chunks.push(chunk);
    if (this.bufferedLength <= REPLAYABLE_BODY_LIMIT) return;
    this.req.off('data', reqChunkedData);
    this.req.off('end', reqBodyEnd);
    const rest = new PassThrough();
    for (const c of this.chunks) rest.write(c);
    this.chunks = [];
    this.streamedBytes = this.bufferedLength;
    if (this.streamLimit !== 0) this.req.on('data', reqStreamedData);
    this.req.pipe(rest);
    this.body = rest;
    this.next();
  }

  private chunks: Buffer[] = [];
  private bufferBody(length: number): void {
    this.chunks = [];
    (this.req as IncomingMessage & Owned)[FORWARD] = this;
    this.req.on('data', reqBodyData);
    this.req.on('end', reqBodyEnd);
    this.bufferedLength = length;
  }
  private bufferedLength = 0;
  /** @internal listener (reqBodyData) */
  onBodyData(chunk: Buffer): void { this.chunks.push(chunk); }
  /** @internal listener (reqBodyEnd) */
  onBodyEnd(): void {
    this.body = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.bufferedLength);
    this.chunks = [];
    if (!this.finished) this.next();
  }

  private streamedBytes = 0;
  private streamLimit = 0;
  /** @internal listener (reqStreamedData) */
  countStreamed(chunk: Buffer): void {
    this.streamedBytes += chunk.length;
    if (this.streamedBytes > this.streamLimit) {
      this.req.off('data', reqStreamedData);
      this.hooks.log.warn({ upstream: this.upstream.name, limit: this.streamLimit }, 'client intended to send too large chunked body');
      this.abortAttempt(false);
      this.respondError(413, true);
    }
  }

  /** Picks the next peer and sends the request there, or answers 502 when no peer is left. */
  private next(): void {
    const now = Date.now();
    const peer = this.nextServer(now);
    if (peer === undefined) return; // waits for the session lookup: resumeAfterLookup
    if (peer === null) {
      this.hooks.log.error({ upstream: this.upstream.name, request: `${this.req.method} ${this.req.url}` },
        `no live upstreams while connecting to upstream "${this.upstream.name}"`);
      this.respondError(502);
      return;
    }
    this.send(peer, now);
  }

  /** The session lookup answered: the first attempt goes on. */
  protected resumeAfterLookup(): void {
    if (!this.finished) this.next();
  }

  /** Sends the request to `peer` (acquired, counted as tried). */
  private send(peer: Peer, now: number): void {
    this.peer = peer;
    this.attemptStartedAt = now;
    this.record.upstreamAddrs.push(peer.address);
    let body = this.body;
    if (body instanceof RequestBody) body = body.stream(); // stored whole: each attempt reads it anew
    else if (body !== null && !Buffer.isBuffer(body)) this.streamUsed = true;
    const key = this.route.tlsPoolKey;
    const pool = key == null ? peer.pool : poolOf(peer, key);
    this.attempt = pool.request(
      {
        method: this.req.method ?? 'GET', path: this.path, headers: this.headers!,
        client: pool.options.sendProxy === null ? undefined : proxyClientOf(this.req.socket),
        timeouts: this.route.location.timeouts,
      },
      body,
      this,
    );
  }

  /** Whether a failure of `condition` may move this request on to another server (`sent`: the failed attempt may have reached it). */
  private mayRetry(condition: NextUpstreamCondition, sent: boolean): boolean {
    if (this.finished || this.streamUsed) return false; // a streamed body cannot be sent twice
    return this.mayMoveOn(condition, Date.now()) && (!sent || this.mayResend());
  }

  /** Whether this request may be written again after (part of) it reached an upstream. */
  private mayResend(): boolean {
    return IDEMPOTENT.has(this.req.method ?? 'GET') || this.rules.on.has('non_idempotent');
  }

  private endAttempt(status: number, failed: boolean): Peer {
    const peer = this.peer!;
    const now = Date.now();
    const seconds = (now - this.attemptStartedAt) / 1000;
    this.record.upstreamStatuses.push(status);
    this.record.upstreamTimes.push(seconds);
    peer.metrics?.attempt(status, seconds);
    this.upstream.release(peer, failed, now);
    this.peer = null;
    this.attempt = null;
    return peer;
  }

  onUpstreamError(failure: AttemptFailure): void {
    if (this.finished) return;
    const peer = this.peer!;
    // A kept-alive connection the upstream had already closed: retry once on a new connection, not a
    // failure of the peer. Not a request that may not be resent: the upstream may have read it all.
    if (failure.staleConnection && !this.staleRetried && !this.streamUsed && (!failure.requestSent || this.mayResend())) {
      this.staleRetried = true;
      this.record.upstreamAddrs.pop();
      this.upstream.release(peer, false, Date.now());
      this.upstream.acquire(peer, Date.now());
      this.send(peer, Date.now()); // the same server again: not a new try
      return;
    }
    if (failure.kind === 'local') {
      // Descriptors, buffers or local ports ran out here: nginx answers 500 (socket() failed) and
      // the server is not to blame, nor is another server likely to do better.
      this.endAttempt(500, false);
      this.hooks.localError?.(failure.code ?? 'unknown', 'connect');
      this.hooks.log.error({ upstream: this.upstream.name, server: peer.address, reason: 'local', code: failure.code, request: `${this.req.method} ${this.req.url}` },
        `local resource error while connecting to upstream: ${failure.message}`);
      this.respondError(500);
      return;
    }
    this.endAttempt(502, true);
    peer.metrics?.failure(failure.kind);
    const isTimeout = failure.kind === 'timeout';
    this.hooks.log.error({ upstream: this.upstream.name, server: peer.address, reason: failure.kind, request: `${this.req.method} ${this.req.url}` },
      `upstream ${isTimeout ? 'timed out' : 'failed'}: ${failure.message}`);
    if (this.mayRetry(failureCondition(failure.kind), failure.requestSent)) {
      this.route.metrics?.upstream.retry(failure.kind);
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
    if (condition !== null && this.mayRetry(condition, true)) {
      // nginx: 403/404 move on without marking the peer failed; 5xx and 429 count as failures.
      const failed = status !== 403 && status !== 404;
      const peer = this.peer!;
      this.upstream.release(peer, failed, Date.now());
      if (failed) peer.metrics?.failure(status === 429 ? 'http_429' : 'http_5xx');
      const now = Date.now();
      const nextPeer = this.nextServer(now); // never undefined: not the first attempt
      if (nextPeer !== null && nextPeer !== undefined) {
        const seconds = (now - this.attemptStartedAt) / 1000;
        this.record.upstreamStatuses.push(status);
        this.record.upstreamTimes.push(seconds);
        peer.metrics?.attempt(status, seconds);
        this.route.metrics?.upstream.retry(statusReason(status));
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
    this.upstreamRes = upstreamRes;
    const now = Date.now();
    const seconds = (now - this.attemptStartedAt) / 1000;
    this.record.upstreamStatuses.push(upstreamRes.statusCode);
    this.record.upstreamTimes.push(seconds);
    this.peer!.metrics?.attempt(upstreamRes.statusCode, seconds);
    try {
      const location = this.route.location;
      const headers = clientResponseHeaders(upstreamRes.rawHeaders, false, location.hideHeaders);
      appendAddHeaders(headers, location.addHeaders, upstreamRes.statusCode, this);
      if (this.sticky !== null) {
        this.affinity!.onResponse(this.sticky, this.peer!, upstreamRes.rawHeaders, headers, now, this.scheme === 'https');
      }
      const complete = upstreamRes.completeBody;
      let framed = true;
      if (complete !== undefined && mayHaveBody(upstreamRes.statusCode, this.req.method) && !hasContentLength(headers)) {
        framed = false;
        // The whole body is here although the upstream framed it chunked (or until close), as PHP
        // output usually is: framing is per hop, so the client gets Content-Length and the response
        // leaves in one write (node's chunked path costs ~2 us more per request).
        headers.push('Content-Length', String(complete.length));
      }
      const compression = this.route.location.compression;
      if (compression !== null) {
        // The length the upstream declared (nginx compares gzip_min_length with it; a chunked body always qualifies).
        const chosen = prepareCompression(compression, this.req, upstreamRes.statusCode, headers, framed ? contentLength(headers) : -1);
        if (chosen !== null) {
          this.coding = chosen.coding;
          this.level = chosen.settings.level;
          if (complete !== undefined) {
            // A whole small body: compressed in one go (compressWhole), then sent with its length.
            this.onUpstreamBodyEnd(now); // the upstream connection is free already
            this.pendingHead = headers;
            compressWhole(chosen.coding, chosen.settings.level, complete, compressedWhole.bind(this));
            return;
          }
        }
      }
      this.writeHead(upstreamRes, headers);
    } catch (err) {
      this.invalidHead(upstreamRes, err);
      return;
    }
    this.afterHead(upstreamRes, now);
  }

  private writeHead(upstreamRes: UpstreamResponse, headers: string[]): void {
    // HTTP/2 has no reason phrase (node warns when given one).
    if (this.page !== null) {
      // An error page keeps the error's status (or errorPage `response`), as nginx's internal redirect.
      this.res.writeHead(this.page.status, headers);
      return;
    }
    this.res.writeHead(upstreamRes.statusCode, this.req.httpVersionMajor === 2 ? undefined : upstreamRes.statusMessage || undefined, headers);
  }

  /** Compression chosen for this response (prepareCompression), else null. */
  private coding: Coding | null = null;
  private level = 0;
  /** The head waiting for a whole body's compression. */
  private pendingHead: string[] | null = null;
  /** A whole body compressed: sent instead of the upstream's. */
  private compressed: Buffer | null = null;

  /** @internal callback (compressedWhole) */
  onCompressedWhole(err: Error | null, out: Buffer): void {
    const upstreamRes = this.upstreamRes!;
    const headers = this.pendingHead!;
    this.pendingHead = null;
    if (this.finished) return;
    if (err !== null) {
      this.hooks.log.error({ upstream: this.upstream.name, err: err.message }, `cannot compress the response: ${err.message}`);
      this.respondError(500);
      return;
    }
    this.compressed = out;
    headers.push('Content-Length', String(out.length));
    try {
      this.writeHead(upstreamRes, headers);
    } catch (err) {
      this.invalidHead(upstreamRes, err);
      return;
    }
    this.afterHead(upstreamRes, Date.now());
  }

  private invalidHead(upstreamRes: UpstreamResponse, err: unknown): void {
    this.hooks.log.error({ upstream: this.upstream.name, server: this.peer?.address, err: (err as Error).message }, 'upstream sent an invalid header');
    upstreamRes.body.destroy();
    if (this.peer !== null) {
      this.upstream.release(this.peer, true, Date.now());
      this.peer.metrics?.failure('invalid_header');
      this.peer = null;
    }
    this.respondError(502);
  }

  private afterHead(upstreamRes: UpstreamResponse, now: number): void {
    const write = this.sticky === null ? null : this.sticky.write;
    if (write !== null) {
      // A session learned here reaches the client only once the store has it (StickyState.write).
      // Once per new session, at most the store's timeout; the body waits in the upstream socket meanwhile.
      this.sticky!.write = null;
      if (upstreamRes.completeBody !== undefined) this.onUpstreamBodyEnd(now); // the upstream connection is free already
      write.then(() => { if (!this.finished) this.deliver(upstreamRes, Date.now()); });
      return;
    }
    this.deliver(upstreamRes, now);
  }

  /** Sends the response whose head is set (writeHead): a whole small body in one deferred write, or the body streamed. */
  private deliver(upstreamRes: UpstreamResponse, now: number): void {
    const complete = this.compressed ?? upstreamRes.completeBody;
    this.compressed = null;
    if (complete !== undefined) {
      // The whole body came with the head (small responses): no stream plumbing needed.
      this.record.bodyBytes += complete.length;
      this.wholeBody = complete;
      deferWrite(this); // with the turn's other writes (write-batch.ts)
      this.onUpstreamBodyEnd(now);
      return;
    }
    let body = upstreamRes.body;
    (body as Readable & Owned)[FORWARD] = this;
    body.on('error', bodyError);
    if (this.coding !== null) {
      // Compressed on the way: the zlib stream is what the client side reads, pauses and resumes;
      // pipe() holds the upstream while the zlib stream is full (back-pressure end to end).
      const z = compressStream(this.coding, this.level);
      (z as Readable & Owned)[FORWARD] = this;
      body.on('end', rawBodyEnd); // the upstream connection is free before the client has everything
      z.on('error', bodyError);
      body.pipe(z);
      body = z;
    }
    this.source = body;
    body.on('data', bodyData);
    body.on('end', bodyEnd);
    if (!this.route.location.buffering.response) {
      // The body is paused while the client is not reading (back-pressure): bound that like nginx's send_timeout.
      body.on('pause', bodyPaused);
      body.on('resume', bodyResumed);
    }
    // What pipe() does (write, pause on a full socket, resume on drain, end), plus giving each
    // chunk back to the pool once the socket has written it (body-chunks.ts).
    this.res.on('drain', resDrain);
  }

  /** What the streamed response body is read from: the upstream body, or the zlib stream it goes through. */
  private source: Readable | null = null;

  /** A whole response body waiting for its deferred write (flushWrite). */
  private wholeBody: Buffer | null = null;
  /** The deferred client write (DeferredWrite): head and whole body, unless the client left meanwhile. */
  flushWrite(): void {
    const body = this.wholeBody;
    this.wholeBody = null;
    if (body !== null && !this.finished) endWithBody(this.res, body);
  }

  private sendTimer: NodeJS.Timeout | null = null;
  /** @internal listener (bodyPaused) */
  onResponsePaused(): void {
    if (this.sendTimer === null && !this.finished) this.sendTimer = setTimeout(sendTimedOut, this.route.sendTimeoutMs ?? 60_000, this);
  }
  /** @internal listener (bodyResumed); also when the request is over */
  clearSendTimer(): void {
    if (this.sendTimer !== null) {
      clearTimeout(this.sendTimer);
      this.sendTimer = null;
    }
  }
  /** @internal timer (sendTimedOut) */
  onSendTimeout(): void {
    this.sendTimer = null;
    if (this.finished) return;
    this.hooks.log.warn({ upstream: this.upstream.name, client: this.remoteAddress, request: `${this.req.method} ${this.req.url}` },
      'client timed out while sending response to client');
    this.res.destroy(); // the close handler stops the upstream side (not a failure of the server)
  }

  /** @internal listener (bodyData): one chunk of a streamed body, to the client (or, while it is behind, to `out`). */
  onBodyChunk(chunk: Buffer): void {
    this.record.bodyBytes += chunk.length;
    if (this.clientBlocked || (this.out !== null && !this.out.empty)) {
      this.hold(chunk);
      return;
    }
    if (this.writeToClient(chunk)) return;
    if (this.route.location.buffering.response) {
      this.clientBlocked = true;
      this.onResponsePaused(); // send_timeout runs while the client takes nothing
    } else {
      this.source!.pause();
    }
  }

  /** Writes one chunk to the client; false when its socket is full. */
  private writeToClient(chunk: Buffer): boolean {
    // One closure per chunk (up to 64 KiB): the write callback is the only sign the socket is done with it.
    return this.res.write(chunk, (err) => { if (err == null) release(chunk); });
  }

  /** nginx proxy_buffering: keeps a chunk the client cannot take now; the upstream waits only once memory and temp file are full. */
  private hold(chunk: Buffer): void {
    const b = this.route.location.buffering;
    const out = this.out ??= new ResponseBuffer(b.proxyBuffers + b.proxyBufferSize, b.maxTempFileSize, b.proxyTempPath, this);
    out.push(chunk);
    if (out.full && !this.upstreamHeld) {
      this.upstreamHeld = true;
      this.source!.pause();
    }
  }

  /** Writes what `out` holds until the client socket is full or `out` is empty (or waits for the temp file). */
  private pump(): void {
    const out = this.out;
    if (out !== null) {
      for (;;) {
        const chunk = out.next();
        if (chunk === null) break;
        if (chunk === 'pending') return; // onBufferReadable continues
        if (!this.writeToClient(chunk)) {
          this.clientBlocked = true;
          break;
        }
      }
      this.onBufferRoom();
      if (!out.empty) return;
    }
    if (this.upstreamEnded) {
      this.upstreamEnded = false;
      this.res.end();
    }
  }

  /** @internal ResponseBufferOwner */
  onBufferRoom(): void {
    if (this.upstreamHeld && !this.finished && !this.out!.full) {
      this.upstreamHeld = false;
      this.source?.resume();
    }
  }

  /** @internal ResponseBufferOwner */
  onBufferReadable(): void {
    if (!this.finished && !this.clientBlocked) this.pump();
  }

  /** @internal ResponseBufferOwner */
  onBufferError(err: Error): void {
    this.hooks.log.error({ upstream: this.upstream.name, err: err.message }, `cannot buffer the upstream response to a temp file: ${err.message}`);
    this.res.destroy();
  }

  /** @internal listener (resDrain): the client socket took what was queued. */
  onClientDrain(): void {
    const upstreamRes = this.upstreamRes;
    if (upstreamRes === null || this.finished) return;
    if (!this.route.location.buffering.response) {
      this.source?.resume();
      return;
    }
    // send_timeout is the longest pause between two writes the client takes, not a total.
    this.clientBlocked = false;
    this.clearSendTimer();
    this.pump();
    if (this.clientBlocked) this.onResponsePaused();
  }

  /** @internal listener (bodyEnd): the upstream is done (and free); the client gets the end once it has everything. */
  onStreamedBodyEnd(): void {
    this.onUpstreamBodyEnd(Date.now());
    if (this.out === null || this.out.empty) this.res.end();
    else this.upstreamEnded = true;
  }

  /** @internal listener (bodyEnd): the response body is complete, the peer is free. */
  onUpstreamBodyEnd(now: number): void {
    if (this.peer !== null) {
      this.upstream.release(this.peer, false, now);
      this.peer = null;
    }
  }

  /** @internal listener (bodyError) */
  onUpstreamBodyError(err: Error): void {
    if (this.peer !== null) {
      this.hooks.log.error({ upstream: this.upstream.name, server: this.peer.address, err: err.message },
        'upstream prematurely closed connection while reading upstream');
      this.upstream.release(this.peer, true, Date.now());
      this.peer.metrics?.failure('reset');
      this.peer = null;
    }
    // The status line is gone already: the only honest signal left is a broken connection.
    this.res.destroy();
  }

  private abortAttempt(failed: boolean): void {
    if (this.attempt !== null) this.attempt.abort();
    this.attempt = null;
    if (this.upstreamRes !== null) this.upstreamRes.body.destroy();
    if (this.source !== null && this.coding !== null) this.source.destroy();
    if (this.peer !== null) {
      this.upstream.release(this.peer, failed, Date.now());
      this.peer = null;
    }
  }

  /** @internal listener (resClosed): the response is over (finished, or the connection went away). */
  onClientClose(): void {
    this.clearSendTimer();
    this.requestBody?.close();
    this.out?.close();
    if (!this.res.writableFinished) {
      // Client went away (nginx logs 499): stop the upstream side, the peer did nothing wrong.
      this.abortAttempt(false);
    }
    this.finished = true;
    this.record.status = this.res.headersSent ? this.res.statusCode : 499;
    if (this.sticky !== null) this.record.sticky = this.sticky.outcome;
    if (this.page !== null) {
      // One access log line, the original request's (nginx: $upstream_addr lists both requests' servers).
      const parent = this.page.parent;
      if (parent === null) {
        // An error the listener answered (404 of no location, a refusal): logged here, as the client's request.
        this.hooks.onDone?.(this.page.original, this.res, this.record);
        return;
      }
      const p = parent.record;
      p.upstreamAddrs.push(...this.record.upstreamAddrs);
      p.upstreamStatuses.push(...this.record.upstreamStatuses);
      p.upstreamTimes.push(...this.record.upstreamTimes);
      p.bodyBytes = this.record.bodyBytes;
      parent.onClientClose();
      return;
    }
    this.hooks.onDone?.(this.req, this.res, this.record);
  }

  private respondError(status: number, close = false): void {
    if (this.res.headersSent) {
      this.res.destroy();
      return;
    }
    if (this.streamUsed || close) {
      // The client may still be sending a body we will not read: close after answering.
      this.record.bodyBytes = sendError(this.res, status, true, this.alwaysHeaders(status));
      return;
    }
    this.record.bodyBytes = sendError(this.res, status, false, this.alwaysHeaders(status));
  }

  /** The location's add_header ... always entries for an error page of ours (undefined: none). */
  private alwaysHeaders(status: number): string[] | undefined {
    return addedHeaders(this.route.location.addHeaders, status, this);
  }
}

/** nginx proxy_pass with a URI: the matched location prefix is replaced by it. */
export function rewritePath(url: string, location: LocationConfig): string {
  if (url.charCodeAt(0) !== 47 /* / */) url = originForm(url);
  if (location.rewritePrefix === null) return url;
  if (location.exact) {
    const q = url.indexOf('?');
    return location.rewritePrefix + (q >= 0 ? url.slice(q) : '');
  }
  if (url.startsWith(location.path)) return location.rewritePrefix + url.slice(location.path.length);
  // The location matched the normalised path (dot segments, %-escapes): replace in that, as nginx does.
  const q = url.indexOf('?');
  const normalised = pathForMatching(url) ?? url;
  return location.rewritePrefix + encodeURI(normalised.slice(location.path.length)) + (q >= 0 ? url.slice(q) : '');
}

/** An absolute-form target (`http://host/path?q`, sent to proxies) as origin-form (`/path?q`), which is what nginx sends upstream. */
function originForm(url: string): string {
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*([^#]*)/.exec(url);
  if (m === null) return url;
  const rest = m[1]!;
  return rest.length === 0 || rest.charCodeAt(0) !== 47 ? '/' + rest : rest;
}
