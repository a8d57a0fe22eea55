/**
 * The connection pools to upstream servers, one per server and connection settings, shared
 * by every config that uses them: a reload keeps the pools (and their idle keep-alive
 * connections) of servers that remain, and closes the idle connections of those it drops.
 *
 * TLS (an "https://" proxyPass) is a location's choice while pools are per server: a server
 * gets its plain pool (`Peer.pool`) and one TLS pool per distinct TLS setting of the locations
 * that proxy to its upstream (`Peer.tlsPools`, by `tlsPoolKey`), so two locations may speak
 * http and https, or https with different proxySsl* settings, to the same servers (as nginx).
 * The pool key holds the TLS settings and the trusted CA file's content: a reload that changes
 * either gets new connections.
 */
import { createHash } from 'node:crypto';
import type { Config, UpstreamConfig, UpstreamTlsConfig } from '../config/model.js';
import type { Upstream } from '../balancer/upstream.js';
import type { PeerPool, PoolOptions } from '../proxy/upstream/transport.js';
import { upstreamTlsOptions } from '../tls/upstream-trust.js';
import { RawPeerPool } from '../proxy/upstream/raw-pool.js';

/** The key of a location's TLS settings among the TLS pools of a server (`Route.tlsPoolKey`, `Peer.tlsPools`). */
export function tlsPoolKey(tls: UpstreamTlsConfig): string {
  return JSON.stringify([tls.verify, tls.verify ? tls.trustedCertificate : null, tls.serverName, tls.name, tls.protocols]);
}

/** Upstream name -> the distinct TLS settings of the "https://" locations that proxy to it. */
export function upstreamTlsSettings(config: Config): Map<string, Map<string, UpstreamTlsConfig>> {
  const out = new Map<string, Map<string, UpstreamTlsConfig>>();
  for (const vs of config.servers) {
    for (const loc of vs.locations) {
      if (loc.upstreamTls === null) continue;
      let settings = out.get(loc.upstream);
      if (settings === undefined) out.set(loc.upstream, settings = new Map());
      settings.set(tlsPoolKey(loc.upstreamTls), loc.upstreamTls);
    }
  }
  return out;
}

export class PeerPools {
  private readonly pools = new Map<string, PeerPool>();

  /**
   * The pool of server `host:port` of upstream `up`, made on first use: plain (`tls` null) or
   * with `tls`, the settings of an "https://" location and the trusted certificate files as read.
   */
  poolFor(
    up: UpstreamConfig, host: string, port: number, tls: { settings: UpstreamTlsConfig; trusted: ReadonlyMap<string, Buffer> } | null = null,
    sendProxy: 'v1' | 'v2' | null = null,
  ): PeerPool {
    const options: PoolOptions = {
      sendProxy,
      keepalive: up.keepalive,
      keepaliveTimeoutMs: up.keepaliveTimeoutMs,
      connectTimeoutMs: up.timeouts.connectMs,
      sendTimeoutMs: up.timeouts.sendMs,
      readTimeoutMs: up.timeouts.readMs,
    };
    const transport = tls === null ? null : upstreamTlsOptions(tls.settings, tls.trusted);
    let key = `${up.name}|${host}|${port}|${JSON.stringify(options)}`;
    if (tls !== null) {
      const ca = transport!.ca === null ? '' : createHash('sha256').update(transport!.ca).digest('hex');
      key += `|tls|${tlsPoolKey(tls.settings)}|${ca}`;
    }
    let pool = this.pools.get(key);
    if (pool === undefined) {
      pool = new RawPeerPool(host, port, options, transport);
      this.pools.set(key, pool);
    }
    return pool;
  }

  /** After a switch to `upstreams`: pools none of their servers uses close their idle connections and are forgotten. */
  keepOnly(upstreams: ReadonlyMap<string, Upstream>): void {
    const used = new Set<PeerPool>();
    for (const up of upstreams.values()) {
      for (const p of up.all()) {
        used.add(p.pool);
        for (const pool of p.tlsPools?.values() ?? []) used.add(pool);
      }
    }
    for (const [key, pool] of this.pools) {
      if (used.has(pool)) continue;
      pool.closeIdle();
      this.pools.delete(key);
    }
  }

  /** Closes every idle connection (stop). */
  closeIdle(): void {
    for (const pool of this.pools.values()) pool.closeIdle();
  }
}
