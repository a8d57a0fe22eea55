/**
 * The lean upstream transport (issue 7): raw `net.Socket` connections per upstream
 * server, kept in a LIFO idle list bounded by `keepalive`, each request head written
 * as one latin1 string, responses framed by the strict parser in
 * response-parser.ts. No http.Agent, no ClientRequest, no per-request closures:
 * every callback is a method bound once per connection.
 *
 * One UpstreamConnection carries one request at a time. A RawAttempt is the request's
 * handle (what `abort()` acts on); it owns the connection from `request()` until the
 * response is complete (or failed), then the connection goes back to the idle list when
 * the response allowed keep-alive, the request was fully written and nothing extra
 * arrived; otherwise it is closed.
 *
 * A pool with TLS options (an "https://" proxyPass) opens each connection with `tls.connect`
 * instead, and counts it connected once the handshake is done (the connect timeout covers the
 * handshake, as nginx's); a failed handshake or verification is a connection error like a refused
 * connect. Reconnects offer the pool's last TLS session (nginx proxy_ssl_session_reuse).
 */
import net from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type SecureContext, type TLSSocket } from 'node:tls';
import { Readable } from 'node:stream';
import type {
  Attempt, AttemptHandler, AttemptTimeouts, PeerPool, PoolOptions, RequestHead, UpgradeHandler, UpstreamResponse, UpstreamTlsOptions,
} from './transport.js';
import { failureKind, type FailureKind } from '../../net/errors.js';
import {
  Http1ResponseParser, ResponseParseError, type ResponseParserHandler,
} from './response-parser.js';
import { copyOut } from './body-chunks.js';
import { equalsLower } from '../../nginx-language/header-tokens.js';
import { upstreamConnectOptions, upstreamSecureContext } from '../../tls/upstream-trust.js';
import { deferWrite, type DeferredWrite } from './write-batch.js';
import { buildProxyV1, buildProxyV2 } from '../../net/proxy-protocol.js';

const EMPTY = Buffer.alloc(0);
/**
 * The one read buffer of every pooled upstream connection (net `onread`): node reads into it
 * instead of allocating a Buffer per read, and calls `onRead` synchronously, so a read is parsed
 * before the next one overwrites it. What outlives a read (body bytes) is copied out first.
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** Bytes of response body buffered per response before the upstream socket is paused. */
const BODY_HIGH_WATER_MARK = 64 * 1024;

/** A request head value or target that would break the framing of what we send. */
const UNSAFE_VALUE = /[\r\n\0]/;
/** RFC 9110 token (field names, methods). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

class InvalidRequestError extends Error {}

/** Serialises the request head into one string (latin1: header bytes as llhttp gave them). */
function serializeHead(head: RequestHead): { text: string; chunked: boolean } {
  const method = head.method;
  const path = head.path;
  if (!TOKEN.test(method)) throw new InvalidRequestError(`invalid method ${JSON.stringify(method)}`);
  if (path.length === 0 || UNSAFE_VALUE.test(path) || path.includes(' ')) throw new InvalidRequestError('invalid request target');
  let text = `${method} ${path} HTTP/1.1\r\n`;
  let chunked = false;
  const h = head.headers;
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i]!;
    const value = h[i + 1]!;
    if (UNSAFE_VALUE.test(value) || !TOKEN.test(name)) throw new InvalidRequestError(`invalid header ${JSON.stringify(name)}`);
    if (equalsLower(name, 'transfer-encoding') && value.toLowerCase().includes('chunked')) chunked = true;
    text += `${name}: ${value}\r\n`;
  }
  return { text: `${text}\r\n`, chunked };
}

/** The response body handed to the proxy: a Readable fed by the parser, paced by the socket. */
class ResponseBody extends Readable {
  constructor(private readonly conn: UpstreamConnection, private readonly attempt: RawAttempt) {
    super({ highWaterMark: BODY_HIGH_WATER_MARK });
  }

  override _read(): void {
    if (this.conn.attempt === this.attempt) this.conn.resumeBody();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    // The proxy gave up on this response (client gone): the connection cannot be reused mid-body.
    if (this.conn.attempt === this.attempt) this.conn.abortAttempt();
    callback(err);
  }
}

/** A finished body holding `data` (101 responses; a complete body read as a stream after all). */
function finishedBody(data: Buffer | null): Readable {
  const r = new Readable({ read() { /* everything is pushed already */ } });
  if (data !== null && data.length > 0) r.push(data);
  r.push(null);
  return r;
}

/**
 * The response handed to the proxy. When the whole body arrived with the head (small
 * responses, the common case) it is in `completeBody` and the `body` stream is only
 * built if someone reads it; otherwise `body` is the live ResponseBody.
 */
class RawUpstreamResponse implements UpstreamResponse {
  constructor(
    readonly statusCode: number,
    readonly statusMessage: string,
    readonly rawHeaders: string[],
    private stream: Readable | null,
    readonly completeBody: Buffer | undefined,
  ) {}

  get body(): Readable {
    return this.stream ??= finishedBody(this.completeBody ?? null);
  }
}

export class RawAttempt implements Attempt {
  conn: UpstreamConnection | null = null;
  /** Set when the head was handed to the socket: the upstream may have seen the request. */
  requestSent = false;
  /** The whole request (head and body) was handed to the socket. */
  requestWritten = false;
  body: ResponseBody | null = null;
  done = false;
  readonly text: string;
  readonly chunked: boolean;
  readonly isHead: boolean;
  /** This request's timeouts: its location's (RequestHead.timeouts), else the pool's. */
  readonly timeouts: AttemptTimeouts;

  constructor(
    readonly pool: RawPeerPool,
    head: RequestHead,
    readonly requestBody: Buffer | Readable | null,
    readonly handler: AttemptHandler,
    readonly upgradeHandler: UpgradeHandler | null,
  ) {
    const s = serializeHead(head);
    this.text = s.text;
    this.chunked = s.chunked;
    this.isHead = head.method === 'HEAD';
    this.timeouts = head.timeouts ?? pool.timeouts;
  }

  abort(): void {
    if (this.done) return;
    this.done = true;
    const conn = this.conn;
    if (conn !== null && conn.attempt === this) conn.abortAttempt();
  }
}

/** One upstream TCP (or TLS) connection and its response parser. */
export class UpstreamConnection implements ResponseParserHandler, DeferredWrite {
  readonly socket: net.Socket;
  readonly parser: Http1ResponseParser;
  attempt: RawAttempt | null = null;
  /** Requests assigned so far (more than one: the connection came from the idle list). */
  uses = 0;
  idle = false;
  closed = false;
  private connected = false;
  private connectTimer: NodeJS.Timeout | null = null;
  private connectMs = 0;
  private timeoutMs = 0;
  /** The attempt's response completed during the current `execute` (release after it returns). */
  private completed: RawAttempt | null = null;
  private timedOut = false;
  /** Streaming request body currently piped into the socket. */
  private streaming: Readable | null = null;
  /**
   * A final head was parsed during the current `execute` but not yet handed to the proxy:
   * if the body completes in the same read it is handed over whole (no stream needed).
   */
  private headPending = false;
  private pendingFirst: Buffer | null = null;
  private pendingMore: Buffer[] | null = null;

  /**
   * `upgrade`: this connection carries an upgrade request and leaves the pool after a 101, as a
   * stream the tunnel pipes; its reads come as 'data' events. Every other connection reads into
   * READ_BUFFER.
   */
  /**
   * `proxyKey`: on a sendProxy pool, the client connection this one was opened for (only its
   * requests reuse it) and whose PROXY header `preface` is written first.
   */
  constructor(private readonly pool: RawPeerPool, private readonly upgrade: boolean, readonly proxyKey: string | null = null, preface: Buffer | null = null) {
    this.parser = new Http1ResponseParser(this);
    const onread = upgrade ? undefined : { buffer: READ_BUFFER, callback: this.onRead };
    const socket = pool.tls === null
      ? net.connect({ host: pool.host, port: pool.port, onread })
      : pool.connectTls(onread);
    this.socket = socket;
    socket.setNoDelay(true);
    if (preface !== null) socket.write(preface); // queued until connected, before any request
    socket.on(pool.tls === null ? 'connect' : 'secureConnect', this.onConnect);
    if (upgrade) socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    socket.on('timeout', this.onTimeout);
    socket.on('drain', this.onDrain);
  }

  /** Starts `attempt` on this connection (writes it now when connected, else on connect). */
  assign(attempt: RawAttempt): void {
    this.attempt = attempt;
    attempt.conn = this;
    // A new connection: connect timeout of the request that opened it (its location's, or the pool's).
    if (this.uses === 0) this.connectTimer = setTimeout(this.onConnectTimeout, this.connectMs = attempt.timeouts.connectMs);
    this.uses++;
    this.idle = false;
    this.timedOut = false;
    this.parser.reset(attempt.isHead, attempt.upgradeHandler !== null);
    // Written at the end of this event-loop turn with the turn's other writes (write-batch.ts),
    // also while connecting (net.Socket queues it). A streamed body is read from then on: nothing
    // reads it before, so nothing is lost.
    deferWrite(this);
  }

  /** The deferred request write (DeferredWrite): nothing if the attempt was aborted meanwhile. */
  flushWrite(): void {
    const a = this.attempt;
    if (a !== null && !a.requestSent && !this.closed) this.writeRequest();
  }

  private setTimeoutMs(ms: number): void {
    if (ms !== this.timeoutMs) {
      this.timeoutMs = ms;
      this.socket.setTimeout(ms);
    }
  }

  private writeRequest(): void {
    const a = this.attempt!;
    const socket = this.socket;
    const body = a.requestBody;
    a.requestSent = true;
    if (this.connected) this.setTimeoutMs(a.timeouts.sendMs);
    if (body === null) {
      socket.write(a.text, 'latin1');
      this.requestDone(a);
    } else if (Buffer.isBuffer(body)) {
      socket.cork();
      socket.write(a.text, 'latin1');
      if (a.chunked) {
        if (body.length > 0) {
          socket.write(`${body.length.toString(16)}\r\n`, 'latin1');
          socket.write(body);
          socket.write('\r\n0\r\n\r\n', 'latin1');
        } else {
          socket.write('0\r\n\r\n', 'latin1');
        }
      } else if (body.length > 0) {
        socket.write(body);
      }
      socket.uncork();
      this.requestDone(a);
    } else {
      socket.write(a.text, 'latin1');
      this.streaming = body;
      body.on('data', this.onBodyData);
      body.on('end', this.onBodyEnd);
      body.on('error', this.onBodyError);
    }
  }

  /** The request is written (into the socket's buffer): the read timeout applies from now. */
  private requestDone(a: RawAttempt): void {
    a.requestWritten = true;
    if (this.connected && !this.socket.writableNeedDrain) this.setTimeoutMs(a.timeouts.readMs);
  }

  private readonly onBodyData = (chunk: Buffer): void => {
    const a = this.attempt;
    if (a === null || this.streaming === null) return;
    let ok: boolean;
    if (a.chunked) {
      if (chunk.length === 0) return;
      this.socket.cork();
      this.socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
      this.socket.write(chunk);
      ok = this.socket.write('\r\n', 'latin1');
      this.socket.uncork();
    } else {
      ok = this.socket.write(chunk);
    }
    if (!ok) this.streaming.pause();
  };

  private readonly onBodyEnd = (): void => {
    const a = this.attempt;
    if (a === null || this.streaming === null) return;
    this.stopStreaming();
    if (a.chunked) this.socket.write('0\r\n\r\n', 'latin1');
    this.requestDone(a);
  };

  private readonly onBodyError = (): void => {
    // The client's body broke off: the upstream would wait for the rest forever.
    if (this.streaming !== null) this.abortAttempt();
  };

  private stopStreaming(): void {
    const body = this.streaming;
    if (body === null) return;
    this.streaming = null;
    body.off('data', this.onBodyData);
    body.off('end', this.onBodyEnd);
    body.off('error', this.onBodyError);
  }

  private readonly onDrain = (): void => {
    if (this.streaming !== null) {
      this.streaming.resume();
    } else if (this.attempt !== null && this.attempt.requestWritten) {
      this.setTimeoutMs(this.attempt.timeouts.readMs);
    }
  };

  private readonly onConnect = (): void => {
    this.connected = true;
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }
    const a = this.attempt;
    if (a !== null) {
      const o = a.timeouts;
      this.setTimeoutMs(a.requestWritten && !this.socket.writableNeedDrain ? o.readMs : o.sendMs);
    }
  };

  private readonly onConnectTimeout = (): void => {
    this.connectTimer = null;
    this.timedOut = true;
    this.fail('timeout', `upstream timed out (connect after ${this.connectMs}ms)`);
  };

  private readonly onTimeout = (): void => {
    if (this.attempt === null) {
      // Idle longer than keepaliveTimeout.
      this.destroy();
      return;
    }
    this.timedOut = true;
    this.fail('timeout', this.attempt.requestWritten ? 'upstream timed out while reading response' : 'upstream timed out while sending request');
  };

  private readonly onRead = (nread: number): boolean => {
    this.onData(READ_BUFFER.subarray(0, nread));
    return true; // pausing is explicit (pauseBody)
  };

  private readonly onData = (data: Buffer): void => {
    const a = this.attempt;
    if (a === null) {
      // An idle connection must stay silent: anything here is garbage or a late answer.
      this.destroy();
      return;
    }
    let consumed: number;
    try {
      consumed = this.parser.execute(data);
    } catch (err) {
      if (!(err instanceof ResponseParseError)) throw err;
      this.fail('invalid_header', err.message);
      return;
    }
    if (this.closed) return;
    if (this.parser.upgraded && this.attempt === a) {
      this.handOverUpgrade(a, data.subarray(consumed));
      return;
    }
    if (this.headPending) this.deliverStreaming(a);
    const done = this.completed;
    if (done !== null) {
      this.completed = null;
      // Reusable only when the response allows it, the request was fully written and nothing followed the response.
      if (consumed === data.length && this.parser.keepAlive && done.requestWritten && done.upgradeHandler === null) {
        this.pool.release(this);
      } else {
        this.destroy();
      }
    }
  };

  private readonly onEnd = (): void => {
    // The upstream closed its side: ends a close-delimited body, fails anything else in flight.
    if (this.attempt !== null) {
      try {
        this.parser.finish();
      } catch (err) {
        if (!(err instanceof ResponseParseError)) throw err;
        this.fail('reset', err.message);
        return;
      }
    }
    this.completed = null;
    this.destroy();
  };

  private readonly onError = (err: NodeJS.ErrnoException): void => {
    if (this.pool.tls !== null && !this.connected) {
      // The TCP connect or the TLS handshake failed (refused, reset, a verify error, no common protocol):
      // the server's failure, never this host's; a session it might not take again is not offered again.
      this.pool.tlsSession = null;
      const message = err.syscall === undefined ? `SSL handshake with upstream failed: ${err.message}` : err.message;
      this.fail(this.timedOut ? 'timeout' : failureKind(err), message, err.code);
      return;
    }
    this.fail(this.timedOut ? 'timeout' : failureKind(err), err.message, err.code);
  };

  private readonly onClose = (): void => {
    this.closed = true;
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }
    if (this.idle) this.pool.removeIdle(this);
    if (this.attempt !== null) this.fail('reset', 'upstream prematurely closed connection');
  };

  // --- parser callbacks ---------------------------------------------------------------------

  onResponseHead(parser: Http1ResponseParser): void {
    if (parser.upgraded) return; // handed over after execute() returns, with the bytes that follow
    this.setTimeoutMs(this.attempt!.timeouts.readMs);
    // Handed to the proxy when the body completes within this read, or when the read is consumed.
    this.headPending = true;
  }

  onResponseBody(chunk: Buffer): void {
    // Out of READ_BUFFER: it outlives this read. While the head is pending the body may complete in
    // this read and be handed over whole (never written back to the pool): an exact-size copy then;
    // later reads of a streamed body go into recycled buffers (body-chunks.ts).
    if (!this.upgrade) chunk = this.headPending ? Buffer.from(chunk) : copyOut(chunk);
    if (this.headPending) {
      if (this.pendingFirst === null) this.pendingFirst = chunk;
      else (this.pendingMore ??= []).push(chunk);
      return;
    }
    const body = this.attempt!.body!;
    if (!body.push(chunk)) this.pauseBody();
  }

  /**
   * The proxy cannot take more body now (slow client): stop reading the upstream. Like nginx,
   * the read timeout only runs while we are reading, so a paused body never "times out".
   */
  private pauseBody(): void {
    this.socket.pause();
    this.setTimeoutMs(0);
  }

  resumeBody(): void {
    if (this.socket.isPaused()) {
      this.setTimeoutMs(this.attempt!.timeouts.readMs);
      this.socket.resume();
    }
  }

  onResponseComplete(): void {
    const a = this.attempt!;
    this.attempt = null;
    a.done = true;
    a.conn = null;
    this.completed = a;
    if (this.streaming !== null) {
      // The upstream answered before taking the whole body (e.g. an early 413): stop sending.
      this.stopStreaming();
    }
    if (this.headPending) {
      // The whole response is here: hand it over with its body as one Buffer.
      this.headPending = false;
      const first = this.pendingFirst;
      const more = this.pendingMore;
      this.pendingFirst = null;
      this.pendingMore = null;
      const body = first === null ? EMPTY : more === null ? first : Buffer.concat([first, ...more]);
      const p = this.parser;
      const res = new RawUpstreamResponse(p.statusCode, p.statusMessage, p.rawHeaders, null, body);
      (a.upgradeHandler ?? a.handler).onUpstreamResponse(res);
      return;
    }
    a.body!.push(null);
  }

  /** The head came without its whole body: hand it over with a live body stream. */
  private deliverStreaming(a: RawAttempt): void {
    this.headPending = false;
    const body = new ResponseBody(this, a);
    a.body = body;
    const first = this.pendingFirst;
    const more = this.pendingMore;
    this.pendingFirst = null;
    this.pendingMore = null;
    let flowing = true;
    if (first !== null) flowing = body.push(first);
    if (more !== null) for (const chunk of more) flowing = body.push(chunk);
    if (!flowing) this.pauseBody();
    const p = this.parser;
    const res = new RawUpstreamResponse(p.statusCode, p.statusMessage, p.rawHeaders, body, undefined);
    (a.upgradeHandler ?? a.handler).onUpstreamResponse(res);
    if (this.attempt !== a) p.stop(); // the proxy aborted from inside the callback
  }

  // --- endings -------------------------------------------------------------------------------

  private handOverUpgrade(a: RawAttempt, rest: Buffer): void {
    const socket = this.socket;
    this.attempt = null;
    a.done = true;
    a.conn = null;
    this.detach();
    const p = this.parser;
    a.upgradeHandler!.onUpgraded(new RawUpstreamResponse(p.statusCode, p.statusMessage, p.rawHeaders, null, undefined), socket, rest);
  }

  /** Gives the socket away (after a 101): none of our listeners or timers stay on it. */
  private detach(): void {
    const socket = this.socket;
    this.closed = true;
    if (this.connectTimer !== null) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    socket.off(this.pool.tls === null ? 'connect' : 'secureConnect', this.onConnect);
    socket.off('data', this.onData);
    socket.off('end', this.onEnd);
    socket.off('error', this.onError);
    socket.off('close', this.onClose);
    socket.off('timeout', this.onTimeout);
    socket.off('drain', this.onDrain);
    socket.setTimeout(0);
    this.parser.stop();
  }

  /** Fails the current attempt (if any) and closes the connection. */
  private fail(kind: FailureKind, message: string, code?: string): void {
    const a = this.attempt;
    // Decided before destroy() stops the parser: nothing of a response arrived on a reused connection.
    const stale = this.uses > 1 && kind === 'reset' && !this.parser.started && !this.timedOut;
    this.clearPending();
    this.attempt = null;
    this.completed = null;
    this.stopStreaming();
    this.destroy();
    if (a === null) return;
    a.done = true;
    a.conn = null;
    if (a.body !== null) {
      // Mid-body: the proxy sees the body stream fail and breaks the client connection.
      a.body.destroy(new Error(message));
      return;
    }
    const handler = a.upgradeHandler ?? a.handler;
    handler.onUpstreamError({ kind, requestSent: a.requestSent && this.connected, staleConnection: stale, message, code });
  }

  /** The proxy gave up on the current attempt: close without reporting anything. */
  abortAttempt(): void {
    const a = this.attempt;
    this.clearPending();
    this.attempt = null;
    this.completed = null;
    this.stopStreaming();
    if (a !== null) {
      a.done = true;
      a.conn = null;
      if (a.body !== null && !a.body.destroyed) a.body.destroy();
    }
    this.destroy();
  }

  private clearPending(): void {
    this.headPending = false;
    this.pendingFirst = null;
    this.pendingMore = null;
  }

  /** Becomes idle in the pool: only the keepalive timeout applies now. */
  makeIdle(): void {
    this.idle = true;
    this.setTimeoutMs(this.pool.options.keepaliveTimeoutMs);
    if (this.socket.isPaused()) this.socket.resume();
  }

  destroy(): void {
    if (this.idle) this.pool.removeIdle(this);
    this.idle = false;
    if (!this.closed) {
      this.closed = true;
      this.parser.stop();
      if (this.connectTimer !== null) {
        clearTimeout(this.connectTimer);
        this.connectTimer = null;
      }
      this.socket.destroy();
    }
  }
}

/** Connections to one upstream server (the raw transport). */
export class RawPeerPool implements PeerPool {
  /** Idle connections, most recently used last (LIFO: the warmest connection is reused first). */
  private readonly idleList: UpstreamConnection[] = [];
  private closing = false;

  /** The last TLS session the server gave (offered when the next connection opens); TLS pools only. */
  tlsSession: Buffer | null = null;
  private readonly secureContext: SecureContext | null;

  /** The pool's own timeouts: for requests whose head names none. */
  readonly timeouts: AttemptTimeouts;

  constructor(readonly host: string, readonly port: number, readonly options: PoolOptions, readonly tls: UpstreamTlsOptions | null = null) {
    this.timeouts = { connectMs: options.connectTimeoutMs, sendMs: options.sendTimeoutMs, readMs: options.readTimeoutMs };
    this.secureContext = tls === null ? null : upstreamSecureContext(tls);
  }

  /** A new TLS connection to the server (pools with `tls` only). */
  connectTls(onread: net.OnReadOpts | undefined): TLSSocket {
    // `onread` works for tls.connect as for net.connect (node >= 12.2) but is missing from its types.
    const options: ConnectionOptions & { onread?: net.OnReadOpts } = {
      host: this.host,
      port: this.port,
      onread,
      ...upstreamConnectOptions(this.tls!, this.secureContext!),
      ...(this.tlsSession === null ? {} : { session: this.tlsSession }),
    };
    const socket = tlsConnect(options);
    socket.on('session', (session: Buffer) => { this.tlsSession = session; });
    return socket;
  }

  /** Idle connections now (for tests and status). */
  get idleCount(): number {
    return this.idleList.length;
  }

  request(head: RequestHead, body: Buffer | Readable | null, handler: AttemptHandler): Attempt {
    return this.start(head, body, handler, null);
  }

  upgrade(head: RequestHead, handler: UpgradeHandler): Attempt {
    return this.start(head, null, handler, handler);
  }

  private start(head: RequestHead, body: Buffer | Readable | null, handler: AttemptHandler, upgrade: UpgradeHandler | null): Attempt {
    let attempt: RawAttempt;
    try {
      attempt = new RawAttempt(this, head, body, handler, upgrade);
    } catch (err) {
      // Never call back synchronously: the caller has not stored the attempt yet.
      const message = (err as Error).message;
      process.nextTick(() => handler.onUpstreamError({ kind: 'error', requestSent: false, staleConnection: false, message }));
      return { abort: () => { /* nothing started */ } };
    }
    if (this.options.sendProxy !== null) return this.startProxied(attempt, head, upgrade);
    // Upgrades get their own connection: it leaves the pool after a 101.
    let conn = upgrade === null ? this.idleList.pop() : undefined;
    while (conn !== undefined && conn.closed) conn = this.idleList.pop();
    if (conn === undefined) conn = new UpstreamConnection(this, upgrade !== null);
    else conn.idle = false;
    conn.assign(attempt);
    return attempt;
  }

  /**
   * A sendProxy server: an idle connection is reused only by the client connection it was opened
   * for (its PROXY header names that client: HAProxy's rule), else a new one starts with the
   * header of this request's client.
   */
  private startProxied(attempt: RawAttempt, head: RequestHead, upgrade: UpgradeHandler | null): Attempt {
    const c = head.client;
    const src = c?.source ?? { address: '', port: 0 };
    const dst = c?.destination ?? { address: '', port: 0 };
    const key = `${src.address} ${src.port} ${dst.address} ${dst.port}`;
    let conn: UpstreamConnection | undefined;
    if (upgrade === null) {
      for (let i = this.idleList.length - 1; i >= 0; i--) {
        const idle = this.idleList[i]!;
        if (idle.proxyKey !== key || idle.closed) continue;
        this.idleList.splice(i, 1);
        conn = idle;
        conn.idle = false;
        break;
      }
    }
    if (conn === undefined) {
      const preface = this.options.sendProxy === 'v2' ? buildProxyV2(src, dst) : buildProxyV1(src, dst);
      conn = new UpstreamConnection(this, upgrade !== null, key, preface);
    }
    conn.assign(attempt);
    return attempt;
  }

  /** A connection finished a response and may be kept. */
  release(conn: UpstreamConnection): void {
    if (this.closing || this.idleList.length >= this.options.keepalive) {
      conn.destroy();
      return;
    }
    this.idleList.push(conn);
    conn.makeIdle();
  }

  removeIdle(conn: UpstreamConnection): void {
    const i = this.idleList.lastIndexOf(conn);
    if (i >= 0) this.idleList.splice(i, 1);
  }

  /** Closes idle connections; connections still busy are closed when their response ends. */
  closeIdle(): void {
    this.closing = true;
    const list = this.idleList.splice(0);
    for (const c of list) {
      c.idle = false;
      c.destroy();
    }
  }
}
