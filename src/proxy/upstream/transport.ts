/**
 * The upstream transport's contract: connect, pool, write a request, frame the response.
 * The proxy talks to upstream servers only through `PeerPool` and the `AttemptHandler`
 * callbacks, so the implementation (raw-pool.ts: raw pooled sockets and the strict framer of
 * response-parser.ts) can be replaced without touching the proxy.
 */
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { FailureKind } from '../../net/errors.js';
import type { ProxyEndpoint } from '../../net/proxy-protocol.js';
import type { Peer } from '../../balancer/peer.js';
import type { UpstreamTlsOptions } from '../../tls/upstream-trust.js';

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
  /** The client connection the request came on, for a pool with `sendProxy` (the PROXY header). */
  client?: ProxyClient;
  /** This request's timeouts (its location's, resolved once per config); absent: the pool's. */
  timeouts?: AttemptTimeouts;
}

/** nginx proxy_connect/send/read_timeout of one request, in ms. */
export interface AttemptTimeouts {
  readonly connectMs: number;
  readonly sendMs: number;
  readonly readMs: number;
}

/** A client connection as a PROXY header names it: who, and the address it connected to. */
export interface ProxyClient {
  source: ProxyEndpoint;
  destination: ProxyEndpoint;
}

export interface PoolOptions {
  /**
   * HAProxy send-proxy(-v2): each new connection starts with a PROXY header naming the client
   * of the request that opened it, and is reused only for requests of that same client
   * connection (RequestHead.client); null: none.
   */
  sendProxy: 'v1' | 'v2' | null;
  /** Idle connections kept (nginx `keepalive`); 0 closes each connection after its response. */
  keepalive: number;
  keepaliveTimeoutMs: number;
  connectTimeoutMs: number;
  sendTimeoutMs: number;
  readTimeoutMs: number;
}

/**
 * TLS to the server (an "https://" proxyPass, nginx proxy_ssl_*), resolved when the config was
 * loaded: a pool with these options speaks TLS on every connection it opens. The type and the
 * rule that makes it live in tls/upstream-trust.ts, shared with the health probes.
 */
export type { UpstreamTlsOptions };

/** An in-flight attempt; `abort` tears down its upstream connection. */
export interface Attempt {
  abort(): void;
}

/** Connections to one upstream server. */
export interface PeerPool {
  readonly host: string;
  readonly port: number;
  readonly options: PoolOptions;
  /** TLS on each connection; null = plain TCP. */
  readonly tls: UpstreamTlsOptions | null;
  /** Sends a request; `body` is a complete Buffer, a stream to pipe, or null for none. */
  request(head: RequestHead, body: Buffer | Readable | null, handler: AttemptHandler): Attempt;
  /**
   * Sends an upgrade request (websocket). The handler gets the upstream's socket after
   * a 101, or an ordinary response when the upstream refuses to switch protocols.
   */
  upgrade(head: RequestHead, handler: UpgradeHandler): Attempt;
  /** Closes idle connections (after a reload removed this server, or at shutdown). */
  closeIdle(): void;
}

declare module '../../balancer/peer.js' {
  interface Peer {
    /** Connections to this server (plain HTTP); attached by the runtime, shared across reloads while the address stays. */
    pool: PeerPool;
    /**
     * Connections to this server over TLS, one pool per TLS setting the config's "https://"
     * locations use with its upstream, by `Route.tlsPoolKey`; absent when none does.
     */
    tlsPools?: ReadonlyMap<string, PeerPool>;
  }
}

/** The pool of `peer` for a route with TLS pool key `tlsPoolKey` (null/undefined: plain HTTP). */
export function poolOf(peer: Peer, tlsPoolKey: string | null | undefined): PeerPool {
  if (tlsPoolKey == null) return peer.pool;
  const pool = peer.tlsPools?.get(tlsPoolKey);
  if (pool === undefined) throw new Error(`no TLS pool for ${peer.address} (${tlsPoolKey})`);
  return pool;
}
