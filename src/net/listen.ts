/**
 * Binds a listener the way nginx does: "[::]:port" with ipv6only=on, so "0.0.0.0:port" and
 * "[::]:port" can both be listed. Resolves once bound; rejects with the bind error (EADDRINUSE, ...).
 */
import net, { type Server } from 'node:net';

export function listenOn(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, ipv6Only: host.includes(':') }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * Binds `host:port` as listenOn would and closes it again: resolves when the address can be
 * listened on now, rejects with the bind error otherwise. (The cluster primary checks a reload's
 * new addresses so; it cannot keep the socket: node:cluster binds the workers' listeners in the
 * primary, and a socket held there makes that bind fail with EADDRINUSE.)
 */
export async function probeListen(host: string, port: number): Promise<void> {
  const server = net.createServer();
  await listenOn(server, host, port);
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** What a failed bind means, in the words sessionlb prints (like nginx's "bind() ... failed"); null when `code` is not one of a bind's own. */
export function bindErrorText(code: string | undefined): string | null {
  switch (code) {
    case 'EADDRINUSE': return 'address already in use';
    case 'EACCES': return 'permission denied';
    case 'EADDRNOTAVAIL': return 'address not available';
    default: return null;
  }
}

/** Waits for `closed` (listeners draining at stop) up to `timeoutMs`: resolves false when it settled in time, true when the time ran out first. */
export async function expiresBefore(closed: Promise<unknown>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), timeoutMs); });
  const expired = await Promise.race([closed.then(() => false), timedOut]);
  clearTimeout(timer);
  return expired;
}
