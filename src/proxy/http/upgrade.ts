/**
 * Protocol upgrades (`Upgrade: websocket`): after the upstream answers 101 the two
 * sockets are joined and bytes flow both ways until either side closes.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { ForwardHooks, Route } from './forward.js';
import { poolOf, type AttemptFailure, type UpgradeHandler, type UpstreamResponse } from '../upstream/transport.js';
import { clientResponseHeaders, requestScheme, upstreamRequestHeaders } from './headers.js';
import { rewritePath } from './forward.js';
import { proxyClientOf, requestClientAddress, requestPeerTrusted } from '../../net/client-address.js';
import { AttemptLoop, failureCondition } from '../attempt-loop.js';

function writeHead(socket: Duplex, status: number, message: string, flat: readonly string[]): void {
  let head = `HTTP/1.1 ${status} ${message}\r\n`;
  for (let i = 0; i < flat.length; i += 2) head += `${flat[i]}: ${flat[i + 1]}\r\n`;
  socket.write(head + '\r\n');
}

function rawError(socket: Duplex, status: number, message: string): void {
  if (!socket.writable) return;
  socket.end(`HTTP/1.1 ${status} ${message}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
}

/** One upgrade request: the attempt loop (the session's server first, nextUpstream on a failed connect), then the tunnel. */
export class UpgradeRequest extends AttemptLoop implements UpgradeHandler {
  constructor(
    req: IncomingMessage,
    private readonly socket: Duplex,
    private readonly head: Buffer,
    private readonly route: Route,
    private readonly hooks: ForwardHooks,
  ) {
    const upstream = route.upstream;
    super(req, requestClientAddress(req), upstream, route.affinity ?? null, route.location.nextUpstream, route.maxTries ?? upstream.maxTries);
    socket.on('error', () => socket.destroy());
  }

  start(): void {
    this.beginSticky(null, Date.now());
    this.attempt();
  }

  /** The session lookup answered: the first attempt goes on. */
  protected resumeAfterLookup(): void {
    if (!this.socket.destroyed) this.attempt();
  }

  private attempt(): void {
    const upstream = this.upstream;
    const peer = this.nextServer(Date.now());
    if (peer === undefined) return; // waits for the session lookup: resumeAfterLookup
    if (peer === null) {
      this.hooks.log.error({ upstream: upstream.name }, `no live upstreams while connecting to upstream "${upstream.name}"`);
      rawError(this.socket, 502, 'Bad Gateway');
      return;
    }
    const headers = upstreamRequestHeaders(this.req.rawHeaders, {
      remoteAddress: this.remoteAddress,
      scheme: requestScheme(this.req),
      keepForwardedProto: requestPeerTrusted(this.req),
      bodyFraming: null,
      upgrade: this.req.headers.upgrade ?? 'websocket',
      proxyHost: this.route.upstream.name,
      underscoresInHeaders: this.route.underscoresInHeaders,
      ignoreInvalidHeaders: this.route.location.ignoreInvalidHeaders,
    }, this.route.location.setHeaders);
    const pool = poolOf(peer, this.route.tlsPoolKey);
    pool.upgrade({
      method: this.req.method ?? 'GET', path: rewritePath(this.req.url ?? '/', this.route.location), headers,
      client: pool.options.sendProxy === null ? undefined : proxyClientOf(this.req.socket),
      timeouts: this.route.location.timeouts,
    }, this);
  }

  onUpgraded(res: UpstreamResponse, upstreamSocket: Socket, upstreamHead: Buffer): void {
    const client = this.socket;
    const peer = this.peer!;
    writeHead(client, res.statusCode, res.statusMessage, clientResponseHeaders(res.rawHeaders, true, this.route.location.hideHeaders));
    if (upstreamHead.length > 0) client.write(upstreamHead);
    if (this.head.length > 0) upstreamSocket.write(this.head);
    upstreamSocket.setNoDelay(true);
    let released = false;
    const close = (): void => {
      if (!released) {
        released = true;
        this.route.upstream.release(peer, false, Date.now());
      }
      client.destroy();
      upstreamSocket.destroy();
    };
    upstreamSocket.on('error', close);
    upstreamSocket.on('close', close);
    client.on('close', close);
    // nginx ends the tunnel when either side reaches EOF: pass on what is queued, then close both
    // (the sockets are half-open capable, so without this a FIN from one side keeps the other open).
    client.on('end', () => upstreamSocket.end(close));
    upstreamSocket.on('end', () => client.end(close));
    if (client.destroyed) {
      close(); // the client left while the upstream was answering: do not keep the upstream connection open
      return;
    }
    upstreamSocket.pipe(client);
    client.pipe(upstreamSocket);
  }

  onUpstreamResponse(res: UpstreamResponse): void {
    // The upstream declined to upgrade: relay its ordinary response and close.
    const client = this.socket;
    writeHead(client, res.statusCode, res.statusMessage, [...clientResponseHeaders(res.rawHeaders, false, this.route.location.hideHeaders), 'Connection', 'close']);
    res.body.on('end', () => this.done(false));
    res.body.on('error', () => { this.done(true); client.destroy(); });
    res.body.pipe(client);
  }

  onUpstreamError(failure: AttemptFailure): void {
    if (failure.kind === 'local') {
      // This host ran out of a resource: the request's error, not the server's (see forward.ts).
      this.done(false);
      this.hooks.localError?.(failure.code ?? 'unknown', 'connect');
      this.hooks.log.error({ upstream: this.route.upstream.name, reason: 'local', code: failure.code }, `local resource error while connecting to upstream: ${failure.message}`);
      rawError(this.socket, 500, 'Internal Server Error');
      return;
    }
    this.done(true);
    this.hooks.log.error({ upstream: this.route.upstream.name, reason: failure.kind }, `upstream failed during upgrade: ${failure.message}`);
    if (this.mayMoveOn(failureCondition(failure.kind), Date.now()) && !this.socket.destroyed) {
      this.attempt();
      return;
    }
    rawError(this.socket, failure.kind === 'timeout' ? 504 : 502, failure.kind === 'timeout' ? 'Gateway Timeout' : 'Bad Gateway');
  }

  private done(failed: boolean): void {
    if (this.peer !== null) {
      this.route.upstream.release(this.peer, failed, Date.now());
      this.peer = null;
    }
  }
}
