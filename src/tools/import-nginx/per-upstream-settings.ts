/**
 * proxy_next_upstream* and proxy_*_timeout are per location in nginx (inherited http -> server ->
 * location): the first value written for an upstream's locations goes on the upstream, and each
 * location whose value differs from it gets its own (`timeouts`, `nextUpstream` in the location),
 * so every location keeps nginx's meaning. health_check is per upstream in both (nginx Plus checks
 * the group): moved onto the upstream, with a warning when locations disagree.
 */
import type { NEXT_UPSTREAM_CONDITIONS } from '../../config/schema.js';
import { parseDuration } from '../../nginx-language/units.js';
import type { Conversion, Location, ProxyScope, Sourced, Upstream, Usage } from './conversion.js';

const NGINX_DEFAULT_NEXT_UPSTREAM = ['error', 'timeout'];
const DEFAULT_TIMEOUT = '60s';

/** Moves the settings of the locations (`c.usages`) onto the upstreams they proxy to. */
export function applyUsages(c: Conversion): void {
  const byTarget = new Map<string, Usage[]>();
  for (const u of c.usages) {
    const list = byTarget.get(u.target);
    if (list) list.push(u);
    else byTarget.set(u.target, [u]);
  }
  for (const [target, usages] of byTarget) {
    const settings: Partial<Pick<Upstream, 'nextUpstream' | 'timeouts' | 'healthCheck'>> = {};
    const nextUpstream: NonNullable<Upstream['nextUpstream']> = {};
    const timeouts: NonNullable<Upstream['timeouts']> = {};
    /** The upstream gets the first value written; a location whose own (or nginx's default) differs keeps it in the location. */
    const pick = <T>(
      get: (s: ProxyScope) => Sourced<T> | undefined,
      defaultValue: T,
      canon: (v: T) => string,
      set: (v: T, on: Location | null) => void,
    ): void => {
      const seen = usages.map((u) => ({ u, s: get(u.scope) }));
      const chosen = seen.find(({ s }) => s !== undefined);
      if (chosen === undefined) return;
      set(chosen.s!.value, null);
      const upstreamValue = canon(chosen.s!.value);
      for (const { u, s } of seen) {
        const value = s === undefined ? defaultValue : s.value;
        if (canon(value) !== upstreamValue) set(value, u.location);
      }
    };
    const ms = (v: string): string => String(parseDuration(v));
    const retry = (on: Location | null): NonNullable<Upstream['nextUpstream']> => (on === null ? nextUpstream : (on.nextUpstream ??= {}));
    const times = (on: Location | null): NonNullable<Upstream['timeouts']> => (on === null ? timeouts : (on.timeouts ??= {}));
    pick((s) => s.nextUpstream, NGINX_DEFAULT_NEXT_UPSTREAM, (v) => [...v].sort().join(' '), (v, on) => { retry(on).on = v as Array<typeof NEXT_UPSTREAM_CONDITIONS[number]>; });
    pick((s) => s.tries, 0, String, (v, on) => { retry(on).tries = v; });
    pick((s) => s.nextTimeout, '0s', ms, (v, on) => { retry(on).timeout = v; });
    pick((s) => s.connect, DEFAULT_TIMEOUT, ms, (v, on) => { times(on).connect = v; });
    pick((s) => s.send, DEFAULT_TIMEOUT, ms, (v, on) => { times(on).send = v; });
    pick((s) => s.read, DEFAULT_TIMEOUT, ms, (v, on) => { times(on).read = v; });
    // health_check: a location without one does not mean "no checks" (nginx checks the group).
    const checks = usages.filter((u) => u.healthCheck !== null);
    if (checks.length > 0) {
      const first = checks[0]!.healthCheck!;
      settings.healthCheck = first.value;
      const different = checks.filter((u) => JSON.stringify(u.healthCheck!.value) !== JSON.stringify(first.value));
      for (const u of different) {
        c.warn(u.healthCheck!.line, `health_check differs from the one on ${c.at(first.line)} for upstream "${target}"; sessionlb has one per upstream and uses that one (${u.where})`);
      }
    }
    if (Object.keys(nextUpstream).length > 0) settings.nextUpstream = nextUpstream;
    if (Object.keys(timeouts).length > 0) settings.timeouts = timeouts;
    if (Object.keys(settings).length === 0) continue;
    let up = c.upstreams.get(target);
    if (up === undefined) {
      // proxy_pass http://host:port with per-location settings: give the address an upstream of its own.
      let name = target.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^_+|_+$/g, '');
      while (c.upstreams.has(name)) name += '_';
      up = { servers: [{ address: target }] };
      c.upstreams.set(name, up);
      for (const u of usages) {
        u.location.proxyPass = `${u.scheme}://${name}${u.uri}`;
        // The name nginx verifies and sends ($proxy_host) stays the address's host, not the new upstream's name.
        if (u.tlsHost !== null) u.location.proxySslName = u.tlsHost;
      }
      c.notes.push({ line: usages[0]!.line, message: `proxy_pass ${usages[0]!.scheme}://${target} has timeouts/retry settings, which sessionlb keeps per upstream: it becomes upstream "${name}"` });
    }
    Object.assign(up, settings);
  }
}
