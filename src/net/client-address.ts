/**
 * The client's address: IPv4-mapped addresses unwrapped, CIDR lists, and the one accessor every
 * reader of a connection's client address uses (`socketClientAddress`), which gives the address
 * a PROXY protocol header carried when the listener took one (`setProxiedClient`), and the one
 * accessor of a request's client address (`requestClientAddress`: what `realIp` found, else the connection's).
 */
import { BlockList, isIP } from 'node:net';

/** A peer's address with IPv4-mapped IPv6 (`::ffff:1.2.3.4`) unwrapped, and its family for BlockList. */
export function clientAddress(remote: string | undefined): { address: string; family: 'ipv4' | 'ipv6' } {
  const addr = remote ?? '';
  if (addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4) return { address: addr.slice(7), family: 'ipv4' };
  return { address: addr, family: isIP(addr) === 6 ? 'ipv6' : 'ipv4' };
}

/** clientAddress(remote).address without the object or, for a plain IPv4 address, the isIP check (per request). */
export function clientAddressString(remote: string | undefined): string {
  if (remote === undefined) return '';
  if (remote.charCodeAt(0) === 58 /* : */ && remote.startsWith('::ffff:') && isIP(remote.slice(7)) === 4) return remote.slice(7);
  return remote;
}

/** Adds "addr/prefix" (or a bare address) to a BlockList; returns an error message or null. */
export function addCidrTo(list: BlockList, cidr: string): string | null {
  const [addr, prefixText, extra] = cidr.split('/');
  const family = isIP(addr ?? '');
  if (!addr || family === 0 || extra !== undefined) return `"${cidr}" is not an address or CIDR such as "10.0.0.0/8"`;
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!/^\d+$/.test(prefixText ?? String(max)) || prefix > max) return `"${cidr}" has an invalid prefix length (0-${max})`;
  list.addSubnet(addr, prefix, family === 4 ? 'ipv4' : 'ipv6');
  return null;
}

/** A BlockList of CIDRs already checked by the config (test addresses with addressIn, which unwraps IPv4-mapped ones). */
export function cidrBlockList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const c of cidrs) addCidrTo(list, c);
  return list;
}

/** Whether `remote` (a socket's remoteAddress, possibly IPv4-mapped) is in `list`. */
export function addressIn(list: BlockList, remote: string | undefined): boolean {
  const { address, family } = clientAddress(remote);
  return address !== '' && list.check(address, family);
}

/** Where a connection really comes from, as a PROXY protocol header said. */
export interface ProxiedClient {
  address: string;
  port: number;
  /** The address and port the client connected to (the header's destination). */
  localAddress: string;
  localPort: number;
}

const PROXIED = Symbol('sessionlb.proxiedClient');
interface Proxied { [PROXIED]?: ProxiedClient }

/** Records on `socket` the client a PROXY protocol header named (the listener, once per connection). */
export function setProxiedClient(socket: object, client: ProxiedClient): void {
  (socket as Proxied)[PROXIED] = client;
}

/** The client a PROXY protocol header named on `socket`, if any. */
export function proxiedClient(socket: object): ProxiedClient | undefined {
  return (socket as Proxied)[PROXIED];
}

/**
 * The client's address of a connection, the one place every reader goes through (access log,
 * X-Forwarded-For, ip_hash and hash policies, stream sessions): the PROXY header's source when
 * the listener took one, else the peer's address; IPv4-mapped addresses unwrapped.
 */
export function socketClientAddress(socket: { readonly remoteAddress?: string | undefined }): string {
  const p = (socket as Proxied)[PROXIED];
  return p !== undefined ? p.address : clientAddressString(socket.remoteAddress);
}

/**
 * The client connection as a PROXY header sent upstream names it (sendProxy): the client's
 * address and port, and the address and port it connected to (a received header's, if any).
 */
export function proxyClientOf(socket: { readonly remoteAddress?: string | undefined; readonly remotePort?: number | undefined; readonly localAddress?: string | undefined; readonly localPort?: number | undefined }): {
  source: { address: string; port: number }; destination: { address: string; port: number };
} {
  const p = (socket as Proxied)[PROXIED];
  if (p !== undefined) return { source: { address: p.address, port: p.port }, destination: { address: p.localAddress, port: p.localPort } };
  return {
    source: { address: clientAddressString(socket.remoteAddress), port: socket.remotePort ?? 0 },
    destination: { address: clientAddressString(socket.localAddress), port: socket.localPort ?? 0 },
  };
}

/** The client's port, as socketClientAddress. */
export function socketClientPort(socket: { readonly remotePort?: number | undefined }): number {
  const p = (socket as Proxied)[PROXIED];
  return p !== undefined ? p.port : socket.remotePort ?? 0;
}

/** A request's client address when `realIp` decided it (real-ip.ts), and whether its peer is trusted. */
const REQUEST_CLIENT = Symbol('sessionlb.requestClient');
interface RequestClient { [REQUEST_CLIENT]?: { address: string; trusted: boolean } }

/** Records a request's client address (`realIp`, once per request, before anything reads it). */
export function setRequestClient(req: object, address: string, trusted: boolean): void {
  (req as RequestClient)[REQUEST_CLIENT] = { address, trusted };
}

/**
 * The client's address of a request, nginx `$remote_addr`, the one accessor every HTTP reader
 * uses (X-Forwarded-For and X-Real-IP sent upstream, ip_hash and hash policies, sticky `source`,
 * access rules, the access log): the address `realIp` found when its server has one, else the
 * connection's (socketClientAddress). Without `realIp`, nothing is stored per request.
 */
export function requestClientAddress(req: { readonly socket: { readonly remoteAddress?: string | undefined } | null }): string {
  const r = (req as RequestClient)[REQUEST_CLIENT];
  return r !== undefined ? r.address : req.socket === null ? '' : socketClientAddress(req.socket);
}

/** Gives `to` (a request made from `from`: an error page's internal request) the client address `from` has. */
export function copyRequestClient(from: object, to: object): void {
  const r = (from as RequestClient)[REQUEST_CLIENT];
  if (r !== undefined) (to as RequestClient)[REQUEST_CLIENT] = r;
}

/** Whether a request's peer (the connection's address) is in its server's `realIp.from` (false without `realIp`). */
export function requestPeerTrusted(req: object): boolean {
  return (req as RequestClient)[REQUEST_CLIENT]?.trusted ?? false;
}
