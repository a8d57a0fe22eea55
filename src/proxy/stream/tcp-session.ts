/**
 * One TCP session of a stream (nginx `stream { proxy_pass ...; }`): picks a server with the
 * upstream's policy, connects within `proxyConnectTimeout`, moves on to the next server when
 * a connection fails (proxy_next_upstream), then passes bytes both ways with back-pressure
 * until both directions ended, the idle timeout (`proxyTimeout`) fired, or an error closed it.
 *
 * With `sticky: {"mode": "source"}` the client's binding is looked up before connecting (the
 * bound server first; a lookup the store must answer waits at most its timeout, then the
 * policy picks), and once connected a new or moved binding is written to the store before any
 * byte passes (State.Binding, at most the store's timeout): the client's next connection may
 * reach another worker or instance, which must find it. The store never fails a connection.
 *
 * Half-close: a FIN from one side is passed on as `end()` to the other and the other
 * direction keeps going (nginx's `proxy_half_close on`); the session is over when both
 * sockets closed. An error or reset on either side destroys both.
 *
 * Hot path rules as in forward.ts: one object per connection, its listeners are module-level
 * functions that find it through a symbol property on the socket (no closures per session),
 * bytes are counted by the sockets themselves (bytesRead/bytesWritten), and the idle timeout
 * is one timer per session that compares byte counts instead of work per chunk. Server ->
 * client bytes are read into a shared buffer (see upstreamRead).
 */
import net from 'node:net';
import type { IncomingMessage } from 'node:http';
import type { Peer } from '../../balancer/peer.js';
import type { Upstream } from '../../balancer/upstream.js';
import type { NextUpstreamCondition, StreamConfig } from '../../config/model.js';
import { AttemptLoop, failureCondition, type RetryRules } from '../attempt-loop.js';
import type { Affinity } from '../../sessions/affinity.js';
import type { EventLog } from '../../observability/log.js';
import { formatTimes, type AccessLog } from '../../observability/access-log.js';
import type { StreamRouteMetrics } from '../../observability/stream-metrics.js';
import { failureKind, type FailureKind } from '../../net/errors.js';
import { deferWrite, type DeferredWrite } from '../upstream/write-batch.js';
import { clientAddressString, proxiedClient, socketClientAddress, socketClientPort } from '../../net/client-address.js';
import { buildProxyV1, buildProxyV2 } from '../../net/proxy-protocol.js';
import type { ClientHello } from '../../tls/client-hello.js';

/** Where a listener's connections go, resolved once per config. */
export interface StreamRoute {
  readonly stream: StreamConfig;
  /** The listen address (`host:port` key) that took the connection. */
  readonly listen: string;
  readonly upstream: Upstream;
  /** Attempts per session: nextUpstreamTries, bounded by the number of servers (nginx). */
  readonly maxTries: number;
  /** The stream's nextUpstream rules (retryRules). */
  readonly retry: RetryRules;
  readonly metrics: StreamRouteMetrics;
  /** Source affinity (`sticky: {"mode": "source"}`) of the upstream, or null. */
  readonly affinity: Affinity | null;
  /** Servers given `sendProxy` (HAProxy send-proxy / send-proxy-v2): the PROXY header version each gets first. */
  readonly sendProxy: ReadonlyMap<Peer, 'v1' | 'v2'>;
}

const CONNECT_FAILURES: ReadonlySet<NextUpstreamCondition> = new Set(['error', 'timeout']);
const NO_FAILURES: ReadonlySet<NextUpstreamCondition> = new Set();

/** A stream's nextUpstream (nginx stream proxy_next_upstream on|off): every failed connect moves on, or none does. */
export function retryRules(stream: StreamConfig): RetryRules {
  return { on: stream.nextUpstream ? CONNECT_FAILURES : NO_FAILURES, timeoutMs: stream.nextUpstreamTimeoutMs };
}

/** What a session needs from its listener and the balancer. */
export interface StreamSessionOwner {
  readonly log: EventLog;
  /** The access log in use now (it can change on reload), or null. */
  accessLog(): AccessLog | null;
  /** The session is over (both sockets closed). */
  sessionDone(session: TcpSession): void;
  /** This host ran out of a resource (`code`, e.g. EMFILE) in `operation`: counted, never against a server. */
  localError(code: string, operation: string): void;
}

const SESSION = Symbol('sessionlb.tcp-session');
interface Owned { [SESSION]?: TcpSession }
function owner(emitter: unknown): TcpSession {
  return (emitter as Owned)[SESSION]!;
}
function clientClosed(this: net.Socket, hadError: boolean): void { owner(this).onClientClose(hadError); }
function upstreamConnected(this: net.Socket): void { owner(this).onConnect(); }
function upstreamError(this: net.Socket, err: NodeJS.ErrnoException): void { owner(this).onUpstreamError(err); }
function upstreamClosed(this: net.Socket, hadError: boolean): void { owner(this).onUpstreamClose(hadError); }
function connectTimedOut(s: TcpSession): void { s.onConnectTimeout(); }
function idleTick(s: TcpSession): void { s.onIdleTick(); }
/*
 * Forwarding. Client -> server: 'data' listener; the chunk is written with the event-loop
 * turn's other writes (write-batch.ts, as the HTTP proxy does: the reader on the other side is
 * woken once per turn, not once per write); the client is paused while the server connection's
 * buffer is full and resumed on its 'drain'. Server -> client: the server socket reads into one
 * shared buffer (net.connect `onread`: no Buffer and no Readable machinery per read); a small
 * read is copied (node's pool) and deferred the same way, a large one is written straight to the
 * client. A full client buffer pauses the server socket until the client drains. An 'end' first
 * writes what is still deferred for that direction. (Measured, see docs/decisions/bench-journal.md:
 * against socket.pipe() both ways, the same system time and ~1 us less user time per request;
 * deferring the writes, ~0.4 us less CPU per request.)
 */
function clientData(this: net.Socket, chunk: Buffer): void { owner(this).queueToUpstream(chunk); }
function clientDrained(this: net.Socket): void { owner(this).upstreamSocket?.resume(); }
function upstreamDrained(this: net.Socket): void { owner(this).client.resume(); }
function clientEnded(this: net.Socket): void {
  const s = owner(this);
  s.writeToUpstream();
  s.upstreamSocket?.end();
}
function upstreamEnded(this: net.Socket): void {
  const s = owner(this);
  s.writeToClient();
  s.client.end();
}

const READ_BUFFER_SIZE = 64 * 1024;
/** Reads up to this size are copied and written with the turn's other writes; larger ones go out at once (bulk transfer gains nothing from waiting). */
const DEFERRED_READ_LIMIT = 4096;
/** Shared by every server socket: a read is copied or written to its client before the next read can happen. */
let readBuffer = Buffer.allocUnsafe(READ_BUFFER_SIZE);
function upstreamReadBuffer(): Buffer { return readBuffer; }
/** Node calls the `onread` callback with the socket as `this` (stream_base_commons onStreamRead). */
function upstreamRead(this: net.Socket, n: number, buf: Buffer): boolean {
  const session = owner(this);
  if (session.state !== State.Piping) return true; // connect not yet reported: cannot happen, reads start after it
  if (n <= DEFERRED_READ_LIMIT) {
    const copy = Buffer.allocUnsafe(n); // from node's shared pool at this size
    buf.copy(copy, 0, 0, n);
    session.queueToClient(copy);
    return true;
  }
  session.writeToClient(); // what came before goes first
  const client = session.client;
  const ok = client.write(buf.subarray(0, n));
  // A write that did not complete at once keeps referring to these bytes: the next read goes to a new buffer.
  if (client.writableLength !== 0) readBuffer = Buffer.allocUnsafe(READ_BUFFER_SIZE);
  return ok;
}

/** Errors are handled on 'close' (hadError): an 'error' listener only keeps them from being thrown. */
function ignoreError(): void { /* see 'close' */ }

/**
 * A stream's upstream may not use HTTP variables or sticky modes other than `source`, which
 * reads only the client address (`check` refuses the others), so nothing reads `req`: a
 * session has none.
 */
const NO_REQUEST = null as unknown as IncomingMessage;

const NO_HELLO: ClientHello = { serverName: undefined, alpn: undefined };

/** The access log fields of a ClientHello read by a stream's `route` (nginx $ssl_preread_server_name, $ssl_preread_alpn_protocols). */
export function prereadFields(hello: ClientHello): { ssl_preread_server_name: string; ssl_preread_alpn_protocols: string } {
  return { ssl_preread_server_name: hello.serverName ?? '', ssl_preread_alpn_protocols: hello.alpn?.join(',') ?? '' };
}

/** Binding: connected, waiting (bounded) for the store to take a new or moved source binding; no byte passes yet. */
export const enum State { Picking, Connecting, Binding, Piping, Done }

export class TcpSession extends AttemptLoop implements DeferredWrite {
  state = State.Picking;
  private startedAt = performance.now();
  /** The ClientHello's server name and ALPN protocols (a stream with `route`), for the access log; null otherwise. */
  private hello: ClientHello | null = null;
  upstreamSocket: net.Socket | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private connectStartedAt = 0;
  private idleTimer: NodeJS.Timeout | null = null;
  private idleBytes = -1;
  private idleSince = 0;
  private clientGone = false;
  private upstreamGone = false;
  private status: 200 | 502 = 200;
  /** Every server tried and its connect time in seconds (-1: did not connect), for the access log. */
  private readonly addrs: string[] = [];
  private readonly connectTimes: number[] = [];
  private serverAddr = '';
  private serverPort = 0;

  constructor(readonly client: net.Socket, readonly route: StreamRoute, private readonly owner: StreamSessionOwner) {
    // The PROXY header's source on a proxy_protocol address (read by the listener before this).
    super(NO_REQUEST, socketClientAddress(client), route.upstream, route.affinity, route.retry, route.maxTries);
  }

  /** The stream's `route` read this connection's ClientHello (`hello`, null if there was none) from `acceptedAt` on: call before start(). */
  afterPreread(hello: ClientHello | null, acceptedAt: number): void {
    this.hello = hello ?? NO_HELLO;
    this.startedAt = acceptedAt;
  }

  start(): void {
    const client = this.client;
    (client as net.Socket & Owned)[SESSION] = this;
    client.on('error', ignoreError);
    client.on('close', clientClosed);
    // The local address is gone once the socket is closed: read it now when it will be logged.
    if (this.owner.accessLog() !== null) {
      this.serverAddr = clientAddressString(client.localAddress);
      this.serverPort = client.localPort ?? 0;
    }
    this.beginSticky(null, Date.now());
    this.next();
  }

  /** Picks the next server and connects, or gives up with 502 when none is left. */
  private next(): void {
    const now = Date.now();
    const up = this.route.upstream;
    const peer = this.nextServer(now);
    if (peer === undefined) return; // waits for the source binding's lookup: resumeAfterLookup
    if (peer === null) {
      this.owner.log.error({ upstream: up.name, client: this.remoteAddress, server: this.route.listen },
        `no live upstreams while connecting to upstream "${up.name}"`);
      this.giveUp();
      return;
    }
    this.addrs.push(peer.address);
    this.connectTimes.push(-1);
    this.state = State.Connecting;
    this.connectStartedAt = performance.now();
    const socket = net.connect({
      host: peer.host, port: peer.port, allowHalfOpen: true, noDelay: true,
      onread: { buffer: upstreamReadBuffer, callback: upstreamRead },
    });
    (socket as net.Socket & Owned)[SESSION] = this;
    socket.on('connect', upstreamConnected);
    socket.on('error', upstreamError);
    socket.on('close', upstreamClosed);
    this.upstreamSocket = socket;
    this.connectTimer = setTimeout(connectTimedOut, this.route.stream.connectTimeoutMs, this);
  }

  /** The session lookup answered: the first attempt goes on. */
  protected resumeAfterLookup(): void {
    if (!this.clientGone) this.next();
  }

  /** No server could take the session: nginx closes the client connection (status 502). */
  private giveUp(): void {
    this.status = 502;
    this.upstreamSocket = null;
    this.state = State.Done;
    if (this.clientGone) this.finish();
    else this.client.destroy();
  }

  /** @internal timer (connectTimedOut) */
  onConnectTimeout(): void {
    this.connectTimer = null;
    if (this.state !== State.Connecting) return;
    this.failAttempt('timeout', 'upstream timed out (110: Connection timed out) while connecting to upstream');
  }

  /** @internal listener (upstreamError) */
  onUpstreamError(err: NodeJS.ErrnoException): void {
    if (this.state === State.Connecting) {
      this.failAttempt(failureKind(err), `connect() failed (${err.code ?? err.message}) while connecting to upstream`, err.code);
    }
    // While piping, 'close' (hadError) follows and ends the session.
  }

  /** A connection attempt failed: counts toward max_fails, then the next server (proxy_next_upstream) or 502. */
  private failAttempt(kind: FailureKind, message: string, code?: string): void {
    const peer = this.dropAttempt();
    const now = Date.now();
    // This host ran out of a resource (EMFILE, ...): the session's error, never the server's
    // failure, and no reason to try another server.
    const local = kind === 'local';
    this.route.upstream.release(peer, !local, now);
    if (local) this.owner.localError(code ?? 'unknown', 'connect');
    else peer.metrics?.failure(kind);
    this.owner.log.error({ upstream: this.route.upstream.name, server: peer.address, reason: kind, client: this.remoteAddress, listen: this.route.listen }, message);
    if (this.clientGone) {
      this.state = State.Done;
      this.finish();
      return;
    }
    if (!local && this.mayMoveOn(failureCondition(kind), now)) {
      this.next();
      return;
    }
    this.giveUp();
  }

  /** Abandons the connection attempt in progress (its timer, listeners and socket); returns its server, not yet released. */
  private dropAttempt(): Peer {
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }
    const socket = this.upstreamSocket!;
    socket.off('connect', upstreamConnected);
    socket.off('close', upstreamClosed);
    socket.off('error', upstreamError);
    socket.on('error', ignoreError);
    socket.destroy();
    this.upstreamSocket = null;
    const peer = this.peer!;
    this.peer = null;
    return peer;
  }

  /** @internal listener (upstreamConnected): pass bytes both ways from now on. */
  onConnect(): void {
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }
    this.connectTimes[this.connectTimes.length - 1] = (performance.now() - this.connectStartedAt) / 1000;
    const sticky = this.sticky;
    if (sticky !== null) {
      this.affinity!.onConnected(sticky, this.peer!, Date.now());
      const write = sticky.write;
      if (write !== null) {
        // A new or moved binding: no byte passes before the store has it (or failed to take it).
        // Paused here, before node's first read: the server's first bytes wait in the kernel.
        sticky.write = null;
        this.state = State.Binding;
        this.upstreamSocket!.pause();
        void write.then(() => this.bindingWritten());
        return;
      }
    }
    this.startPiping();
  }

  /** The store took (or failed to take, within its timeout) the binding this session announced. */
  private bindingWritten(): void {
    if (this.state !== State.Binding) return; // a side closed meanwhile
    this.upstreamSocket!.resume();
    this.startPiping();
  }

  private startPiping(): void {
    this.state = State.Piping;
    const up = this.upstreamSocket!;
    const c = this.client;
    // A PROXY header first, with the client's address (the one a PROXY header gave us, if any) and
    // the address it connected to: the server's `sendProxy` version (HAProxy send-proxy), else v1
    // for the stream's `proxyProtocol` (nginx `proxy_protocol on`).
    const version = this.route.sendProxy.size === 0 ? undefined : this.route.sendProxy.get(this.peer!);
    if (version !== undefined) up.write(this.proxyHeader(version));
    else if (this.route.stream.proxyProtocol) up.write(this.proxyHeader('v1'));
    // Both sockets allow half-open: an 'end' is passed on as end() and the other direction goes on.
    c.on('data', clientData);
    c.on('end', clientEnded);
    c.on('drain', clientDrained);
    up.on('end', upstreamEnded);
    up.on('drain', upstreamDrained);
    // The socket may be paused: after a PROXY header or a ClientHello was read (and put back).
    c.resume();
    // A client that sent its FIN (and nothing left unread) while we were connecting has had its
    // 'end' already: node reads the EOF and emits 'end' with nobody consuming. Pass it on now,
    // or both connections would wait for each other until proxyTimeout.
    if (c.readableEnded) up.end();
    const timeout = this.route.stream.timeoutMs;
    if (timeout > 0) {
      this.idleSince = Date.now();
      this.idleTimer = setTimeout(idleTick, Math.max(1, Math.ceil(timeout / 4)), this);
    }
  }

  /** The PROXY header sent to the server (`sendProxy`, `proxyProtocol`). */
  private proxyHeader(version: 'v1' | 'v2'): Buffer {
    const c = this.client;
    const p = proxiedClient(c);
    const src = { address: this.remoteAddress, port: socketClientPort(c) };
    const dst = p !== undefined ? { address: p.localAddress, port: p.localPort } : { address: clientAddressString(c.localAddress), port: c.localPort ?? 0 };
    return version === 'v2' ? buildProxyV2(src, dst) : buildProxyV1(src, dst);
  }

  /** @internal timer (idleTick): nginx proxy_timeout, nothing read on either side for that long. */
  onIdleTick(): void {
    if (this.state !== State.Piping) return;
    const up = this.upstreamSocket!;
    const bytes = this.client.bytesRead + up.bytesRead + this.client.bytesWritten + up.bytesWritten;
    const now = Date.now();
    if (bytes !== this.idleBytes) {
      this.idleBytes = bytes;
      this.idleSince = now;
    } else if (now - this.idleSince >= this.route.stream.timeoutMs) {
      this.idleTimer = null;
      this.owner.log.info({ upstream: this.route.upstream.name, client: this.remoteAddress, listen: this.route.listen },
        'timed out while proxying connection (proxyTimeout)');
      this.client.destroy();
      up.destroy();
      return;
    }
    this.idleTimer!.refresh();
  }

  /** @internal listener (clientClosed) */
  onClientClose(hadError: boolean): void {
    this.clientGone = true;
    switch (this.state) {
      case State.Connecting: {
        // The client left before the server answered: not the server's fault.
        this.route.upstream.release(this.dropAttempt(), false, Date.now());
        this.state = State.Done;
        this.finish();
        return;
      }
      case State.Binding:
        // Gone before a byte passed: the server connection goes too (its 'close' finishes the session).
        this.state = State.Done;
        this.upstreamSocket!.destroy();
        if (this.upstreamGone) this.finish();
        return;
      case State.Piping:
        // A reset (or our own destroy): the other side goes too. A clean close means both
        // directions ended, so the server side is finishing on its own.
        if (hadError) this.upstreamSocket!.destroy();
        if (this.upstreamGone) this.finish();
        return;
      default:
        // Picking is synchronous; Done: no server (502) or a failed last attempt.
        this.finish();
    }
  }

  /** @internal listener (upstreamClosed), only while connected */
  onUpstreamClose(hadError: boolean): void {
    this.upstreamGone = true;
    if (hadError || this.state === State.Binding) this.client.destroy();
    if (this.clientGone) this.finish();
  }

  private finished = false;
  /** Both sides are closed: release the server, count and log the session. */
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.state = State.Done;
    if (this.idleTimer !== null) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
    const up = this.upstreamSocket;
    if (this.peer !== null) {
      this.route.upstream.release(this.peer, false, Date.now());
      this.peer = null;
    }
    const client = this.client;
    const received = client.bytesRead;
    const sent = client.bytesWritten;
    this.route.metrics.done(this.status, received, sent);
    const log = this.owner.accessLog();
    if (log !== null) {
      log.writeStream({
        remote_addr: this.remoteAddress,
        remote_port: socketClientPort(client),
        server_addr: this.serverAddr,
        server_port: this.serverPort,
        protocol: 'TCP',
        status: this.status,
        bytes_sent: sent,
        bytes_received: received,
        session_time: Math.round(performance.now() - this.startedAt) / 1000,
        upstream_addr: this.addrs.join(', '),
        upstream_bytes_sent: up?.bytesWritten ?? 0,
        upstream_bytes_received: up?.bytesRead ?? 0,
        upstream_connect_time: formatTimes(this.connectTimes),
        upstream_name: this.route.upstream.name,
        ...(this.hello === null ? undefined : prereadFields(this.hello)),
        sticky: this.sticky === null ? 'none' : this.sticky.outcome,
      });
    }
    this.owner.sessionDone(this);
  }

  /** Bytes read in this event-loop turn, written with the turn's other writes (write-batch.ts). */
  private toUpstream: Buffer | null = null;
  private toClient: Buffer | null = null;
  private writeQueued = false;

  /** @internal (clientData) */
  queueToUpstream(chunk: Buffer): void {
    if (this.toUpstream !== null) this.writeToUpstream(); // a second read in one turn: in order
    this.toUpstream = chunk;
    this.queueWrite();
  }

  /** @internal (upstreamRead) */
  queueToClient(chunk: Buffer): void {
    if (this.toClient !== null) this.writeToClient();
    this.toClient = chunk;
    this.queueWrite();
  }

  private queueWrite(): void {
    if (this.writeQueued) return;
    this.writeQueued = true;
    deferWrite(this);
  }

  /** The deferred writes (DeferredWrite), unless a side is gone meanwhile. */
  flushWrite(): void {
    this.writeQueued = false;
    this.writeToUpstream();
    this.writeToClient();
  }

  /** Writes what the client sent this turn; pauses the client while the server's buffer is full. */
  writeToUpstream(): void {
    const chunk = this.toUpstream;
    if (chunk === null) return;
    this.toUpstream = null;
    const up = this.upstreamSocket;
    if (up !== null && !up.destroyed && !up.write(chunk)) this.client.pause();
  }

  /** Writes what the server sent this turn; pauses the server while the client's buffer is full. */
  writeToClient(): void {
    const chunk = this.toClient;
    if (chunk === null) return;
    this.toClient = null;
    const client = this.client;
    if (!client.destroyed && !client.write(chunk)) this.upstreamSocket?.pause();
  }

  /** Shutdown timeout or listener teardown: closes both sides now. */
  destroy(): void {
    this.client.destroy();
    this.upstreamSocket?.destroy();
  }
}
