/**
 * Active health checks (nginx Plus `health_check`, HAProxy `check`): every server of an
 * upstream with `healthCheck` is probed on its own connection, one probe at a time per
 * server, spread with jitter. `fails` consecutive failed probes mark it unhealthy,
 * `passes` consecutive good ones bring it back (and start its slow start). Passive
 * failures (max_fails) and active ones combine: either takes a server out, and a
 * passing probe also ends a passive failure.
 *
 * Probe state lives in the server's runtime state (Peer.state: probeFailsInRow,
 * probePassesInRow, lastProbe, healthy), which survives reloads; the checker only keeps
 * timers, keyed by upstream name and server address, and points them at the current Peer.
 *
 * TLS: an upstream that an "https://" location proxies to is probed over TLS, as nginx Plus's
 * health_check uses the scheme and proxy_ssl_* settings of the location it is in. sessionlb's check
 * belongs to the upstream, so the first location in config order that reaches it over https gives
 * the settings (`healthCheckTls`, at start and reload): its SNI, verification and protocols, the
 * same connect options as the request pools. `http` probes send their GET over that TLS connection;
 * `tcp` probes complete the TLS handshake (verification included) instead of a bare connect.
 */
import http from 'node:http';
import net from 'node:net';
import { connect as tlsConnect, type SecureContext, type TLSSocket } from 'node:tls';
import type { Config, HealthCheckConfig } from '../config/model.js';
import type { Peer } from '../balancer/peer.js';
import type { Upstream } from '../balancer/upstream.js';
import type { EventLog } from '../observability/log.js';
import { isLocalResourceError } from '../net/errors.js';
import {
  upstreamConnectOptions, upstreamSecureContext, upstreamTlsOptions, type UpstreamTlsOptions,
} from '../tls/upstream-trust.js';

/** Only this much of a probe's response body is matched against `body`. */
export const PROBE_BODY_LIMIT = 64 * 1024;

type ProbeDone = (ok: boolean, detail: string) => void;

/** How an upstream's servers are reached over TLS by its probes: a location's settings, resolved once per config. */
export interface ProbeTls {
  readonly options: UpstreamTlsOptions;
  readonly context: SecureContext;
}

/**
 * Upstream name -> the TLS its probes use, for every upstream with `healthCheck` that some
 * "https://" location proxies to: the settings of the first such location in config order (nginx
 * Plus probes with the scheme and proxy_ssl_* of the location holding `health_check`). Upstreams
 * reached only over http:// (or only by streams) are absent: plain probes. `trusted`: the
 * proxySslTrustedCertificate files as read at load (readTrustedCertificates).
 */
export function healthCheckTls(config: Config, trusted: ReadonlyMap<string, Buffer>): Map<string, ProbeTls> {
  const out = new Map<string, ProbeTls>();
  for (const vs of config.servers) {
    for (const loc of vs.locations) {
      if (loc.upstreamTls === null || out.has(loc.upstream)) continue;
      if ((config.upstreams.get(loc.upstream)?.healthCheck ?? null) === null) continue;
      const options = upstreamTlsOptions(loc.upstreamTls, trusted);
      out.set(loc.upstream, { options, context: upstreamSecureContext(options) });
    }
  }
  return out;
}

/** A TLS connection to the server a probe checks, opened as a request pool opens one (no session reuse: each probe handshakes). */
function connectTls(host: string, port: number, tls: ProbeTls): TLSSocket {
  return tlsConnect({ host, port, ...upstreamConnectOptions(tls.options, tls.context) });
}

/**
 * A probe's detail for `err` on a TLS connection whose handshake was not done: a rejected
 * certificate ("certificate verify failed: ..."), another handshake failure, or the socket's
 * own error code (refused, reset: as a plain probe says it, so local resource errors stay known).
 */
function tlsFailure(socket: TLSSocket, err: NodeJS.ErrnoException): string {
  if (!socket.authorized && socket.authorizationError) {
    return `certificate verify failed: ${err.message}${err.code !== undefined && !err.message.includes(err.code) ? ` (${err.code})` : ''}`;
  }
  if (err.syscall === undefined) return `SSL handshake failed: ${err.message}`;
  return err.code ?? err.message;
}

interface Target {
  readonly upstream: string;
  peer: Peer;
  config: HealthCheckConfig;
  /** TLS to the server (the upstream is reached over https); null: plain. */
  tls: ProbeTls | null;
  timer: NodeJS.Timeout | null;
  /** Aborts the probe in flight; null when none runs. */
  abort: (() => void) | null;
  stopped: boolean;
}

function statusAccepted(status: number, ranges: ReadonlyArray<readonly [number, number]>): boolean {
  for (const [lo, hi] of ranges) if (status >= lo && status <= hi) return true;
  return false;
}

/** Host header for a server: its address as written (a resolved hostname's name, without the "#ip:port" suffix). */
function defaultHost(peer: Peer): string {
  const hash = peer.address.indexOf('#');
  return hash < 0 ? peer.address : peer.address.slice(0, hash);
}

/**
 * One HTTP probe: GET path on a fresh connection (TLS with `tls`); checks status and, if
 * configured, the body. Returns an abort function.
 */
export function probeHttp(peer: Peer, hc: HealthCheckConfig, tls: ProbeTls | null, done: ProbeDone): () => void {
  let finished = false;
  const headers: Record<string, string> = { 'User-Agent': 'sessionlb-health-check', Connection: 'close' };
  let hasHost = false;
  for (const [name, value] of Object.entries(hc.headers)) {
    if (name.toLowerCase() === 'host') hasHost = true;
    headers[name] = value;
  }
  if (!hasHost) headers.Host = defaultHost(peer);
  const port = hc.port === 0 ? peer.port : hc.port;
  let socket: TLSSocket | null = null;
  let secured = false;
  const req = http.request({
    host: peer.host,
    port,
    method: 'GET',
    path: hc.path,
    headers,
    // Probes never use (or disturb) the request pool: no agent, a connection of their own.
    ...(tls === null ? { agent: false } : {
      createConnection: () => {
        socket = connectTls(peer.host, port, tls);
        socket.once('secureConnect', () => { secured = true; });
        return socket;
      },
    }),
    setHost: false,
  });
  const finish = (ok: boolean, detail: string): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    req.destroy();
    done(ok, detail);
  };
  const timer = setTimeout(() => finish(false, 'timeout'), hc.timeoutMs);
  req.on('error', (err: NodeJS.ErrnoException) => {
    finish(false, socket !== null && !secured ? tlsFailure(socket, err) : err.code ?? err.message);
  });
  req.on('response', (res) => {
    const status = res.statusCode ?? 0;
    if (!statusAccepted(status, hc.status)) {
      finish(false, `status ${status}`);
      return;
    }
    const pattern = hc.body;
    if (pattern === null) {
      finish(true, String(status));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const check = (): void => {
      const text = Buffer.concat(chunks, Math.min(size, PROBE_BODY_LIMIT)).toString('utf8');
      pattern.lastIndex = 0;
      if (pattern.test(text)) finish(true, String(status));
      else finish(false, `status ${status}, body did not match`);
    };
    res.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= PROBE_BODY_LIMIT) check();
    });
    res.on('end', check);
    res.on('error', (err: NodeJS.ErrnoException) => finish(false, err.code ?? err.message));
  });
  req.end();
  return () => finish(false, 'aborted');
}

/** One TCP probe: the connection is accepted (with `tls`: and the TLS handshake, verification included, completes). */
export function probeTcp(peer: Peer, hc: HealthCheckConfig, tls: ProbeTls | null, done: ProbeDone): () => void {
  let finished = false;
  const port = hc.port === 0 ? peer.port : hc.port;
  const socket = tls === null ? net.connect({ host: peer.host, port }) : connectTls(peer.host, port, tls);
  const finish = (ok: boolean, detail: string): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.destroy();
    done(ok, detail);
  };
  const timer = setTimeout(() => finish(false, 'timeout'), hc.timeoutMs);
  if (tls === null) {
    socket.once('connect', () => finish(true, 'connected'));
    socket.once('error', (err: NodeJS.ErrnoException) => finish(false, err.code ?? err.message));
  } else {
    const tlsSocket = socket as TLSSocket;
    tlsSocket.once('secureConnect', () => finish(true, `connected, ${tlsSocket.getProtocol() ?? 'TLS'}`));
    tlsSocket.once('error', (err: NodeJS.ErrnoException) => finish(false, tlsFailure(tlsSocket, err)));
  }
  return () => finish(false, 'aborted');
}

/**
 * A `mandatory` check keeps a server that is new (not carried over from the previous config)
 * out of rotation until its first passing probe.
 */
export function holdUntilFirstProbe(peer: Peer, hc: HealthCheckConfig | null): void {
  if (hc?.mandatory === true && !peer.inherited) {
    peer.state.healthy = false;
    peer.state.awaitingFirstProbe = true;
  }
}

export class HealthChecker {
  private readonly targets = new Map<string, Target>();
  private stopped = false;
  /** Called after every probe, once the server's state reflects it (metrics: `sessionlb_health_checks_total`; the cluster primary tells the workers); must not throw. */
  onProbe: ((upstream: string, server: string, ok: boolean, detail: string) => void) | null = null;

  constructor(private readonly log: EventLog) {}

  /**
   * Matches probes to the current upstreams (at start and after every reload, synchronously
   * with the switch): starts probing added servers (a `mandatory` check makes a new server
   * unhealthy until its first passing probe), stops probing removed ones, and points the
   * probes of remaining servers at their new Peer objects and current check settings.
   * `tls`: the TLS of the upstreams reached over https (healthCheckTls of the same config).
   */
  sync(upstreams: ReadonlyMap<string, Upstream>, tls: ReadonlyMap<string, ProbeTls>): void {
    if (this.stopped) return;
    const seen = new Set<string>();
    for (const up of upstreams.values()) {
      const hc = up.config.healthCheck;
      const upTls = tls.get(up.name) ?? null;
      for (const peer of up.all()) {
        if (hc === null) {
          if (!peer.state.healthy) {
            // Nothing would ever bring it back: without active checks a server is healthy.
            peer.state.healthy = true;
            peer.state.awaitingFirstProbe = false;
            this.log.info({ upstream: up.name, server: peer.address }, 'health check removed from upstream; server is healthy');
          }
          continue;
        }
        const key = `${up.name}\0${peer.address}`;
        seen.add(key);
        const existing = this.targets.get(key);
        if (existing !== undefined) {
          existing.peer = peer;
          existing.config = hc;
          existing.tls = upTls;
          continue;
        }
        holdUntilFirstProbe(peer, hc);
        const target: Target = { upstream: up.name, peer, config: hc, tls: upTls, timer: null, abort: null, stopped: false };
        this.targets.set(key, target);
        // Spread the first probes over one interval (mandatory ones soon: the server waits for them).
        const spread = peer.state.awaitingFirstProbe ? Math.min(hc.intervalMs, 250) : hc.intervalMs;
        this.schedule(target, Math.random() * spread);
      }
    }
    for (const [key, target] of this.targets) {
      if (seen.has(key)) continue;
      this.stopTarget(target);
      this.targets.delete(key);
    }
  }

  /** Stops every probe (shutdown). */
  stop(): void {
    this.stopped = true;
    for (const target of this.targets.values()) this.stopTarget(target);
    this.targets.clear();
  }

  /** Servers being probed (for tests and status). */
  get size(): number {
    return this.targets.size;
  }

  private stopTarget(target: Target): void {
    target.stopped = true;
    if (target.timer !== null) clearTimeout(target.timer);
    target.timer = null;
    const abort = target.abort;
    target.abort = null;
    abort?.();
  }

  private schedule(target: Target, delayMs: number): void {
    target.timer = setTimeout(() => this.probe(target), delayMs);
    target.timer.unref();
  }

  private probe(target: Target): void {
    target.timer = null;
    if (target.stopped) return;
    const { peer, config, tls } = target;
    if (peer.down) {
      this.next(target);
      return;
    }
    const run = config.type === 'tcp' ? probeTcp : probeHttp;
    target.abort = run(peer, config, tls, (ok, detail) => {
      target.abort = null;
      if (target.stopped) return;
      if (!ok && isLocalResourceError(detail)) {
        // This host ran out of descriptors or ports: says nothing about the server; probe again later.
        this.log.warn({ upstream: target.upstream, server: peer.address, code: detail }, `health probe not run: ${detail}`);
        this.next(target);
        return;
      }
      this.apply(target, ok, detail);
      this.next(target);
    });
  }

  /** The next probe starts one interval (±10% jitter) after this one ended: probes of a server never overlap. */
  private next(target: Target): void {
    if (target.stopped) return;
    this.schedule(target, target.config.intervalMs * (0.9 + Math.random() * 0.2));
  }

  private apply(target: Target, ok: boolean, detail: string): void {
    const peer = target.peer;
    const now = Date.now();
    peer.state.lastProbe = { ok, at: now, detail };
    this.updateState(target, ok, detail, now);
    this.onProbe?.(target.upstream, peer.address, ok, detail);
  }

  /** Counts the result and moves the server between healthy and unhealthy (passes/fails thresholds). */
  private updateState(target: Target, ok: boolean, detail: string, now: number): void {
    const peer = target.peer;
    const hc = target.config;
    if (ok) {
      peer.state.probePassesInRow++;
      peer.state.probeFailsInRow = 0;
      if (!peer.state.healthy) {
        if (peer.state.awaitingFirstProbe || peer.state.probePassesInRow >= hc.passes) {
          peer.state.healthy = true;
          peer.state.awaitingFirstProbe = false;
          peer.state.passiveFails = 0; // active checks bring a server back from passive failure too
          peer.markBack(now);
          this.log.info({ upstream: target.upstream, server: peer.address, passes: peer.state.probePassesInRow, detail },
            `upstream server ${peer.address} is healthy again (health check passed ${peer.state.probePassesInRow} time${peer.state.probePassesInRow === 1 ? '' : 's'})`);
        }
      } else if (peer.isFailed(now)) {
        peer.state.passiveFails = 0;
        peer.markBack(now);
        this.log.info({ upstream: target.upstream, server: peer.address, detail },
          `upstream server ${peer.address} failed by max_fails is back: health check passed`);
      }
    } else {
      peer.state.probeFailsInRow++;
      peer.state.probePassesInRow = 0;
      if (peer.state.healthy && peer.state.probeFailsInRow >= hc.fails) {
        peer.state.healthy = false;
        this.log.warn({ upstream: target.upstream, server: peer.address, fails: peer.state.probeFailsInRow, detail },
          `upstream server ${peer.address} is unhealthy: health check failed ${peer.state.probeFailsInRow} time${peer.state.probeFailsInRow === 1 ? '' : 's'} (${detail})`);
      } else if (!peer.state.healthy && peer.state.probeFailsInRow === 1 && peer.state.awaitingFirstProbe) {
        this.log.warn({ upstream: target.upstream, server: peer.address, detail },
          `upstream server ${peer.address} waits for its first passing health check (${detail})`);
      }
    }
  }
}
