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
