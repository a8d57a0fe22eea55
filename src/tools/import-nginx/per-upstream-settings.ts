/**
 * proxy_next_upstream*, proxy_*_timeout and health_check are per location in nginx but per upstream
 * in sessionlb: they are moved onto the upstream the locations proxy to, with a warning when
 * locations sharing an upstream disagree.
 */
import type { NEXT_UPSTREAM_CONDITIONS } from '../../config/schema.js';
import { parseDuration } from '../../nginx-language/units.js';
import type { Conversion, ProxyScope, Sourced, Upstream, Usage } from './conversion.js';

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
    const pick = <T>(
      directive: string,
      get: (s: ProxyScope) => Sourced<T> | undefined,
      defaultValue: T,
      canon: (v: T) => string,
      show: (v: T) => string,
      set: (v: T) => void,
    ): void => {
      const seen = usages.map((u) => ({ u, s: get(u.scope) }));
      const distinct = new Set(seen.map(({ s }) => canon(s === undefined ? defaultValue : s.value)));
      const chosen = seen.find(({ s }) => s !== undefined);
      if (chosen === undefined) return;
      set(chosen.s!.value);
      if (distinct.size > 1) {
        const detail = seen.map(({ u, s }) => `${u.where}: ${s === undefined ? `${show(defaultValue)} (default)` : show(s.value)}`).join('; ');
        c.warn(chosen.s!.line, `${directive} differs between locations that proxy to "${target}", and sessionlb has one value per upstream; using ${show(chosen.s!.value)} from ${c.at(chosen.s!.line)} for all of them (${detail})`);
      }
    };
    const ms = (v: string): string => String(parseDuration(v));
    pick('proxy_next_upstream', (s) => s.nextUpstream, NGINX_DEFAULT_NEXT_UPSTREAM, (v) => [...v].sort().join(' '), (v) => v.join(' '), (v) => { nextUpstream.on = v as Array<typeof NEXT_UPSTREAM_CONDITIONS[number]>; });
    pick('proxy_next_upstream_tries', (s) => s.tries, 0, String, String, (v) => { nextUpstream.tries = v; });
    pick('proxy_next_upstream_timeout', (s) => s.nextTimeout, '0s', ms, String, (v) => { nextUpstream.timeout = v; });
    pick('proxy_connect_timeout', (s) => s.connect, DEFAULT_TIMEOUT, ms, String, (v) => { timeouts.connect = v; });
    pick('proxy_send_timeout', (s) => s.send, DEFAULT_TIMEOUT, ms, String, (v) => { timeouts.send = v; });
    pick('proxy_read_timeout', (s) => s.read, DEFAULT_TIMEOUT, ms, String, (v) => { timeouts.read = v; });
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
