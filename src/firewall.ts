/**
 * `sessionlb firewall`: the host firewall rules for the memcached hosts, generated from the
 * config (the reference setup's memcached-firewall.sh). memcached's text protocol has no
 * authentication, so only localhost, the sessionlb balancers and the web servers (every
 * upstream server) may reach it; anyone else could read, alter or delete every session.
 *
 * Pure text generation: nothing here runs iptables or touches the network.
 */
import { isIP } from 'node:net';
import type { Config } from './config/load.js';

export const DEFAULT_MEMCACHED_PORT = 11211;

/** One allowed source: an address (or CIDR) and why it is allowed, for the comments. */
export interface AllowedSource {
  /** Canonical IPv4/IPv6 address, or CIDR `addr/len`. */
  address: string;
  family: 4 | 6;
  why: string;
}

export interface FirewallPlan {
  /** memcached ports, sorted and unique. */
  ports: number[];
  /** The memcached servers the rules are for (`sessionStore.servers`), for the header; may be empty. */
  memcachedServers: string[];
  /** sessionlb hosts (from `--balancer` and the config's specific listen addresses). */
  balancers: AllowedSource[];
  /** Web servers: every upstream server's address. */
  webServers: AllowedSource[];
  /** Where the config came from, for the header. */
  source: string;
  /** Things the user must act on (printed as comments, and by the CLI on stderr). */
  warnings: string[];
  /** Things worth knowing (printed as comments). */
  notes: string[];
}

const MAPPED_V4 = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i;

/**
 * Canonical form of an address or CIDR (`2001:DB8::0:1` -> `2001:db8::1`, `::ffff:10.0.0.1` ->
 * `10.0.0.1`), or null when it is neither. The result is safe to put on a shell command line.
 */
export function canonicalSource(text: string): { address: string; family: 4 | 6 } | null {
  const slash = text.indexOf('/');
  let addr = slash === -1 ? text : text.slice(0, slash);
  const prefixText = slash === -1 ? null : text.slice(slash + 1);
  if (addr.startsWith('[') && addr.endsWith(']')) addr = addr.slice(1, -1);
  const mapped = MAPPED_V4.exec(addr);
  if (mapped && prefixText === null) addr = mapped[1]!;
  const ipFamily = isIP(addr);
  if (ipFamily === 0) return null;
  const family: 4 | 6 = ipFamily === 4 ? 4 : 6;
  let canonical: string;
  if (family === 4) {
    const octets = addr.split('.').map(Number);
    canonical = octets.join('.');
  } else {
    // The WHATWG URL parser prints IPv6 in its canonical (RFC 5952) form.
    canonical = new URL(`http://[${addr}]/`).hostname.slice(1, -1);
  }
  if (prefixText === null) return { address: canonical, family };
  if (!/^\d{1,3}$/.test(prefixText)) return null;
  const prefix = Number(prefixText);
  if (prefix > (family === 4 ? 32 : 128)) return null;
  // A full-length prefix is the address itself.
  if (prefix === (family === 4 ? 32 : 128)) return { address: canonical, family };
  return { address: `${canonical}/${prefix}`, family };
}

/** Bytes of an address for sorting (IPv4 4 bytes, IPv6 16), then the prefix length. */
function sortKey(source: string): number[] {
  const slash = source.indexOf('/');
  const addr = slash === -1 ? source : source.slice(0, slash);
  const prefix = slash === -1 ? 129 : Number(source.slice(slash + 1));
  if (isIP(addr) === 4) return [...addr.split('.').map(Number), prefix];
  const [head, tail] = addr.includes('::') ? addr.split('::') as [string, string] : [addr, null];
  // Canonical IPv6 text (from canonicalSource) is hex groups only, never a dotted quad.
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const h = parse(head);
  const t = tail === null ? [] : parse(tail);
  const groups = [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  return [...groups, prefix];
}

function compareSources(a: AllowedSource, b: AllowedSource): number {
  const ka = sortKey(a.address);
  const kb = sortKey(b.address);
  for (let i = 0; i < Math.min(ka.length, kb.length); i++) if (ka[i] !== kb[i]) return ka[i]! - kb[i]!;
  return ka.length - kb.length;
}

function isLoopbackOrAny(address: string): boolean {
  return address === '0.0.0.0' || address === '::' || address === '::1' || address.startsWith('127.');
}

/**
 * What the rules allow, from a loaded config: the memcached ports (`sessionStore.servers` when
 * the store is memcached, else `port`), every upstream server (the web servers), and the
 * balancers: `--balancer` values plus the config's own listen addresses that name one host.
 * Throws an Error for a `--balancer` that is not an IP address or CIDR.
 */
export function firewallPlan(config: Config, options: { port?: number; balancers?: readonly string[]; source?: string } = {}): FirewallPlan {
  const warnings: string[] = [];
  const memcachedServers = config.sessionStore.type === 'memcached' ? [...config.sessionStore.servers] : [];
  let ports: number[];
  if (memcachedServers.length > 0) {
    ports = [...new Set(memcachedServers.map((s) => Number(s.slice(s.lastIndexOf(':') + 1))))].sort((a, b) => a - b);
    if (options.port !== undefined && !ports.includes(options.port)) {
      warnings.push(`--port ${options.port} is ignored: the ports come from sessionStore.servers (${memcachedServers.join(', ')})`);
    }
  } else {
    ports = [options.port ?? DEFAULT_MEMCACHED_PORT];
  }

  const balancers: AllowedSource[] = [];
  for (const text of options.balancers ?? []) {
    const c = canonicalSource(text);
    if (c === null) throw new Error(`--balancer ${JSON.stringify(text)} is not an IP address or CIDR (firewall rules need addresses, not hostnames)`);
    balancers.push({ ...c, why: '--balancer' });
  }
  const listens = [
    ...config.servers.flatMap((s) => s.listen.map((l) => ({ host: l.host, why: `listen ${l.key}` }))),
    ...(config.admin ? [{ host: config.admin.listen.host, why: `admin.listen ${config.admin.listen.key}` }] : []),
  ];
  for (const l of listens) {
    const c = canonicalSource(l.host);
    if (c !== null && !isLoopbackOrAny(c.address)) balancers.push({ ...c, why: l.why });
  }
  if (balancers.length === 0 && memcachedServers.length > 0) {
    warnings.push('this balancer\'s own address is not in the config (it listens on a wildcard or loopback address): '
      + 'add --balancer ADDR for every sessionlb host, as memcached sees it, or memcached will reject them');
  }

  const webServers: AllowedSource[] = [];
  const resolved: string[] = [];
  for (const up of config.upstreams.values()) {
    for (const s of up.servers) {
      const c = canonicalSource(s.host);
      if (c === null) continue; // loadConfig resolved every hostname to an address
      const written = s.address.split('#')[0]!;
      const hostWritten = written.startsWith('[') ? written.slice(1, written.indexOf(']')) : written.slice(0, written.lastIndexOf(':'));
      if (isIP(hostWritten) === 0) resolved.push(`${hostWritten} -> ${c.address}`);
      webServers.push({ ...c, why: up.implicit ? `proxyPass ${written}` : `upstream ${up.name}` });
    }
  }
  const notes = [...new Set(resolved)].sort().map((r) => `upstream hostname resolved when generated: ${r} (regenerate when DNS changes)`);
  return { ports, memcachedServers, balancers, webServers, source: options.source ?? config.file, warnings, notes };
}

/** Sorted and deduplicated, skipping what an earlier group already allows. */
function uniqueSources(list: AllowedSource[], family: 4 | 6, already: Set<string>): AllowedSource[] {
  const out: AllowedSource[] = [];
  for (const s of [...list].filter((x) => x.family === family).sort(compareSources)) {
    if (already.has(s.address)) continue;
    already.add(s.address);
    out.push(s);
  }
  return out;
}

/**
 * The shell script: a MEMC chain per address family that RETURNs (lets through) localhost, the
 * balancers and the web servers, and REJECTs everyone else; INPUT jumps to it for each memcached
 * port. The IPv4 lines are exactly the reference memcached-firewall.sh's for the same addresses.
 * ip6tables lines are always written, so that a memcached reachable over IPv6 is not left open.
 */
export function firewallScript(plan: FirewallPlan): string {
  const lines: string[] = [];
  const portText = plan.ports.join(', ');
  lines.push('#!/bin/sh');
  // A file name is the only free text here: keep it on its comment line whatever it contains.
  lines.push(`# memcached firewall generated by "sessionlb firewall" from ${plan.source.replace(/[\x00-\x1f\x7f]/g, '?')}.`);
  lines.push(`# Run it as root on each memcached host${plan.memcachedServers.length > 0 ? ` (sessionStore.servers: ${plan.memcachedServers.join(', ')})` : ''}.`);
  lines.push(`# Only localhost, the sessionlb balancers and the web servers may reach memcached on port${plan.ports.length > 1 ? 's' : ''} ${portText}:`);
  lines.push('# memcached has no authentication, so anyone else could read, alter or delete every session.');
  lines.push('# The rules are appended (-A): run it once on a clean chain (iptables -F MEMC to start over).');
  for (const w of plan.warnings) lines.push(`# WARNING: ${w}`);
  for (const n of plan.notes) lines.push(`# Note: ${n}`);

  for (const family of [4, 6] as const) {
    const cmd = family === 4 ? 'iptables' : 'ip6tables';
    const loopback = family === 4 ? '127.0.0.1' : '::1';
    const already = new Set<string>([loopback]);
    const balancers = uniqueSources(plan.balancers, family, already);
    const web = uniqueSources(plan.webServers, family, already);
    lines.push('');
    if (family === 6) lines.push('# IPv6: the same policy, so that memcached is not open over IPv6 either.');
    lines.push(`${cmd} -N MEMC`);
    for (const port of plan.ports) lines.push(`${cmd} -A INPUT -p tcp -m tcp --dport ${port} -j MEMC`);
    lines.push('');
    lines.push(`${cmd} -A MEMC -s ${loopback} -j RETURN`);
    if (balancers.length > 0) {
      lines.push('# sessionlb balancers');
      for (const b of balancers) lines.push(`${cmd} -A MEMC -s ${b.address} -j RETURN`);
    }
    if (web.length > 0) {
      // Every upstream that has a server of this family, also those whose addresses were already listed.
      const whys = [...new Set(plan.webServers.filter((w) => w.family === family).map((w) => w.why))].sort();
      lines.push(`# web servers (${whys.join(', ')})`);
      for (const w of web) lines.push(`${cmd} -A MEMC -s ${w.address} -j RETURN`);
    }
    lines.push(`${cmd} -A MEMC -j REJECT --reject-with ${family === 4 ? 'icmp-host-prohibited' : 'icmp6-adm-prohibited'}`);
  }
  return `${lines.join('\n')}\n`;
}
