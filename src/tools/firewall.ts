/**
 * `sessionlb firewall`: the host firewall rules for the memcached hosts, generated from the
 * config (the reference setup's memcached-firewall.sh). memcached's text protocol has no
 * authentication, so only localhost, the sessionlb balancers and the web servers (every
 * upstream server) may reach it; anyone else could read, alter or delete every session.
 *
 * Three output formats: an iptables-restore file per address family (the default), an nftables
 * file, or a shell script; each can be loaded again without error or duplicate rules.
 * Pure text generation: nothing here runs iptables or nft, or touches the network.
 */
import { isIP } from 'node:net';
import type { Config } from '../config/model.js';

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


/** The output formats of `sessionlb firewall`; the first is the default. */
export const FIREWALL_FORMATS = ['iptables-restore', 'nftables', 'script'] as const;
export type FirewallFormat = (typeof FIREWALL_FORMATS)[number];
export const DEFAULT_FIREWALL_FORMAT: FirewallFormat = 'iptables-restore';

export function isFirewallFormat(text: string): text is FirewallFormat {
  return (FIREWALL_FORMATS as readonly string[]).includes(text);
}

/** The iptables/ip6tables chain (the reference script's name, so its INPUT jumps keep working). */
export const MEMC_CHAIN = 'MEMC';
/** The nftables table (family inet: IPv4 and IPv6). */
export const NFT_TABLE = 'sessionlb_memcached';

/** The INPUT rule that sends one memcached port to MEMC (as in the reference script). */
export function inputJumpSpec(port: number): string {
  return `-p tcp -m tcp --dport ${port} -j ${MEMC_CHAIN}`;
}

/** The command that adds the INPUT jump for one port only when it is not there yet. */
export function inputJumpCommand(family: 4 | 6, port: number): string {
  const cmd = family === 4 ? 'iptables' : 'ip6tables';
  return `${cmd} -C INPUT ${inputJumpSpec(port)} 2>/dev/null || ${cmd} -I INPUT ${inputJumpSpec(port)}`;
}

/** The allowed sources of one family, in rule order, each once. */
interface FamilySources {
  loopback: string;
  balancers: AllowedSource[];
  web: AllowedSource[];
  /** Why the web servers of this family are allowed (their upstreams), for the comment. */
  webWhy: string[];
}

function familySources(plan: FirewallPlan, family: 4 | 6): FamilySources {
  const loopback = family === 4 ? '127.0.0.1' : '::1';
  const already = new Set<string>([loopback]);
  const balancers = uniqueSources(plan.balancers, family, already);
  const web = uniqueSources(plan.webServers, family, already);
  // Every upstream that has a server of this family, also those whose addresses were already listed.
  const webWhy = [...new Set(plan.webServers.filter((w) => w.family === family).map((w) => w.why))].sort();
  return { loopback, balancers, web, webWhy };
}

/** The comment lines every format starts with (after its own first line). */
function header(plan: FirewallPlan, what: string, apply: string[]): string[] {
  const s = plan.ports.length > 1 ? 's' : '';
  return [
    // A file name is the only free text here: keep it on its comment line whatever it contains.
    `# memcached firewall${what} generated by "sessionlb firewall" from ${plan.source.replace(/[\x00-\x1f\x7f]/g, '?')}.`,
    `# For each memcached host${plan.memcachedServers.length > 0 ? ` (sessionStore.servers: ${plan.memcachedServers.join(', ')})` : ''}.`,
    `# Only localhost, the sessionlb balancers and the web servers may reach memcached on port${s} ${plan.ports.join(', ')}:`,
    '# memcached has no authentication, so anyone else could read, alter or delete every session.',
    ...apply.map((l) => `# ${l}`),
    ...plan.warnings.map((w) => `# WARNING: ${w}`),
    ...plan.notes.map((n) => `# Note: ${n}`),
  ];
}

/** `-A MEMC` lines (without the command name) for one family: RETURN for allowed sources, then REJECT. */
function memcRules(sources: FamilySources, family: 4 | 6, cmd: string): string[] {
  const lines = [`${cmd}-A ${MEMC_CHAIN} -s ${sources.loopback} -j RETURN`];
  if (sources.balancers.length > 0) {
    lines.push('# sessionlb balancers');
    for (const b of sources.balancers) lines.push(`${cmd}-A ${MEMC_CHAIN} -s ${b.address} -j RETURN`);
  }
  if (sources.web.length > 0) {
    lines.push(`# web servers (${sources.webWhy.join(', ')})`);
    for (const w of sources.web) lines.push(`${cmd}-A ${MEMC_CHAIN} -s ${w.address} -j RETURN`);
  }
  lines.push(`${cmd}-A ${MEMC_CHAIN} -j REJECT --reject-with ${family === 4 ? 'icmp-host-prohibited' : 'icmp6-adm-prohibited'}`);
  return lines;
}

/**
 * `--format iptables-restore` (the default), one file per family: for `iptables-restore --noflush`
 * (4) or `ip6tables-restore --noflush` (6). Declaring `:MEMC` makes the restore create the chain,
 * or empty an existing one, before refilling it in the same commit: loading it again is safe and
 * atomic. The INPUT jumps are not in the file, since a restore file cannot add a rule only when
 * it is missing (every load would add another copy); the header gives the guarded command.
 */
export function firewallRestore(plan: FirewallPlan, family: 4 | 6): string {
  const restore = family === 4 ? 'iptables-restore' : 'ip6tables-restore';
  const other = family === 4 ? 'IPv6: the same policy for ip6tables-restore is "sessionlb firewall --family 6".'
    : 'IPv4: the same policy for iptables-restore is "sessionlb firewall --family 4".';
  const lines = header(plan, ` (IPv${family}, for ${restore})`, [
    'Load it with --noflush (without it, the restore would delete every other rule of the filter table).',
    `Each load empties and refills the ${MEMC_CHAIN} chain in one commit, so loading it again is safe:`,
    `  ${restore} --test --noflush FILE && ${restore} --noflush FILE`,
    `${MEMC_CHAIN} filters only what INPUT sends it; add the jump${plan.ports.length > 1 ? 's' : ''} once (-C: never twice):`,
    ...plan.ports.map((p) => `  ${inputJumpCommand(family, p)}`),
    other,
  ]);
  lines.push('*filter', `:${MEMC_CHAIN} - [0:0]`, ...memcRules(familySources(plan, family), family, ''), 'COMMIT');
  return `${lines.join('\n')}\n`;
}

/**
 * `--format nftables`: a `table inet` for both families, for `nft -f`. The file declares the
 * table, deletes it and defines it again, all in one transaction: the first load creates it, a
 * later one replaces it, and no other table is touched. Its input chain only rejects: what it
 * accepts still goes through every other table's chains.
 */
export function firewallNftables(plan: FirewallPlan): string {
  const lines = ['#!/usr/sbin/nft -f', ...header(plan, ' (nftables, IPv4 and IPv6)', [
    `Each load replaces the ${NFT_TABLE} table in one transaction (other tables are untouched),`,
    'so loading it again is safe:',
    '  nft -c -f FILE && nft -f FILE',
  ])];
  const v4 = familySources(plan, 4);
  const v6 = familySources(plan, 6);
  const rule = (s: AllowedSource | string): string => {
    const address = typeof s === 'string' ? s : s.address;
    return `\t\t${isIP(address.split('/')[0]!) === 4 ? 'ip' : 'ip6'} saddr ${address} accept`;
  };
  lines.push(`table inet ${NFT_TABLE} {}`, `delete table inet ${NFT_TABLE}`, `table inet ${NFT_TABLE} {`);
  lines.push('\tchain input {', '\t\ttype filter hook input priority filter; policy accept;');
  for (const port of plan.ports) lines.push(`\t\ttcp dport ${port} jump memcached`);
  lines.push('\t}', '', '\tchain memcached {', rule(v4.loopback), rule(v6.loopback));
  const balancers = [...v4.balancers, ...v6.balancers];
  if (balancers.length > 0) lines.push('\t\t# sessionlb balancers', ...balancers.map(rule));
  const web = [...v4.web, ...v6.web];
  if (web.length > 0) lines.push(`\t\t# web servers (${[...new Set([...v4.webWhy, ...v6.webWhy])].sort().join(', ')})`, ...web.map(rule));
  lines.push('\t\tmeta nfproto ipv4 reject with icmp type host-prohibited');
  lines.push('\t\tmeta nfproto ipv6 reject with icmpv6 type admin-prohibited');
  lines.push('\t}', '}');
  return `${lines.join('\n')}\n`;
}

/**
 * `--format script`: iptables and ip6tables commands, safe to run again: the MEMC chain is created
 * or emptied (`-N ... || -F`), refilled, and each INPUT jump is added only when `-C` does not find
 * it. The rules are the reference memcached-firewall.sh's. Not atomic, unlike the other formats.
 */
export function firewallScript(plan: FirewallPlan): string {
  const lines = ['#!/bin/sh', ...header(plan, '', [
    'Run it as root. Running it again is safe: it empties and refills the MEMC chains, and adds each',
    'INPUT jump only when it is missing. (It is not atomic: --format iptables-restore is.)',
  ]), 'set -e'];
  for (const family of [4, 6] as const) {
    const cmd = family === 4 ? 'iptables' : 'ip6tables';
    lines.push('');
    if (family === 6) lines.push('# IPv6: the same policy, so that memcached is not open over IPv6 either.');
    lines.push(`${cmd} -N ${MEMC_CHAIN} 2>/dev/null || ${cmd} -F ${MEMC_CHAIN}`);
    lines.push(...memcRules(familySources(plan, family), family, `${cmd} `));
    // The chain is complete before INPUT sends anything to it.
    for (const port of plan.ports) lines.push(inputJumpCommand(family, port));
  }
  return `${lines.join('\n')}\n`;
}

/** The output for a format; `family` only applies to iptables-restore (default 4). */
export function firewallOutput(plan: FirewallPlan, format: FirewallFormat, family: 4 | 6 = 4): string {
  switch (format) {
    case 'iptables-restore': return firewallRestore(plan, family);
    case 'nftables': return firewallNftables(plan);
    case 'script': return firewallScript(plan);
  }
}
