/**
 * The HTTP routing of a config: for each listen address, the virtual servers on it and, for
 * each of their locations, where a request goes (upstream, metrics, session affinity).
 */
import type { Config } from '../config/model.js';
import type { Upstream } from '../balancer/upstream.js';
import type { Observability } from '../observability/observability.js';
import type { Affinity } from '../sessions/affinity.js';
import type { Route } from '../proxy/http/forward.js';
import type { HttpRoute } from '../proxy/http/listener.js';
import type { TlsSiteSource } from '../tls/acceptor.js';
import { cidrBlockList } from '../net/client-address.js';
import { ListenerRouter, buildVirtualServer } from '../proxy/http/router.js';
import { tlsPoolKey } from './peer-pools.js';
import { RouteLimits, type LimitCounts } from '../proxy/http/limits.js';
import type { LimitDecider } from '../limits/decider.js';

/** Listen key -> address and router, for the upstreams `upstreams` built from `config`. */
export function httpRoutes(
  config: Config,
  upstreams: ReadonlyMap<string, Upstream>,
  observability: Pick<Observability, 'route'>,
  affinityOf: (upstream: Upstream) => Affinity | null,
  /** The TLS set in use, for the `ssl` addresses. */
  tls: TlsSiteSource,
  /** Who decides limit_req / limit_conn, and where outcomes are counted. */
  limits: { decider: LimitDecider; counts: LimitCounts },
): Map<string, HttpRoute> {
  const out = new Map<string, HttpRoute>();
  /** proxy_protocol addresses -> the union of proxyProtocolFrom of the servers on them (the header comes before Host). */
  const proxyFrom = new Map<string, Set<string>>();
  for (const vsConfig of config.servers) {
    const serverName = vsConfig.serverNames[0] ?? '_';
    const vs = buildVirtualServer<Route>(vsConfig, (location) => ({
      location,
      upstream: upstreams.get(location.upstream)!,
      sendTimeoutMs: config.sendTimeoutMs,
      underscoresInHeaders: config.underscoresInHeaders,
      metrics: observability.route(serverName, upstreams.get(location.upstream)!),
      affinity: affinityOf(upstreams.get(location.upstream)!),
      tlsPoolKey: location.upstreamTls === null ? null : tlsPoolKey(location.upstreamTls),
      maxTries: upstreams.get(location.upstream)!.triesFor(location.nextUpstream.tries),
      limits: location.limits === null ? null : new RouteLimits(location.limits, config.limitReqZones, limits.decider, limits.counts),
    }));
    for (const l of vsConfig.listen) {
      let entry = out.get(l.key);
      if (entry === undefined) {
        entry = { host: l.host, port: l.port, router: new ListenerRouter<Route>(), tls: null, proxyFrom: null };
        out.set(l.key, entry);
      }
      entry.router.add(vsConfig, vs, l.defaultServer || vsConfig.isDefault);
      if (l.ssl) entry.tls = tls;
      if (l.proxyProtocol) {
        let from = proxyFrom.get(l.key);
        if (from === undefined) proxyFrom.set(l.key, from = new Set());
        for (const cidr of vsConfig.proxyProtocolFrom) from.add(cidr);
      }
    }
  }
  for (const [key, from] of proxyFrom) out.get(key)!.proxyFrom = cidrBlockList([...from]);
  return out;
}
