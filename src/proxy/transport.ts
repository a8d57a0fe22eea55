/**
 * The upstream transport: connect, pool, write a request, frame the response.
 * Everything else talks to it only through `PeerPool.request` and the
 * `AttemptHandler` callbacks, so its insides can be replaced without touching the proxy.
 * Two implementations: `raw` (default; raw pooled sockets and the strict framer of
 * http1-response-parser.ts, see raw-transport.ts) and `node` (node's http.Agent and
 * ClientRequest, kept for comparison: SESSIONLB_UPSTREAM_TRANSPORT=node).
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { RawPeerPool } from './raw-transport.js';
import { isLocalResourceError } from '../net-errors.js';

export interface UpstreamResponse {
  statusCode: number;
  statusMessage: string;
  /** Flat [name, value, name, value, ...] exactly as received. */
  rawHeaders: string[];
  /** The body; ends when the response ends, errors on a broken or timed-out upstream. */
  body: Readable;
  /**
   * The whole body as one Buffer, when it arrived together with the head (small responses;
   * raw transport only). A consumer may send it instead of reading `body`; if it reads
   * `body` anyway, that yields the same bytes.
   */
  completeBody?: Buffer;
}

/**
 * Why an attempt failed, as nginx and our metrics name it. `local`: this host ran out of a
 * resource (see isLocalResourceError): the request's error, never the server's failure.
 */
export type FailureKind = 'refused' | 'timeout' | 'reset' | 'error' | 'invalid_header' | 'local';

/**
 * The FailureKind of a socket or node:http error by its code (every transport and the TCP
 * proxy use this one mapping). A timeout we detected ourselves is the caller's to report.
 */
export function failureKind(err: NodeJS.ErrnoException): FailureKind {
  const code = err.code ?? '';
  if (code === 'ECONNREFUSED') return 'refused';
  if (isLocalResourceError(code)) return 'local';
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ECONNABORTED') return 'reset';
  if (code === 'ETIMEDOUT') return 'timeout';
  if (code.startsWith('HPE_')) return 'invalid_header';
  return 'error';
}

export interface AttemptFailure {
  kind: FailureKind;
  /** The upstream may have seen (part of) the request: a non-idempotent request must not be retried. */
  requestSent: boolean;
  /** The attempt went over a kept-alive connection that the upstream had closed before answering anything. */
  staleConnection: boolean;
  message: string;
  /** The socket error's code (ECONNREFUSED, EMFILE, ...), when there was one. */
  code?: string;
}

export interface AttemptHandler {
  onUpstreamResponse(res: UpstreamResponse): void;
  onUpstreamError(failure: AttemptFailure): void;
}

export interface UpgradeHandler extends AttemptHandler {
  onUpgraded(res: UpstreamResponse, socket: Socket, head: Buffer): void;
}

export interface RequestHead {
  method: string;
  path: string;
  /** Flat [name, value, ...] to send as is. */
  headers: string[];
}

export interface PoolOptions {
  /** Idle connections kept (nginx `keepalive`); 0 closes each connection after its response. */
  keepalive: number;
  keepaliveTimeoutMs: number;
  connectTimeoutMs: number;
  sendTimeoutMs: number;
  readTimeoutMs: number;
}

/** An in-flight attempt; `abort` tears down its upstream connection. */
export interface Attempt {
  abort(): void;
}

/**
 * Which implementation carries upstream requests: `raw` (raw sockets + the strict framer in
 * http1-response-parser.ts, see raw-transport.ts) or `node` (node:http's Agent and
 * ClientRequest). Internal switch for benchmarks and comparisons, not a config contract:
 * SESSIONLB_UPSTREAM_TRANSPORT=node|raw.
 */
export type TransportKind = 'raw' | 'node';
export const DEFAULT_TRANSPORT: TransportKind = 'raw';

function transportFromEnv(): TransportKind {
  const v = process.env.SESSIONLB_UPSTREAM_TRANSPORT;
  return v === 'raw' || v === 'node' ? v : DEFAULT_TRANSPORT;
}

interface PoolImpl {
  request(head: RequestHead, body: Buffer | Readable | null, handler: AttemptHandler): Attempt;
  upgrade(head: RequestHead, handler: UpgradeHandler): Attempt;
  closeIdle(): void;
}

/** Connections to one upstream server. */
export class PeerPool {
  private readonly impl: PoolImpl;
  readonly transport: TransportKind;

  constructor(readonly host: string, readonly port: number, readonly options: PoolOptions, transport: TransportKind = transportFromEnv()) {
    this.transport = transport;
    this.impl = transport === 'raw' ? new RawPeerPool(host, port, options) : new NodeHttpPool(host, port, options);
  }

  /** Sends a request; `body` is a complete Buffer, a stream to pipe, or null for none. */
  request(head: RequestHead, body: Buffer | Readable | null, handler: AttemptHandler): Attempt {
    return this.impl.request(head, body, handler);
  }

  /**
   * Sends an upgrade request (websocket). The handler gets the upstream's socket after
   * a 101, or an ordinary response when the upstream refuses to switch protocols.
   */
  upgrade(head: RequestHead, handler: UpgradeHandler): Attempt {
    return this.impl.upgrade(head, handler);
  }

  /** Closes idle connections (after a reload removed this server, or at shutdown). */
  closeIdle(): void {
    this.impl.closeIdle();
  }
}

/** The node:http implementation (http.Agent keep-alive pool, ClientRequest, llhttp). */
class NodeHttpPool implements PoolImpl {
  private readonly agent: http.Agent;

  constructor(readonly host: string, readonly port: number, readonly options: PoolOptions) {
    this.agent = new http.Agent({
      keepAlive: options.keepalive > 0,
      maxFreeSockets: Math.max(1, options.keepalive),
      maxSockets: Infinity,
      scheduling: 'lifo',
      // Applies to idle pooled sockets (node's agent sets it when a socket is freed).
      timeout: options.keepaliveTimeoutMs,
    });
  }

  /** Sends a request; `body` is a complete Buffer, a stream to pipe, or null for none. */
  request(head: RequestHead, body: Buffer | Readable | null, handler: AttemptHandler): Attempt {
    return new HttpAttempt(this, this.agent, head, body, handler);
  }

  /**
   * Sends an upgrade request (websocket). The handler gets the upstream's socket after
   * a 101, or an ordinary response when the upstream refuses to switch protocols.
   */
  upgrade(head: RequestHead, handler: UpgradeHandler): Attempt {
    const req = http.request({
      host: this.host,
      port: this.port,
      method: head.method,
      path: head.path,
      headers: head.headers,
      agent: false,
      setHost: false,
      timeout: this.options.connectTimeoutMs,
    });
    req.on('upgrade', (res, socket, rest) => {
      req.setTimeout(0);
      handler.onUpgraded({ statusCode: res.statusCode ?? 101, statusMessage: res.statusMessage ?? 'Switching Protocols', rawHeaders: res.rawHeaders, body: res }, socket, rest);
    });
    req.on('response', (res) => {
      req.setTimeout(0);
      handler.onUpstreamResponse({ statusCode: res.statusCode ?? 502, statusMessage: res.statusMessage ?? '', rawHeaders: res.rawHeaders, body: res });
    });
    let timedOut = false;
    req.on('timeout', () => {
      timedOut = true;
      req.destroy(new Error('upstream timed out'));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      handler.onUpstreamError({
        kind: timedOut ? 'timeout' : failureKind(err),
        requestSent: true,
        staleConnection: false,
        message: err.message,
      });
    });
    req.end();
    return { abort: () => req.destroy() };
  }

  /** Closes idle connections (after a reload removed this server, or at shutdown). */
  closeIdle(): void {
    // Not agent.destroy(): that would also cut requests still in flight on this pool (a reload
    // retires pools while their requests finish). Idle sockets go now, busy ones when their response ends.
    this.agent.keepSocketAlive = (): boolean => false;
    for (const sockets of Object.values(this.agent.freeSockets)) {
      for (const socket of sockets ?? []) socket.destroy();
    }
  }
}

class HttpAttempt implements Attempt {
  private readonly req: http.ClientRequest;
  private socket: Socket | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private connected = false;
  private sent = false;
  private responded = false;
  private done = false;
  private timedOut = false;

  constructor(
    private readonly pool: NodeHttpPool,
    agent: http.Agent,
    head: RequestHead,
    body: Buffer | Readable | null,
    private readonly handler: AttemptHandler,
  ) {
    const req = http.request({
      host: pool.host,
      port: pool.port,
      method: head.method,
      path: head.path,
      headers: head.headers,
      agent,
      setHost: false,
    });
    this.req = req;
    req.on('socket', this.onSocket);
    req.on('response', this.onResponse);
    req.on('error', this.onError);
    req.on('finish', this.onFinish);
    if (body === null) {
      req.end();
    } else if (Buffer.isBuffer(body)) {
      req.end(body);
    } else {
      body.pipe(req);
    }
  }

  abort(): void {
    if (this.done && this.responded) return;
    this.done = true;
    this.clearConnectTimer();
    this.req.destroy();
  }

  private readonly onSocket = (socket: Socket): void => {
    this.socket = socket;
    if (socket.connecting) {
      this.connectTimer = setTimeout(this.onConnectTimeout, this.pool.options.connectTimeoutMs);
      socket.once('connect', this.onConnect);
    } else {
      this.onConnect();
    }
  };

  private readonly onConnect = (): void => {
    this.connected = true;
    this.clearConnectTimer();
    // Until the request is written, idleness is the send timeout; then the read timeout.
    this.req.setTimeout(this.sent ? this.pool.options.readTimeoutMs : this.pool.options.sendTimeoutMs, this.onIdleTimeout);
  };

  private readonly onFinish = (): void => {
    this.sent = true;
    if (this.connected) this.req.setTimeout(this.pool.options.readTimeoutMs, this.onIdleTimeout);
  };

  private readonly onConnectTimeout = (): void => {
    this.connectTimer = null;
    this.timedOut = true;
    this.req.destroy(new Error(`upstream connect timed out after ${this.pool.options.connectTimeoutMs}ms`));
  };

  private readonly onIdleTimeout = (): void => {
    this.timedOut = true;
    const err = new Error(this.sent ? 'upstream timed out while reading response' : 'upstream timed out while sending request');
    if (this.responded) {
      // Mid-body: the proxy sees the body stream error and tears the client connection down.
      this.req.destroy(err);
    } else {
      this.req.destroy(err);
    }
  };

  private readonly onResponse = (res: http.IncomingMessage): void => {
    this.responded = true;
    this.done = true;
    this.response = res;
    // nginx times reads only while it is reading: when a slow client makes the proxy pause this
    // body (back-pressure), the upstream is not "timing out" and must not be cut.
    res.on('pause', this.onBodyPause);
    res.on('resume', this.onBodyResume);
    this.handler.onUpstreamResponse({
      statusCode: res.statusCode ?? 502,
      statusMessage: res.statusMessage ?? '',
      rawHeaders: res.rawHeaders,
      body: res,
    });
  };

  private response: http.IncomingMessage | null = null;
  private readonly onBodyPause = (): void => {
    if (this.response !== null && !this.response.complete) this.socket?.setTimeout(0);
  };
  private readonly onBodyResume = (): void => {
    if (this.response !== null && !this.response.complete) this.socket?.setTimeout(this.pool.options.readTimeoutMs);
  };

  private readonly onError = (err: NodeJS.ErrnoException): void => {
    this.clearConnectTimer();
    if (this.done) return; // aborted by us, or the error belongs to the body stream the proxy is reading
    this.done = true;
    const code = err.code ?? '';
    const kind: FailureKind = this.timedOut ? 'timeout' : failureKind(err);
    const reused = this.req.reusedSocket;
    this.handler.onUpstreamError({
      kind,
      requestSent: this.connected,
      staleConnection: reused && !this.timedOut && (kind === 'reset' || code === 'HPE_INVALID_CONSTANT' || err.message === 'socket hang up'),
      message: err.message,
    });
  };

  private clearConnectTimer(): void {
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }
  }
}
