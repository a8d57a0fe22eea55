/**
 * The client side of HTTP: one listener per listen address (node's http.Server parses the
 * request; pipelined requests wait their turn; malformed ones, h2c upgrades and accept errors
 * are answered here; on an `ssl` address, tls/acceptor.ts does the handshake first and ALPN
 * `h2` connections go to the HTTP/2 side, http2.ts) and the set of them, switched on reload in three steps like the stream
 * listeners (src/proxy/stream/listener.ts): prepare binds the addresses a config adds, commit
 * switches every listener to the new routes and closes removed ones, abort undoes prepare.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { BlockList, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { TlsAcceptor, type TlsAcceptorOwner, type TlsErrorReason, type TlsSiteSource } from '../../tls/acceptor.js';
import type { TlsServerEntry } from '../../tls/contexts.js';
import { Http2Side, isHttp2Response, type Http2Requests } from './http2.js';
import type { Config, HeaderLimits } from '../../config/model.js';
import { expiresBefore, listenOn } from '../../net/listen.js';
import { acceptProxyHeader, type ProxyProtocolErrorReason } from '../../net/accept-proxy.js';
import { proxiedClient, setProxiedClient } from '../../net/client-address.js';
import { ForwardRequest, type ForwardHooks, type Route } from './forward.js';
import { UpgradeRequest } from './upgrade.js';
import { ListenerRouter, matchLocation, pathForMatching, ReturnRoute, type VirtualServerRoutes } from './router.js';
import { sendReturn } from './return.js';
import { addedHeaders } from '../../config/response-headers.js';
import { requestClientAddress } from '../../net/client-address.js';
import { sendError, useErrorPages, useInternalRedirect, type InternalRedirect } from './errors.js';
import { internalRequest } from './internal-request.js';
import { requestHeadStatus } from './headers.js';
import { checkAccess, type Verdict } from './access.js';
import { applyLimits } from './limits.js';

/** What the HTTP listeners need of the process they run in (runtime/sessionlb.ts provides it). */
export interface HttpListenerOwner {
  /** Shutting down: every response closes its connection. */
  readonly stopping: boolean;
  /** Given to every forwarded request: the log, metrics and access log it reports to. */
  readonly hooks: ForwardHooks;
  /** Virtual servers (by first server name, "_" for none) in admin maintenance: every request gets their 503 page. */
  readonly maintenance?: ReadonlySet<string>;
  /** A request answered here, not forwarded (400, 404, ...): metrics and access log. */
  answeredLocally(req: http.IncomingMessage, serverName: string, status: number, bodyBytes: number, startedAt: number): void;
  /** A TLS handshake completed on an `ssl` address: `server` is the virtual server SNI chose. */
  tlsHandshake(server: string, protocol: string, resumed: boolean): void;
  /** A TLS handshake failed; `reason` is one of TLS_ERROR_REASONS. */
  tlsHandshakeError(reason: TlsErrorReason): void;
  /** A connection on a `proxy_protocol` address was closed for its PROXY header (or the lack of one). */
  proxyProtocolError(reason: ProxyProtocolErrorReason): void;
}

/** Whether an Upgrade header offers h2c (RFC 7540 3.2): never passed upstream (the h2c smuggling vector). */
function offersH2c(upgrade: string | undefined): boolean {
  return upgrade !== undefined && /(^|,)\s*h2c\s*(,|$)/i.test(upgrade);
}

/** Longest gap between two reports of the same failing accept (EMFILE under a flood). */
const ACCEPT_ERROR_LOG_MS = 1000;

/**
 * Pipelined requests are handled one at a time, as nginx does (RFC 9112 9.3.2 allows parallel
 * processing only when every method is safe). node parses and emits them all at once, but gives
 * a response its socket only once the responses before it have finished: a request whose
 * response has no socket yet waits for the 'socket' event (never comes when an earlier response
 * closed the connection: nginx reads nothing after that either). A request that is not pipelined
 * costs one null check.
 */
const TURN = Symbol('sessionlb.turn');
interface Waiting { [TURN]?: { listener: HttpListener; expectContinue: boolean; broken: string | null } }
/** The last pipelined response on a connection (so an error after it is answered after it). */
const LAST_PIPELINED = Symbol('sessionlb.lastPipelined');
interface ClientSocket { _httpMessage?: http.ServerResponse | null; [LAST_PIPELINED]?: http.ServerResponse }

/** res 'socket' of a pipelined request: its turn. */
function pipelinedTurn(this: http.ServerResponse & Waiting): void {
  const turn = this[TURN]!;
  this[TURN] = undefined;
  if (turn.broken !== null) {
    // Its body was cut off (the client closed its side): the answers before it are out; this one
    // gets the error and the connection closes (nginx: 400, client prematurely closed connection).
    this.socket!.end(errorResponse(turn.broken));
    return;
  }
  turn.listener.route(this.req, this, turn.expectContinue);
}

function errorResponse(status: string): string {
  return `HTTP/1.1 ${status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`;
}

const SERVER = Symbol('virtualServer');
const IN_PAGE = Symbol('servingErrorPage');
/** A response whose server has `uri` error pages: that server, and whether an error page is being served. */
type PageResponse = http.ServerResponse & { [SERVER]?: VirtualServerRoutes<Route>; [IN_PAGE]?: boolean };

/** node's own 'connection' listener of an http.Server (it parses HTTP/1 on the socket it is given). */
type ConnectionListener = (this: http.Server, socket: Duplex) => void;

/** One HTTP listening address: node's http.Server, the client-side limits, and the routing of its virtual servers. */
export class HttpListener implements TlsAcceptorOwner, Http2Requests {
  readonly server: http.Server;
  router: ListenerRouter<Route>;
  /** large_client_header_buffers. */
  private headLimits: HeaderLimits = { bufferSize: 0, total: 0 };
  private keepaliveTimeoutMs = 0;
  private lastAcceptError = 0;
  /** The TLS side of an `ssl` address; null for plain HTTP. */
  private readonly tls: TlsAcceptor | null = null;
  /** node's HTTP/1 connection handling, given plain connections and the TLS ones that did not choose h2. */
  private readonly http1: ConnectionListener;
  /**
   * A `proxy_protocol` address: the peers allowed to send the PROXY header every connection must
   * start with (set before listen() and on every reload); null: none is read.
   */
  proxyFrom: BlockList | null = null;
  /** Bound on waiting for the PROXY header: clientHeaderTimeout. */
  private proxyTimeoutMs = 60_000;
  /** The HTTP/2 side, made when a client first negotiates h2. */
  private http2: Http2Side | null = null;

  constructor(
    readonly key: string, readonly host: string, readonly port: number, router: ListenerRouter<Route>,
    tls: TlsSiteSource | null, config: Config, private readonly owner: HttpListenerOwner,
  ) {
    this.router = router;
    const options: http.ServerOptions = {
      requestTimeout: 0, // large uploads are bounded by the idle timeouts below, not a total
      // A missing Host is answered by requestHeadStatus, in turn with pipelined requests.
      requireHostHeader: false,
      // node looks for header timeouts every connectionsCheckingInterval (30 s by default): every
      // second, so a slow client is closed within a second of clientHeaderTimeout, as in nginx.
      connectionsCheckingInterval: 1000,
      // Upstream connections already carry the request; keep the client side's Nagle off too.
      noDelay: true,
    };
    this.server = http.createServer(options, this.onRequest);
    // The http.Server listens (so that node tracks its connections, header timeouts and idle ones),
    // but each accepted socket goes through onConnection first: on a proxy_protocol address the
    // PROXY header is read, on an ssl address the TLS acceptor does the handshake; then node's
    // HTTP/1 handling (as https.Server does) or HTTP/2 gets it.
    const listeners = this.server.listeners('connection');
    if (listeners.length !== 1) throw new Error(`node's http.Server has ${listeners.length} connection listeners, expected 1`);
    this.http1 = listeners[0] as ConnectionListener;
    this.server.removeListener('connection', this.http1);
    this.server.on('connection', this.onConnection);
    if (tls !== null) {
      const acceptor = new TlsAcceptor(tls, key, this);
      this.tls = acceptor;
      this.server.once('close', () => acceptor.close());
    }
    this.configure(config);
    this.server.on('checkContinue', this.onCheckContinue);
    this.server.on('upgrade', this.onUpgrade);
    this.server.on('clientError', this.onClientError);
    this.server.on('error', this.onServerError);
  }

  /** Whether this listener terminates TLS (an `ssl` address). */
  get terminatesTls(): boolean {
    return this.tls !== null;
  }

  private readonly onConnection = (socket: Socket): void => {
    const from = this.proxyFrom;
    if (from === null) {
      this.accepted(socket);
      return;
    }
    acceptProxyHeader(socket, { from, timeoutMs: this.proxyTimeoutMs }, (failure) => {
      if (failure === null) this.accepted(socket);
      else this.owner.proxyProtocolError(failure);
    });
  };

  /** A connection ready for TLS or HTTP (its PROXY header read, on a proxy_protocol address). */
  private accepted(socket: Socket): void {
    if (this.tls !== null) {
      this.tls.accept(socket);
    } else if (this.proxyFrom === null) {
      this.http1.call(this.server, socket);
    } else {
      // After a PROXY header: node's HTTP/1 side would read the socket's handle directly
      // (llhttp consume), never seeing the bytes put back after the header; marked as taken, it
      // reads through the stream instead ('data'), the put-back bytes first.
      const handle = (socket as Socket & { _handle?: { _consumed?: boolean } | null })._handle;
      if (handle != null) handle._consumed = true;
      this.http1.call(this.server, socket);
      socket.resume();
    }
  }

  /** TlsAcceptorOwner: a handshake completed with virtual server `server`. */
  secure(socket: TLSSocket, server: TlsServerEntry): void {
    // The client a PROXY header named was recorded on the TCP socket the TLS one wraps.
    const proxied = this.proxyFrom === null ? undefined : proxiedClient((socket as TLSSocket & { _parent?: Socket })._parent ?? socket);
    if (proxied !== undefined) setProxiedClient(socket, proxied);
    this.owner.tlsHandshake(server.name, socket.getProtocol() ?? 'unknown', socket.isSessionReused());
    if (socket.alpnProtocol === 'h2') {
      let side = this.http2;
      if (side === null) {
        side = this.http2 = new Http2Side(this, this.keepaliveTimeoutMs, this.headLimits.total);
      }
      side.accept(socket);
    } else {
      this.http1.call(this.server, socket);
    }
  }

  /** TlsAcceptorOwner: a handshake failed. */
  failed(reason: TlsErrorReason): void {
    this.owner.tlsHandshakeError(reason);
  }

  /** The client-side limits of `config` (at start and on every reload). */
  configure(config: Config): void {
    const server = this.server;
    server.headersTimeout = config.clientHeaderTimeoutMs; // nginx client_header_timeout
    server.keepAliveTimeout = config.keepaliveTimeoutMs;
    // The whole head (nginx NUMBER x SIZE): over it node answers 431. No count limit: node's
    // maxHeadersCount (2000) would drop the headers past it silently and forward the rest.
    // A plain property of node's http.Server (read for each new connection), missing from @types/node.
    (server as http.Server & { maxHeaderSize: number }).maxHeaderSize = config.headerLimits.total;
    server.maxHeadersCount = 0;
    this.headLimits = config.headerLimits;
    server.maxConnections = config.maxConnections > 0 ? config.maxConnections : Infinity;
    this.keepaliveTimeoutMs = config.keepaliveTimeoutMs;
    this.tls?.setTimeout(config.clientHeaderTimeoutMs);
    this.proxyTimeoutMs = config.clientHeaderTimeoutMs;
    this.http2?.configure(config.keepaliveTimeoutMs, config.headerLimits.total);
  }

  /** Stops accepting; idle connections close now, HTTP/2 ones get a GOAWAY (requests in flight finish). */
  close(done?: () => void): void {
    this.server.close(done === undefined ? undefined : () => done());
    this.server.closeIdleConnections();
    this.http2?.shutdown();
  }

  /** Closes what close() left open (shutdown timeout). */
  closeAll(): void {
    this.server.closeAllConnections();
    this.http2?.destroy();
  }

  private readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    this.handle(req, res, false);
  };

  /** `Expect: 100-continue`: the body is invited only once the request may send it (size, route). */
  private readonly onCheckContinue = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    this.handle(req, res, true);
  };

  /** A request: now, or, pipelined behind another, once the responses before it finished (see pipelinedTurn). */
  private handle(req: http.IncomingMessage, res: http.ServerResponse, expectContinue: boolean): void {
    if (res.socket === null) {
      // Its body, if any, stays in the request stream (paused until read) meanwhile.
      (res as http.ServerResponse & Waiting)[TURN] = { listener: this, expectContinue, broken: null };
      (req.socket as Socket & ClientSocket)[LAST_PIPELINED] = res;
      res.once('socket', pipelinedTurn);
      return;
    }
    this.route(req, res, expectContinue);
  }

  /** @internal (pipelinedTurn, Http2Requests) Answers or forwards one request. */
  route(req: http.IncomingMessage, res: http.ServerResponse, expectContinue: boolean): void {
    if (this.owner.stopping) res.shouldKeepAlive = false;
    const vs = this.router.serverFor(req.headers.host);
    useErrorPages(res, vs.errorPages);
    if (vs.uriPages) {
      (res as PageResponse)[SERVER] = vs;
      useInternalRedirect(res, this.internalRedirect);
    }
    let status = requestHeadStatus(req.method ?? '', req.url ?? '/', req.rawHeaders, this.headLimits, req.httpVersion !== '1.0');
    // CONNECT reaches here only over HTTP/2 (node hands an HTTP/1 one to 'connect'): not a proxy.
    if (status === 0 && req.method === 'CONNECT') status = 405;
    // nginx 501 "client sent unknown Transfer-Encoding": a coding other than chunked cannot be passed on.
    const te = req.headers['transfer-encoding'];
    if (status === 0 && te !== undefined && te.trim().toLowerCase() !== 'chunked') status = 501;
    // nginx answers 400 to a target it cannot normalise and to a duplicate Host ("client sent duplicate host header").
    const path = status === 0 ? pathForMatching(req.url ?? '/') : null;
    if (path === null) {
      const startedAt = performance.now();
      const code = status === 0 ? 400 : status;
      this.answeredLocally(req, res, vs.name, code, sendError(res, code, true), startedAt);
      return;
    }
    if (vs.realIp !== null) vs.realIp.apply(req); // nginx realip: before the location and everything that reads $remote_addr
    if (this.owner.maintenance?.has(vs.name) === true) {
      // Admin maintenance switch (PUT /servers/{name}/maintenance): its 503 page, no upstream.
      const startedAt = performance.now();
      req.resume();
      this.answeredLocally(req, res, vs.name, 503, sendError(res, 503, expectContinue), startedAt);
      return;
    }
    const route = matchLocation(vs, path);
    if (route === null) {
      // nginx: no location, so the server level's add_header (with `always`) applies.
      const startedAt = performance.now();
      req.resume();
      const always = addedHeaders(vs.addHeaders, 404, { req, remoteAddress: requestClientAddress(req) });
      this.answeredLocally(req, res, vs.name, 404, sendError(res, 404, expectContinue, always), startedAt);
      return;
    }
    if (route instanceof ReturnRoute) {
      const startedAt = performance.now();
      const done = sendReturn(req, res, route.ret, requestClientAddress(req), vs.name === '_' ? '' : vs.name, expectContinue, route.location?.addHeaders ?? vs.addHeaders);
      this.answeredLocally(req, res, vs.name, done.status, done.bytes, startedAt);
      return;
    }
    if (route.location.errorPages !== undefined) useErrorPages(res, route.location.errorPages);
    const limits = route.limits;
    if (limits != null) {
      // nginx's preaccess phase (limit_req, limit_conn) comes before access (allow/deny, auth_basic).
      applyLimits(req, res, limits, vs.name, this.owner.hooks.log,
        (status) => this.refuse(req, res, route, status, vs.name, expectContinue),
        () => this.accessPhase(req, res, route, vs.name, expectContinue));
      return;
    }
    this.accessPhase(req, res, route, vs.name, expectContinue);
  }

  /**
   * errorPage `uri` (nginx's internal redirect, recursive_error_pages off): a GET of the page's
   * URI through the location of this server that takes it, answered with the error's status (or
   * the rule's `response`); its own errors get the built-in pages. A URI that no proxying location
   * takes, and HTTP/2, get the built-in page.
   */
  private readonly internalRedirect: InternalRedirect = (res, status, page, close) => {
    const r = res as PageResponse;
    const vs = r[SERVER];
    if (vs === undefined || r[IN_PAGE] === true || isHttp2Response(res)) return false;
    const path = pathForMatching(page.uri);
    const route = path === null ? null : matchLocation(vs, path);
    if (route === null || route instanceof ReturnRoute) return false;
    r[IN_PAGE] = true;
    useErrorPages(res, null);
    if (close) res.shouldKeepAlive = false;
    new ForwardRequest(internalRequest(res.req, page.uri), res, route, this.owner.hooks, { status: page.status ?? status, original: res.req }).start(false);
    return true;
  };

  /** An answer of this listener: counted and logged, unless an errorPage `uri` request took it over (it logs it). */
  private answeredLocally(req: http.IncomingMessage, res: http.ServerResponse, server: string, status: number, bytes: number, startedAt: number): void {
    if ((res as PageResponse)[IN_PAGE] === true) return;
    this.owner.answeredLocally(req, server, status, bytes, startedAt);
  }

  /** nginx's access phase (allow/deny, then auth_basic: satisfy all), then the upstream. */
  private accessPhase(req: http.IncomingMessage, res: http.ServerResponse, route: Route, server: string, expectContinue: boolean): void {
    const loc = route.location;
    if (loc.access !== null || loc.authBasic !== null) {
      const verdict = checkAccess(req, loc, this.owner.hooks.log, server);
      if (typeof verdict !== 'number') {
        verdict.then((v) => this.forwardOrRefuse(req, res, route, v, server, expectContinue), () => this.forwardOrRefuse(req, res, route, 401, server, expectContinue));
        return;
      }
      if (verdict !== 0) {
        this.refuse(req, res, route, verdict, server, expectContinue, true);
        return;
      }
    }
    new ForwardRequest(req, res, route, this.owner.hooks).start(expectContinue);
  }

  /** After checkAccess: 403, 401 with the realm, or on to the upstream. */
  private forwardOrRefuse(req: http.IncomingMessage, res: http.ServerResponse, route: Route, verdict: Verdict, server: string, expectContinue: boolean): void {
    if (verdict === 0) {
      if (!res.destroyed) new ForwardRequest(req, res, route, this.owner.hooks).start(expectContinue);
      return;
    }
    this.refuse(req, res, route, verdict, server, expectContinue, true);
  }

  /** A request refused by the location's rules (401/403 of access, limitReqStatus, limitConnStatus): its error page, no upstream. */
  private refuse(req: http.IncomingMessage, res: http.ServerResponse, route: Route, status: number, server: string, expectContinue: boolean, byAccess = false): void {
    if (res.destroyed) return;
    const startedAt = performance.now();
    req.resume();
    if (byAccess && status === 401) res.setHeader('WWW-Authenticate', route.location.authBasic!.challenge);
    const always = addedHeaders(route.location.addHeaders, status, { req, remoteAddress: requestClientAddress(req) });
    this.answeredLocally(req, res, server, status, sendError(res, status, expectContinue, always), startedAt);
  }

  private readonly onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    if (offersH2c(req.headers.upgrade)) {
      this.withoutUpgrade(req, socket as Socket);
      return;
    }
    const vs = this.router.serverFor(req.headers.host);
    const status = requestHeadStatus(req.method ?? '', req.url ?? '/', req.rawHeaders, this.headLimits, req.httpVersion === '1.1');
    const path = status === 0 ? pathForMatching(req.url ?? '/') : null;
    if (path !== null && vs.realIp !== null) vs.realIp.apply(req);
    let route = path === null ? null : matchLocation(vs, path);
    if (route instanceof ReturnRoute) {
      // An upgrade answered by a `return`: served as the plain request it also is, on this connection.
      route = null;
      if (path !== null) {
        this.withoutUpgrade(req, socket as Socket);
        return;
      }
    }
    if (route === null) {
      const line = status === 414 ? '414 Request-URI Too Large' : status === 431 ? '431 Request Header Fields Too Large'
        : path === null ? '400 Bad Request' : '404 Not Found';
      socket.end(errorResponse(line));
      return;
    }
    if (this.owner.maintenance?.has(vs.name) === true) {
      // Admin maintenance switch: no new tunnel to an upstream either.
      socket.end(errorResponse('503 Service Temporarily Unavailable'));
      return;
    }
    const limits = route.limits;
    if (limits != null) {
      // limit_req, limit_conn (its counts held until the tunnel closes), then access.
      const upgrade = route;
      applyLimits(req, socket as Socket, limits, vs.name, this.owner.hooks.log,
        (code) => socket.end(errorResponse(`${code} ${http.STATUS_CODES[code] ?? 'Error'}`)),
        () => this.upgradeAccess(req, socket, head, upgrade, vs.name));
      return;
    }
    this.upgradeAccess(req, socket, head, route, vs.name);
  };

  /** An Upgrade's access phase (allow/deny, auth_basic), then the tunnel. */
  private upgradeAccess(req: http.IncomingMessage, socket: Duplex, head: Buffer, route: Route, server: string): void {
    const loc = route.location;
    if (loc.access !== null || loc.authBasic !== null) {
      const go = (verdict: Verdict): void => {
        if (verdict === 0) new UpgradeRequest(req, socket, head, route, this.owner.hooks).start();
        else if (verdict === 403) socket.end(errorResponse('403 Forbidden'));
        else socket.end(`HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: ${loc.authBasic!.challenge}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      };
      const verdict = checkAccess(req, loc, this.owner.hooks.log, server);
      if (typeof verdict === 'number') go(verdict);
      else verdict.then(go, () => go(401));
      return;
    }
    new UpgradeRequest(req, socket, head, route, this.owner.hooks).start();
  }

  /**
   * An `Upgrade: h2c` request is served as the plain HTTP/1.1 request it also is (nginx never
   * passes an Upgrade it was not told to), on this connection, which then closes: node handed the
   * socket over already. One with a body is refused: node stopped reading it at the head.
   */
  private withoutUpgrade(req: http.IncomingMessage, socket: Socket): void {
    const cl = req.headers['content-length'];
    if (req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0')) {
      socket.end(errorResponse('400 Bad Request'));
      return;
    }
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket);
    res.on('finish', () => socket.end());
    this.handle(req, res, false);
  }

  private readonly onClientError = (err: NodeJS.ErrnoException, socket: Duplex): void => {
    // Malformed request (llhttp rejected it) or a broken client connection: answer 400 when we still can.
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    const current = (socket as Duplex & ClientSocket)._httpMessage; // node's response in progress on it
    if (current != null) {
      if (current.req.complete) {
        // A later request does not parse: those before it get their answers first (nginx), then this
        // one, unless one of them closes the connection.
        const pipelined = (socket as Duplex & ClientSocket)[LAST_PIPELINED];
        const turn = pipelined === undefined ? undefined : (pipelined as http.ServerResponse & Waiting)[TURN];
        if (turn !== undefined && !pipelined!.req.complete) {
          // The request that broke is that waiting one (its body ended early, e.g. at the client's
          // FIN): it is answered with the error at its turn instead of being forwarded, since its
          // body can never complete.
          turn.broken = status;
          return;
        }
        const last = pipelined !== undefined && !pipelined.writableFinished ? pipelined : current;
        last.once('finish', () => {
          if (last.shouldKeepAlive && socket.writable) socket.end(errorResponse(status));
        });
        return;
      }
      if (current.headersSent) {
        // The request in flight has a bad body and its answer is under way: nothing can follow it.
        if (current.writableEnded) socket.end();
        else socket.destroy();
        return;
      }
    }
    socket.end(errorResponse(status));
  };

  /**
   * A failed accept (EMFILE, ENFILE, ENOBUFS: this host's limits, no client's or server's fault).
   * libuv already takes the pending connection and closes it, so the listener does not spin;
   * reported at most once a second.
   */
  private readonly onServerError = (err: NodeJS.ErrnoException): void => {
    if (!this.server.listening) return; // a bind error: listen() rejects with it
    this.owner.hooks.localError?.(err.code ?? 'unknown', 'accept');
    const now = Date.now();
    if (now - this.lastAcceptError < ACCEPT_ERROR_LOG_MS) return;
    this.lastAcceptError = now;
    this.owner.hooks.log.error({ listen: this.key, code: err.code, err: err.message }, `accept() failed on ${this.key}: ${err.message}`);
  };

  listen(): Promise<void> {
    return listenOn(this.server, this.host, this.port);
  }
}

/** One HTTP listening address and the routing of every virtual server on it. */
export interface HttpRoute {
  host: string;
  port: number;
  router: ListenerRouter<Route>;
  /** TLS termination of an `ssl` address; null for plain HTTP. */
  tls: TlsSiteSource | null;
  /** A `proxy_protocol` address: who may send the PROXY header (`proxyProtocolFrom`); null for none. */
  proxyFrom: BlockList | null;
}

/** Listeners bound for a config not yet switched to (see HttpListeners.prepare). */
export interface HttpPlan {
  config: Config;
  routes: ReadonlyMap<string, HttpRoute>;
  fresh: HttpListener[];
}

/** Every HTTP listener of a process, by listen key. */
export class HttpListeners {
  private readonly listeners = new Map<string, HttpListener>();

  constructor(private readonly owner: HttpListenerOwner) {}

  /**
   * Binds the listeners `routes` adds (listen key -> address and router); nothing changes for
   * running ones until commit(). Throws, having closed what it bound, when one cannot be bound.
   */
  async prepare(config: Config, routes: ReadonlyMap<string, HttpRoute>): Promise<HttpPlan> {
    const plan: HttpPlan = { config, routes, fresh: [] };
    try {
      for (const [key, { host, port, router, tls, proxyFrom }] of routes) {
        const running = this.listeners.get(key);
        if (running !== undefined) {
          if (running.terminatesTls !== (tls !== null)) {
            throw new Error(`${key} would switch ${tls !== null ? 'to' : 'from'} ssl: a bound address keeps its protocol across reloads; restart sessionlb (or use another address) to change it`);
          }
          continue;
        }
        const listener = new HttpListener(key, host, port, router, tls, config, this.owner);
        listener.proxyFrom = proxyFrom;
        await listener.listen();
        plan.fresh.push(listener);
      }
    } catch (err) {
      this.abort(plan);
      throw err;
    }
    return plan;
  }

  /** Undoes prepare() (a later step of the reload failed). */
  abort(plan: HttpPlan): void {
    for (const l of plan.fresh) l.close();
  }

  /**
   * Switches to the plan (synchronous): new listeners in, every remaining one on its new router
   * and client-side limits, removed ones closed (requests in flight on them finish; idle
   * connections close).
   */
  commit(plan: HttpPlan): void {
    for (const l of plan.fresh) this.listeners.set(l.key, l);
    const removed: HttpListener[] = [];
    for (const [key, l] of this.listeners) {
      const r = plan.routes.get(key);
      if (r === undefined) {
        removed.push(l);
      } else {
        l.router = r.router;
        l.proxyFrom = r.proxyFrom;
        l.configure(plan.config);
      }
    }
    for (const l of removed) {
      this.listeners.delete(l.key);
      l.close();
    }
  }

  /** Listen keys (`host:port`). */
  keys(): string[] {
    return [...this.listeners.keys()];
  }

  /** Listening addresses, `host:port` -> bound port (useful when tests ask for port 0). */
  addresses(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [key, l] of this.listeners) out.set(key, (l.server.address() as { port: number }).port);
    return out;
  }

  /** Open client connections on every listener. */
  async connections(): Promise<number> {
    const counts = await Promise.all([...this.listeners.values()].map((l) => new Promise<number>((resolve) => {
      l.server.getConnections((err, n) => resolve(err ? 0 : n));
    })));
    return counts.reduce((a, b) => a + b, 0);
  }

  /** Stops accepting, lets requests in flight finish (up to `timeoutMs`), then closes the connections left. */
  async stop(timeoutMs: number): Promise<void> {
    const closed = [...this.listeners.values()].map((l) => new Promise<void>((resolve) => {
      l.close(resolve);
    }));
    // Keep-alive connections become idle when their last response ends; close them as they do.
    const sweeper = setInterval(() => {
      for (const l of this.listeners.values()) l.server.closeIdleConnections();
    }, 50);
    const expired = await expiresBefore(Promise.all(closed), timeoutMs);
    clearInterval(sweeper);
    if (expired) {
      this.owner.hooks.log.warn({ timeoutMs }, 'shutdown timeout reached; closing remaining connections');
      for (const l of this.listeners.values()) l.closeAll();
    }
  }
}
