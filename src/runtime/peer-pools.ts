/**
 * The connection pools to upstream servers, one per server and connection settings, shared
 * by every config that uses them: a reload keeps the pools (and their idle keep-alive
 * connections) of servers that remain, and closes the idle connections of those it drops.
 */
import type { UpstreamConfig } from '../config/model.js';
import type { Upstream } from '../balancer/upstream.js';
import type { PeerPool } from '../proxy/upstream/transport.js';
import { RawPeerPool } from '../proxy/upstream/raw-pool.js';

export class PeerPools {
  private readonly pools = new Map<string, PeerPool>();

  /** The pool of server `host:port` of upstream `up`, made on first use. */
  poolFor(up: UpstreamConfig, host: string, port: number): PeerPool {
    const options = {
      keepalive: up.keepalive,
      keepaliveTimeoutMs: up.keepaliveTimeoutMs,
      connectTimeoutMs: up.timeouts.connectMs,
      sendTimeoutMs: up.timeouts.sendMs,
      readTimeoutMs: up.timeouts.readMs,
    };
    const key = `${up.name}|${host}|${port}|${JSON.stringify(options)}`;
    let pool = this.pools.get(key);
    if (pool === undefined) {
      pool = new RawPeerPool(host, port, options);
      this.pools.set(key, pool);
    }
    return pool;
  }

  /** After a switch to `upstreams`: pools none of their servers uses close their idle connections and are forgotten. */
  keepOnly(upstreams: ReadonlyMap<string, Upstream>): void {
    const used = new Set<PeerPool>();
    for (const up of upstreams.values()) for (const p of up.all()) used.add(p.pool);
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
