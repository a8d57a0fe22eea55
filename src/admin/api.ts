/**
 * The runtime admin API (like HAProxy's runtime API / nginx Plus's API), on the admin listener:
 *   GET /status                                   every upstream and server, as JSON
 *   PUT /upstreams/{name}/servers/{address}       {"state": "drain"|"maint"|"ready", "weight": N}
 *   PUT /servers/{name}/maintenance               {"on": true|false}: every request of that virtual server gets its 503 page
 * /status also lists the TLS certificates in use with their expiry (`certificates`; never a key).
 * The allow-list and token are checked by AdminServer before these handlers run.
 */
import type http from 'node:http';
import type { AdminState, Peer } from '../balancer/peer.js';
import type { Upstream } from '../balancer/upstream.js';
import { formatHostPort, parseHostPort } from '../nginx-language/address.js';
import { clientAddress } from '../net/client-address.js';
import type { Config } from '../config/model.js';
import type { EventLog } from '../observability/log.js';
import type { AffinityStats } from '../sessions/affinity.js';
import { EXPIRY_WARNING_MS } from '../tls/certificates.js';
import type { CertificateInUse } from '../tls/contexts.js';
import { sendJson, type AdminServer } from './server.js';

/** Larger PUT bodies get 413. */
export const MAX_ADMIN_BODY = 4096;
const ADMIN_STATES: readonly AdminState[] = ['ready', 'drain', 'maint'];

function iso(ms: number | null): string | null {
  return ms === null || ms === 0 ? null : new Date(ms).toISOString();
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

/**
 * What the admin API reads and changes of a running balancer: all it may touch
 * (runtime/sessionlb.ts implements it).
 */
export interface AdminTarget {
  readonly config: Pick<Config, 'file' | 'streams' | 'servers'>;
  /** Virtual servers (first server name, "_" for none) in maintenance; changed by the admin API. */
  readonly maintenance: Set<string>;
  readonly upstreams: ReadonlyMap<string, Upstream>;
  readonly log: EventLog;
  readonly startedAt: number;
  readonly reloads: { readonly success: number; readonly failure: number };
  readonly lastReloadSuccess: number | null;
  readonly lastReloadFailure: number | null;
  /** Sessions bound to a server (memory store only); null when the store cannot count them. */
  readonly sessionsBound: ((upstream: string, server: string) => number | null) | null;
  readonly sessions: { stats(upstream: string): AffinityStats };
  /** The TLS certificates this process serves (none where no listener terminates TLS, e.g. a cluster primary). */
  tlsCertificates(): readonly CertificateInUse[];
  /** Writes `stateFile` after a runtime change. */
  saveRuntimeState(): void;
}

/** One server's entry in /status (also the answer to a PUT). */
export function serverStatus(lb: AdminTarget, up: Upstream, peer: Peer, now: number): Record<string, unknown> {
  const max = peer.currentMaxWeight(now);
  const slowStartRemaining = peer.state.slowStartFrom === 0 ? 0 : Math.max(0, peer.state.slowStartFrom + peer.slowStartMs - now);
  return {
    address: peer.address,
    backup: peer.backup,
    state: peer.status(now),
    adminState: peer.state.adminState,
    healthy: peer.state.healthy,
    weight: peer.state.weight,
    configWeight: peer.configWeight,
    effectiveWeight: round(Math.min(peer.state.effectiveWeight, max)),
    slowStart: peer.slowStartMs === 0 ? null : { ms: peer.slowStartMs, remainingMs: Math.min(slowStartRemaining, peer.slowStartMs) },
    active: peer.active,
    requests: peer.state.requests,
    failures: peer.state.failedRequests,
    fails: peer.state.passiveFails,
    lastProbe: peer.state.lastProbe === null ? null
      : { ok: peer.state.lastProbe.ok, time: iso(peer.state.lastProbe.at), detail: peer.state.lastProbe.detail },
    probes: up.config.healthCheck === null ? null : { consecutiveFails: peer.state.probeFailsInRow, consecutivePasses: peer.state.probePassesInRow },
    sessions: lb.sessionsBound === null ? null : lb.sessionsBound(up.name, peer.address),
  };
}

/** Sticky counters of an upstream for /status (the status page shows the hit ratio); null when it has no `sticky`. */
function stickyStatus(lb: AdminTarget, up: Upstream): Record<string, unknown> | null {
  const sticky = up.config.sticky;
  if (sticky === null) return null;
  const s = lb.sessions.stats(up.name);
  const l = s.lookups;
  return {
    mode: sticky.mode,
    lookups: l.local_hit + l.store_hit + l.miss + l.invalid_id + l.store_error,
    hits: l.local_hit + l.store_hit,
    learned: s.learned,
    rebinds: Object.values(s.rebinds).reduce((a, b) => a + b, 0),
  };
}

const DAY_MS = 24 * 3600 * 1000;

/** `ok`, `expiring` (within 14 days: `check`'s warning and the example alert), `expired`. */
export type CertificateState = 'ok' | 'expiring' | 'expired';

/** One certificate in use, as /status lists it: public facts only (no key, no key file). */
export interface CertificateStatus {
  /** The virtual server's first name ("_" when none), as the metrics' `server` label. */
  server: string;
  /** The `ssl` listen address (`host:port`): a server on two addresses has a row for each. */
  address: string;
  /** The certificate file, as the config names it. */
  file: string;
  /** The leaf's subject CN (null when it has none) and its DNS subjectAltNames: the names it covers. */
  commonName: string | null;
  names: string[];
  keyType: string;
  notBefore: string;
  notAfter: string;
  /** Whole days until notAfter, as `check` counts them; once expired, minus the whole days since. */
  daysLeft: number;
  state: CertificateState;
}

/** A certificate's /status entry at `now`; the same thresholds as `check` (tls/certificates.ts). */
export function certificateStatus(c: CertificateInUse, now: number): CertificateStatus {
  const left = c.notAfter - now;
  const cn = c.subject.split('\n').find((l) => l.startsWith('CN='));
  return {
    server: c.server,
    address: c.address,
    file: c.certificateFile,
    commonName: cn === undefined ? null : cn.slice(3),
    names: [...c.sanNames],
    keyType: c.keyType,
    notBefore: new Date(c.notBefore).toISOString(),
    notAfter: new Date(c.notAfter).toISOString(),
    daysLeft: Math.trunc(left / DAY_MS) || 0,
    state: left <= 0 ? 'expired' : left <= EXPIRY_WARNING_MS ? 'expiring' : 'ok',
  };
}

/** The whole /status document. */
export function statusDocument(lb: AdminTarget, now = Date.now()): Record<string, unknown> {
  const upstreams: Record<string, unknown> = {};
  for (const up of lb.upstreams.values()) {
    const hc = up.config.healthCheck;
    upstreams[up.name] = {
      implicit: up.config.implicit,
      balance: up.config.balance.kind,
      healthCheck: hc === null ? null : {
        type: hc.type, path: hc.type === 'http' ? hc.path : undefined, intervalMs: hc.intervalMs, timeoutMs: hc.timeoutMs,
        fails: hc.fails, passes: hc.passes, status: hc.type === 'http' ? hc.statusText : undefined, mandatory: hc.mandatory,
      },
      servers: [...up.all()].map((peer) => serverStatus(lb, up, peer, now)),
      sticky: stickyStatus(lb, up),
    };
  }
  return {
    pid: process.pid,
    startedAt: iso(lb.startedAt),
    config: lb.config.file,
    reloads: {
      success: lb.reloads.success,
      failure: lb.reloads.failure,
      lastSuccess: iso(lb.lastReloadSuccess),
      lastFailure: iso(lb.lastReloadFailure),
    },
    upstreams,
    // Virtual servers (first server name, "_" for none) and their admin maintenance switch.
    servers: Object.fromEntries(virtualServerNames(lb).map((name) => [name, { maintenance: lb.maintenance.has(name) }])),
    // TCP proxies (`streams`); open sessions are in sessionlb_stream_active_sessions.
    streams: lb.config.streams.map((st) => ({
      listen: st.listen.map((l) => l.key),
      upstream: st.upstream,
      ...(st.route === null ? {} : { route: { by: st.route.by, map: Object.fromEntries(st.route.map), default: st.route.default } }),
      proxyConnectTimeoutMs: st.connectTimeoutMs,
      proxyTimeoutMs: st.timeoutMs,
    })),
    // TLS certificates in use (empty without ssl servers); a cluster primary takes them from its workers.
    certificates: lb.tlsCertificates().map((c) => certificateStatus(c, now)),
  };
}

/** Collects a small body; answers 413 (and returns null) when it is too large. */
function readBody(req: http.IncomingMessage, res: http.ServerResponse, done: (body: string) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  req.on('data', (chunk: Buffer) => {
    if (over) return;
    size += chunk.length;
    if (size > MAX_ADMIN_BODY) {
      over = true;
      res.shouldKeepAlive = false;
      sendJson(res, 413, { error: `request body larger than ${MAX_ADMIN_BODY} bytes` });
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (!over) done(Buffer.concat(chunks).toString('utf8'));
  });
  req.on('error', () => res.destroy());
}

type Change = { state?: AdminState; weight?: number };

/** Validates a PUT body; returns the change or an error message. */
export function parseChange(text: string): Change | string {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return 'body must be JSON such as {"state": "drain"} or {"weight": 3}';
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return 'body must be a JSON object such as {"state": "drain"}';
  const out: Change = {};
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    if (key === 'state') {
      if (!ADMIN_STATES.includes(value as AdminState)) return '"state" must be "drain", "maint" or "ready"';
      out.state = value as AdminState;
    } else if (key === 'weight') {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 1_000_000) {
        return '"weight" must be an integer >= 1';
      }
      out.weight = value;
    } else {
      return `unknown key "${key}" (expected "state" and/or "weight")`;
    }
  }
  if (out.state === undefined && out.weight === undefined) return 'body must set "state" and/or "weight"';
  return out;
}

/** Finds a server by its address as written, or the same address normalised ("::1:80" is not, "[::1]:80" is). */
function findServer(up: Upstream, address: string): Peer | undefined {
  const direct = up.find(address);
  if (direct !== undefined) return direct;
  const hp = parseHostPort(address, 80);
  return typeof hp === 'string' ? undefined : up.find(formatHostPort(hp.host, hp.port));
}

/** The names the maintenance switch knows: each virtual server's first server name, "_" for none. */
function virtualServerNames(lb: AdminTarget): string[] {
  return [...new Set(lb.config.servers.map((vs) => vs.serverNames[0] ?? '_'))];
}

/** Validates a maintenance PUT body: true/false, or an error message. */
export function parseMaintenance(text: string): boolean | string {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return 'body must be JSON such as {"on": true}';
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return 'body must be a JSON object such as {"on": true}';
  const keys = Object.keys(raw);
  const on = (raw as { on?: unknown }).on;
  if (keys.length !== 1 || typeof on !== 'boolean') return 'body must be {"on": true} or {"on": false}';
  return on;
}

export function registerAdminApi(admin: AdminServer, lb: AdminTarget): void {
  admin.route('PUT /servers/{name}/maintenance', (req, res, params) => {
    const name = params.name!;
    if (!virtualServerNames(lb).includes(name)) {
      req.resume();
      sendJson(res, 404, { error: `no virtual server "${name}" (its first serverName, "_" for a server without one)` });
      return;
    }
    readBody(req, res, (text) => {
      const on = parseMaintenance(text);
      if (typeof on === 'string') {
        sendJson(res, 400, { error: on });
        return;
      }
      const before = lb.maintenance.has(name);
      if (on) lb.maintenance.add(name);
      else lb.maintenance.delete(name);
      lb.log.info({ server: name, client: clientAddress(req.socket.remoteAddress).address, maintenance: on, previousMaintenance: before },
        `admin: virtual server ${name} maintenance ${on ? 'on' : 'off'}`);
      lb.saveRuntimeState();
      sendJson(res, 200, { server: name, maintenance: on });
    });
  });

  admin.route('GET /status', (_req, res) => {
    sendJson(res, 200, statusDocument(lb));
  });

  admin.route('PUT /upstreams/{name}/servers/{address}', (req, res, params) => {
    const up = lb.upstreams.get(params.name!);
    if (up === undefined) {
      req.resume();
      sendJson(res, 404, { error: `no upstream "${params.name}"` });
      return;
    }
    const address = params.address!;
    if (findServer(up, address) === undefined) {
      req.resume();
      sendJson(res, 404, { error: `no server "${address}" in upstream "${up.name}"` });
      return;
    }
    readBody(req, res, (text) => {
      const change = parseChange(text);
      if (typeof change === 'string') {
        sendJson(res, 400, { error: change });
        return;
      }
      // Look up again: a reload may have swapped the upstream while the body arrived.
      const current = lb.upstreams.get(up.name);
      const peer = current === undefined ? undefined : findServer(current, address);
      if (current === undefined || peer === undefined) {
        sendJson(res, 404, { error: `no server "${address}" in upstream "${up.name}"` });
        return;
      }
      const now = Date.now();
      const before = { state: peer.state.adminState, weight: peer.state.weight };
      peer.setRuntime(change.state, change.weight, now);
      lb.log.info({
        upstream: current.name, server: peer.address, client: clientAddress(req.socket.remoteAddress).address,
        state: peer.state.adminState, weight: peer.state.weight, previousState: before.state, previousWeight: before.weight,
      }, `admin: server ${peer.address} of upstream ${current.name} is now ${peer.state.adminState}, weight ${peer.state.weight}`);
      lb.saveRuntimeState();
      sendJson(res, 200, serverStatus(lb, current, peer, now));
    });
  });
}
