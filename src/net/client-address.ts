import { isIP } from 'node:net';

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
