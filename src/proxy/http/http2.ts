/**
 * HTTP/2 from clients (nginx `http2 on`), on `ssl` addresses whose handshake chose ALPN `h2`:
 * node's http2 server (never listening: tls/acceptor.ts hands it each negotiated connection) with
 * its compatibility API, whose request and response objects have the shape of node's http ones.
 * Each request is made into the HTTP/1.1 request it stands for, as nginx does before proxying it
 * (upstreams stay HTTP/1.1), and then goes through the same routing, limits, sticky sessions,
 * retries, metrics and access log as one over HTTP/1.1:
 *
 * - `:authority` becomes `Host` when the request has no Host header;
 * - the `cookie` fields HTTP/2 splits apart are joined again with "; " (RFC 9113 8.2.3);
 * - a body without `content-length` (DATA frames until END_STREAM) is framed chunked upstream;
 * - pseudo-headers never go upstream; HTTP/2 has no connection-specific headers to drop
 *   (node refuses a request carrying them).
 *
 * Connection limits as nginx's: at most 128 concurrent streams (http2_max_concurrent_streams),
 * a header list no larger than the HTTP/1.1 head limit (large_client_header_buffers), an idle
 * connection (no stream open) closed after keepaliveTimeout, and a GOAWAY to every connection at
 * shutdown, letting the streams in flight finish. Extended CONNECT (websockets over HTTP/2,
 * RFC 8441) is not offered, so browsers open websockets over HTTP/1.1, which the address serves.
 */
import http2 from 'node:http2';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';

/** nginx http2_max_concurrent_streams. */
export const MAX_CONCURRENT_STREAMS = 128;

/** What the HTTP/2 side hands each request to (the listener's routing, shared with HTTP/1.1). */
export interface Http2Requests {
  route(req: IncomingMessage, res: ServerResponse, expectContinue: boolean): void;
}

/** Open streams of a session (no closure per stream: see streamClosed), and its TLS connection. */
const OPEN_STREAMS = Symbol('sessionlb.openStreams');
const CONNECTION = Symbol('sessionlb.connection');
type CountedSession = http2.ServerHttp2Session & { [OPEN_STREAMS]: number; [CONNECTION]: TLSSocket };

/** A stream's session (node clears `stream.session` when the stream is destroyed, before 'close'). */
const OWNER = Symbol('sessionlb.session');
type OwnedStream = http2.ServerHttp2Stream & { [OWNER]: CountedSession };

function streamClosed(this: OwnedStream): void {
  this[OWNER][OPEN_STREAMS]--;
}
function sessionStream(this: CountedSession, stream: OwnedStream): void {
  this[OPEN_STREAMS]++;
  stream[OWNER] = this;
  stream.once('close', streamClosed);
}
/** keepaliveTimeout passed without a frame: closed when no stream is open (a long request keeps it). */
function sessionIdle(this: CountedSession): void {
  if (this[OPEN_STREAMS] === 0) this.close();
}
function sessionError(this: CountedSession): void {
  this.destroy();
}

/**
 * The HTTP/1.1 form of an HTTP/2 request head, in place: rawHeaders without pseudo-headers and
 * with one Cookie, `host` from `:authority`, `transfer-encoding: chunked` for a body of unknown
 * length. node's compatibility request computes rawHeaders once, as a plain field.
 */
export function asHttp1Head(req: http2.Http2ServerRequest): void {
  const raw = req.rawHeaders;
  const out: string[] = [];
  let authority: string | undefined;
  let host = false;
  let cookie: string | null = null;
  let contentLength = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    if (name.charCodeAt(0) === 58 /* : */) {
      if (name === ':authority') authority = value;
      continue;
    }
    // HTTP/2 field names are lower case (node refuses others).
    if (name === 'cookie') {
      cookie = cookie === null ? value : `${cookie}; ${value}`;
      continue;
    }
    if (name === 'host') host = true;
    else if (name === 'content-length') contentLength = true;
    out.push(name, value);
  }
  const headers = req.headers as Record<string, string | string[] | undefined>;
  if (cookie !== null) out.push('cookie', cookie);
  if (!host && authority !== undefined) {
    out.push('host', authority);
    headers.host = authority;
  }
  if (!contentLength && !req.stream.endAfterHeaders) {
    // nginx sends a body of unknown length chunked to an HTTP/1.1 upstream (or buffers it whole).
    out.push('transfer-encoding', 'chunked');
    headers['transfer-encoding'] = 'chunked';
  }
  Object.defineProperty(req, 'rawHeaders', { value: out, configurable: true });
}

/** Whether a response belongs to an HTTP/2 stream (node's compatibility API). */
export function isHttp2Response(res: ServerResponse): boolean {
  return (res as ServerResponse & { stream?: unknown }).stream !== undefined;
}

/** The HTTP/2 server of one listener. */
export class Http2Side {
  private readonly server: http2.Http2Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private stopping = false;
  /** The connection being handed to node's server (its 'session' event comes synchronously). */
  private arriving: TLSSocket | null = null;

  constructor(private readonly requests: Http2Requests, private idleTimeoutMs: number, maxHeaderListSize: number) {
    this.server = http2.createServer({
      settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS, maxHeaderListSize, enablePush: false },
      // Bounded by maxHeaderListSize (each field counts 32 bytes more than its name and value, RFC
      // 9113 6.5.2), not by node's default of 128 fields, which would refuse a large but valid head.
      maxHeaderListPairs: Math.max(128, Math.ceil(maxHeaderListSize / 32)),
    });
    this.server.on('request', this.onRequest);
    this.server.on('checkContinue', this.onCheckContinue);
    this.server.on('session', this.onSession);
  }

  /** keepaliveTimeout and the header list limit (on every reload; connections made from then on). */
  configure(idleTimeoutMs: number, maxHeaderListSize: number): void {
    this.idleTimeoutMs = idleTimeoutMs;
    this.server.updateSettings({ maxHeaderListSize });
  }

  /** A TLS connection that negotiated `h2`. */
  accept(socket: TLSSocket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    this.arriving = socket;
    this.server.emit('connection', socket);
    this.arriving = null;
  }

  /** Open HTTP/2 connections. */
  get connections(): number {
    return this.sessions.size;
  }

  /** GOAWAY to every connection: streams in flight finish, no new one starts; each closes once its streams are done. */
  shutdown(): void {
    this.stopping = true;
    for (const s of this.sessions) s.close();
  }

  /** Closes every connection now (shutdown timeout). */
  destroy(): void {
    for (const s of this.sessions) s.destroy();
  }

  private readonly onSession = (session: http2.ServerHttp2Session): void => {
    const counted = session as CountedSession;
    counted[OPEN_STREAMS] = 0;
    counted[CONNECTION] = this.arriving!;
    this.sessions.add(session);
    session.once('close', () => this.sessions.delete(session));
    session.on('stream', sessionStream);
    session.on('error', sessionError);
    session.setTimeout(this.idleTimeoutMs, sessionIdle);
    if (this.stopping) session.close();
  };

  private readonly onRequest = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): void => {
    this.handle(req, res, false);
  };

  private readonly onCheckContinue = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): void => {
    this.handle(req, res, true);
  };

  private handle(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse, expectContinue: boolean): void {
    asHttp1Head(req);
    // The TLS connection itself rather than node's per-request proxy of it, which stops answering
    // once the stream is closed (the access log reads the address and TLS facts then).
    Object.defineProperty(req, 'socket', { value: (req.stream.session as CountedSession)[CONNECTION], configurable: true });
    // The compatibility objects have the http ones' shape in every member the proxy uses (see the file's comment).
    this.requests.route(req as unknown as IncomingMessage, res as unknown as ServerResponse, expectContinue);
  }
}
